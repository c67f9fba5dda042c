"""Engine benchmarks (no Django, no Redis): lab start time, sustained req/s with telemetry on and
off, and memory of one lab. Run: .venv/bin/python -m bench.engine_bench
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time

import psutil

import core.engine.nodes.client
import core.engine.nodes.dns
import core.engine.nodes.web  # noqa: F401
from core.engine import keys
from core.engine.lab import Lab
from core.engine.spec import parse_topology

BLOCK = 50000 + os.getpid() % 5000


def topology(rate: float = 0.0, workers: int = 4, service_ms: float = 25.0):
    return parse_topology(
        {
            "nodes": [
                {"id": "dns", "kind": "dns", "host": 53, "params": {"ttl": 5}},
                {
                    "id": "web",
                    "kind": "web",
                    "host": 80,
                    "params": {"workers": workers, "service_ms": service_ms, "queue_limit": 10000},
                },
                {"id": "browser", "kind": "client", "params": {"flavor": "web", "rate": rate}},
                {"id": "phone", "kind": "client", "params": {"flavor": "mobile", "rate": rate}},
            ],
            "edges": [["browser", "dns"], ["phone", "dns"], ["browser", "web"], ["phone", "web"]],
        }
    )


async def lab_start(runs: int = 20) -> dict[str, float]:
    times = []
    for i in range(runs):
        lab = Lab(topology(), network=keys.network_for(BLOCK + i))
        t0 = time.perf_counter()
        await lab.start()
        times.append((time.perf_counter() - t0) * 1000)
        await lab.stop()
    return {"median_ms": statistics.median(times), "max_ms": max(times)}


async def sustained(telemetry: bool, seconds: float = 5.0) -> float:
    """Offer far more than the server can take (no modelled CPU) and count answered requests."""
    lab = Lab(topology(rate=2000, workers=64, service_ms=0), network=keys.network_for(BLOCK + 100))
    answered = 0
    record = lab.telemetry.record  # where every node's finished requests go (NodeContext.record)

    def count(trace):
        nonlocal answered
        answered += trace.ok
        if telemetry:
            record(trace)

    lab.telemetry.record = count  # type: ignore[method-assign]
    async with lab:
        await asyncio.sleep(1.0)  # warm up
        answered = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            await asyncio.sleep(0.25)
            if telemetry:
                lab.frame()
        return answered / (time.perf_counter() - t0)


async def memory() -> dict[str, float]:
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    lab = Lab(topology(rate=20), network=keys.network_for(BLOCK + 200))
    async with lab:
        await asyncio.sleep(3)
        gc.collect()
        during = proc.memory_info().rss
    return {"process_mb": during / 2**20, "lab_mb": (during - before) / 2**20}


async def main() -> None:
    # Memory first, while the process is fresh (freed memory is not always returned to the OS).
    print("memory of one stage-1 lab at 40 req/s:", await memory())
    print("lab start (Lab.start → every node serving), 20 runs:", await lab_start())
    # Alternate on/off/off/on so neither mode always runs first (warm-up and drift cancel out).
    runs = [await sustained(mode) for mode in (True, False, False, True)]
    on, off = (runs[0] + runs[3]) / 2, (runs[1] + runs[2]) / 2
    print(f"sustained answered req/s, one process: telemetry on {on:.0f}, off {off:.0f}, ratio {on / off:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
