"""Resharding benchmark (engine only, no Django, no Redis): a stage-6 lab (clients → dns, lb → 2 web → shard
router → 3 shards) at ``--rate`` req/s (100) with 5 % writes; after ``--warmup`` s a fourth shard is
added, and for each placement (modulo, consistent) it reports rows moved, the move's duration
(``resharding`` → ``resharded`` events), rows moved per second, the fraction of rows moved, and
every request that failed from the add until 2 s after the move ended (all failures, whatever the
cause: the move must cause none).

Run: .venv/bin/python -m bench.reshard_bench [--rate 100] [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from core.engine.lab import Lab
from core.engine.spec import parse_topology

BLOCK = 50000 + os.getpid() % 5000


def topology(algorithm: str, rate: float) -> Any:
    shard = {"workers": 4, "service_ms": 2}
    nodes = [
        {"id": "dns", "kind": "dns", "host": 53, "params": {"target": "lb"}},
        {"id": "lb", "kind": "lb", "host": 100, "params": {"algorithm": "least_connections"}},
        {"id": "web-1", "kind": "web", "host": 21, "params": {"workers": 16, "service_ms": 2}},
        {"id": "web-2", "kind": "web", "host": 22, "params": {"workers": 16, "service_ms": 2}},
        {"id": "router", "kind": "router", "host": 40, "params": {"algorithm": algorithm}},
        *({"id": f"db-{i}", "kind": "sqldb", "host": 30 + i, "params": shard} for i in (1, 2, 3)),
        {"id": "c-1", "kind": "client", "params": {"rate": rate / 2, "write_ratio": 0.05}},
        {"id": "c-2", "kind": "client", "params": {"rate": rate / 2, "write_ratio": 0.05}},
    ]
    edges = [["c-1", "dns"], ["c-2", "dns"], ["c-1", "lb"], ["c-2", "lb"], ["lb", "web-1"], ["lb", "web-2"],
             ["web-1", "router"], ["web-2", "router"]]
    edges += [["router", f"db-{i}"] for i in (1, 2, 3)]
    return parse_topology({"nodes": nodes, "edges": edges})


async def one(algorithm: str, rate: float, warmup: float, n: int) -> dict[str, Any]:
    network = f"127.{20 + (BLOCK + n) // 250 % 200}.{(BLOCK + n) % 250}"
    async with Lab(topology(algorithm, rate), network=network, frame_interval=0.25) as lab:
        await asyncio.sleep(warmup)
        lab.frame()  # start a fresh window
        errors, requests = 0, 0
        began = time.monotonic()
        await lab.command({"action": "add", "like": "db-3"})
        events: dict[str, float] = {}
        ended_at = None
        while time.monotonic() - began < 120:
            await asyncio.sleep(0.25)
            frame = lab.frame()
            errors += round(frame["totals"].get("err_rps", 0) * 0.25)
            requests += round(frame["totals"].get("rps", 0) * 0.25)
            for e in frame.get("events", []):
                events.setdefault(e["kind"], e["t"])
            if "resharded" in events and ended_at is None:
                ended_at = time.monotonic()
            if ended_at is not None and time.monotonic() - ended_at > 2:
                break
        table = lab.frame()["sharding"]
        took = events["resharded"] - events["resharding"] if "resharded" in events else float("nan")
        return {"algorithm": algorithm, "moved_rows": table["moved_rows"], "moved_fraction": table["moved_fraction"],
                "rows": table["rows"], "move_s": round(took, 2), "rows_per_s": round(table["moved_rows"] / took),
                "requests": requests, "failed": errors}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = []
    n = 0
    for algorithm in ("modulo", "consistent"):
        for _ in range(args.runs):
            n += 1
            r = await one(algorithm, args.rate, args.warmup, n)
            print(json.dumps(r))
            results.append(r)
    for algorithm in ("modulo", "consistent"):
        rs = [r for r in results if r["algorithm"] == algorithm]
        med = {k: statistics.median(r[k] for r in rs) for k in ("moved_fraction", "moved_rows", "move_s", "rows_per_s")}
        print(f"{algorithm}: moved {med['moved_fraction']:.3f} of the rows ({med['moved_rows']:.0f}) in"
              f" {med['move_s']:.2f} s = {med['rows_per_s']:.0f} rows/s; failed requests"
              f" {sum(r['failed'] for r in rs)} of {sum(r['requests'] for r in rs)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
