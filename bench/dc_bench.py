"""Stage 10 (several data centres), engine only: how long a region's users see a dead centre, how
long the lab takes to start, and how much traffic one lab carries.

- failover: N runs of the lesson's lab at its traffic; each takes the eu centre down and reads
  users-eu's ``failover_s`` (first failed request to the first good one after it), beside the
  bound the DNS settings give: the health checks' detection time (interval × fall) plus the TTL.
- start: Lab.start() of the lesson's topology (every node serving), per run.
- throughput: the lab at rising total traffic; per step the req/s answered and failed.

Run: .venv/bin/python -m bench.dc_bench [--runs 10] [--ttl 5 1] [--rates 100 200 400 800]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from core.engine import keys
from core.engine.lab import Lab
from core.engine.spec import Topology, parse_topology

LESSON = Path(__file__).resolve().parent.parent / "lessons" / "content" / "10-multiple-data-centers.md"


def lesson_topology(ttl: int | None = None) -> Topology:
    front = LESSON.read_text().split("---", 2)[1]
    topo = parse_topology(yaml.safe_load(front)["topology"])
    if ttl is None:
        return topo
    nodes = tuple(replace(n, params={**n.params, "ttl": ttl}) if n.kind == "dns" else n for n in topo.nodes)
    return replace(topo, nodes=nodes)


async def frames_until(lab: Lab, cond, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        frame = lab.frame()
        if cond(frame):
            return frame
    return None


async def one_failover(block: int, ttl: int) -> dict[str, Any]:
    topo = lesson_topology(ttl)
    dns = next(n for n in topo.nodes if n.kind == "dns").params
    async with Lab(topo, network=keys.network_for(block)) as lab:
        await frames_until(lab, lambda f: f["nodes"]["users-eu"]["rps"] > 5, 10)
        # The outage at a random moment of the users' cached answer: otherwise every run would
        # find it equally old, and measure one point of the range, not the range.
        await asyncio.sleep(2 + random.uniform(0, ttl + 2))
        lab.frame()
        began = time.monotonic()
        await lab.command({"action": "outage", "region": "eu"})
        detected = None

        def seen(frame: dict[str, Any]) -> bool:
            nonlocal detected
            if detected is None and any(e["kind"] == "dns_target_down" for e in frame["events"]):
                detected = time.monotonic() - began
            return frame["nodes"]["users-eu"].get("failover_s") is not None

        frame = await frames_until(lab, seen, ttl + 20)
        return {
            "ttl": ttl,
            "detect_bound": dns["health_interval_s"] * dns["fall"],
            "detected_s": detected,
            "failover_s": frame["nodes"]["users-eu"]["failover_s"] if frame else None,
        }


async def start_and_throughput(block: int, rates: list[float]) -> dict[str, Any]:
    lab = Lab(lesson_topology(), network=keys.network_for(block))
    began = time.monotonic()
    await lab.start()
    start_s = time.monotonic() - began
    steps = []
    try:
        for rate in rates:
            await lab.command({"action": "traffic", "rate": rate})
            await asyncio.sleep(4)
            lab.frame()
            samples = []
            for _ in range(8):
                await asyncio.sleep(0.5)
                samples.append(lab.frame()["totals"])
            steps.append({"offered": rate, "ok_rps": statistics.median(s["ok_rps"] for s in samples),
                          "err_rps": statistics.median(s["err_rps"] for s in samples),
                          "p95_ms": statistics.median(s["p95_ms"] or 0 for s in samples)})
    finally:
        await lab.stop()
    return {"start_s": start_s, "nodes": len(lab.topology.nodes), "steps": steps}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--ttl", type=int, nargs="+", default=[5, 1])
    ap.add_argument("--rates", type=float, nargs="+", default=[100, 200, 400, 800])
    args = ap.parse_args()
    block = 45000
    print("## failover: eu taken down, users-eu's outage (s)\n")
    print("| TTL | runs | detection bound | DNS saw it after (median) | failover_s min / median / max"
          " | bound: detection + TTL |")
    print("|---|---|---|---|---|---|")
    for ttl in args.ttl:
        runs = []
        for _ in range(args.runs):
            block += 1
            runs.append(await one_failover(block, ttl))
        got = sorted(r["failover_s"] for r in runs if r["failover_s"] is not None)
        seen = [r["detected_s"] for r in runs if r["detected_s"] is not None]
        bound = runs[0]["detect_bound"]
        missing = args.runs - len(got)
        print(f"| {ttl} s | {args.runs}{f' ({missing} never recovered)' if missing else ''} | {bound:g} s "
              f"| {statistics.median(seen):.2f} s | {got[0]:.2f} / {statistics.median(got):.2f} / {got[-1]:.2f} "
              f"| {bound + ttl:g} s |")
        print(f"<!-- runs: {', '.join(f'{v:.2f}' for v in got)} -->")
    print("\n## start and throughput (one lab of the lesson's topology)\n")
    results = []
    for i in range(3):  # the first run also ramps the traffic
        block += 1
        results.append(await start_and_throughput(block, args.rates if i == 0 else []))
    starts = [r["start_s"] for r in results]
    steps = results[0]["steps"]
    print(f"start (Lab.start, {results[0]['nodes']} nodes), 3 runs: "
          f"{', '.join(f'{s * 1000:.0f} ms' for s in starts)}\n")
    print("| offered req/s | answered req/s | failed req/s | p95 ms |")
    print("|---|---|---|---|")
    for s in steps:
        print(f"| {s['offered']:g} | {s['ok_rps']:.1f} | {s['err_rps']:.1f} | {s['p95_ms']:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
