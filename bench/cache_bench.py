"""Cache benchmark (engine only, no Django, no Redis beyond the lab's own cache): the highest req/s a
stage-7 lab sustains with its cache (about 90 % hit ratio) and without it, and their ratio.

The lab: two clients (Zipf 1 over ``--users`` users, 5 % writes) → dns, lb → two web servers with
ample modelled CPU → a real redis-server cache (TTL 300 s) and one SQL database sized at 2 connection
slots × 10 ms (about 200 queries/s, about 100 uncached pages/s). The rate steps up through
``--rates``; at each step the lab runs ``--settle`` s, then ``--measure`` s are averaged. A rate is
sustained when the answered rate (median of the seconds) is at least 90 % of it with under 1 % errors and p95 under 1 s.
Without the cache the database is the ceiling; with it, what is left: the web tier, or this
machine's own event loop (``engine.lag_ms`` is reported, so a ceiling set by the machine shows).

Run: .venv/bin/python -m bench.cache_bench [--rates 50,100,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
from typing import Any

from core.engine.lab import Lab
from core.engine.spec import parse_topology

BLOCK = 45000 + os.getpid() % 5000


def topology(cache: bool, users: int) -> Any:
    nodes = [
        {"id": "dns", "kind": "dns", "host": 53, "params": {"target": "lb"}},
        {"id": "lb", "kind": "lb", "host": 100, "params": {"algorithm": "least_connections"}},
        {"id": "web-1", "kind": "web", "host": 21, "params": {"workers": 64, "service_ms": 1, "queue_limit": 512}},
        {"id": "web-2", "kind": "web", "host": 22, "params": {"workers": 64, "service_ms": 1, "queue_limit": 512}},
        {"id": "db", "kind": "sqldb", "host": 31, "params": {"workers": 2, "service_ms": 10, "queue_limit": 256}},
        *({"id": f"c-{i}", "kind": "client", "params": {"rate": 10, "write_ratio": 0.05, "users": users}}
          for i in (1, 2)),
    ]
    edges = [["c-1", "dns"], ["c-2", "dns"], ["c-1", "lb"], ["c-2", "lb"], ["lb", "web-1"], ["lb", "web-2"],
             ["web-1", "db"], ["web-2", "db"]]
    if cache:
        nodes.append({"id": "cache", "kind": "cache", "host": 61, "params": {"ttl_s": 300}})
        edges += [["web-1", "cache"], ["web-2", "cache"]]
    return parse_topology({"nodes": nodes, "edges": edges})


async def ramp(cache: bool, rates: list[float], settle: float, measure: float, users: int, n: int) -> dict[str, Any]:
    network = f"127.{20 + (BLOCK + n) // 250 % 200}.{(BLOCK + n) % 250}"
    steps = []
    async with Lab(topology(cache, users), network=network) as lab:
        for rate in rates:
            await lab.command({"action": "traffic", "rate": rate})
            await asyncio.sleep(settle)
            frames = []
            for _ in range(int(measure * 4)):
                await asyncio.sleep(0.25)
                frames.append(lab.frame())
            t = [f["totals"] for f in frames]
            # Medians: Poisson arrivals make any one second's rate noisy.
            ok = statistics.median(x.get("ok_rps") or 0 for x in t)
            err = statistics.median(x.get("err_rps") or 0 for x in t)
            p95 = statistics.median(x.get("p95_ms") or 0 for x in t)
            step = {"rate": rate, "ok_rps": round(ok, 1), "err_rps": round(err, 2), "p95_ms": round(p95, 1),
                    "db_rps": round(statistics.mean(f["nodes"]["db"].get("rps") or 0 for f in frames), 1),
                    "db_util": round(statistics.mean(f["nodes"]["db"].get("util") or 0 for f in frames), 2),
                    "lag_ms": round(max(f["engine"]["lag_ms"] for f in frames), 1)}
            if cache:
                step["hit_ratio"] = frames[-1]["nodes"]["cache"].get("hit_ratio")
            step["sustained"] = ok >= 0.9 * rate and err < 0.01 * rate and p95 < 1000
            print(json.dumps({"cache": cache, **step}), flush=True)
            steps.append(step)
            if not step["sustained"]:
                break
    best = max((s["rate"] for s in steps if s["sustained"]), default=0)
    return {"cache": cache, "sustained_rps": best, "steps": steps}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="25,50,75,100,125,150,200,250,300,400,500,600,800,1000")
    parser.add_argument("--settle", type=float, default=6.0)
    parser.add_argument("--measure", type=float, default=8.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    without = await ramp(False, rates, args.settle, args.measure, args.users, 1)
    with_cache = await ramp(True, rates, args.settle, args.measure, args.users, 2)
    ratio = with_cache["sustained_rps"] / without["sustained_rps"] if without["sustained_rps"] else float("nan")
    print(f"without the cache: {without['sustained_rps']:.0f} req/s sustained; with it: "
          f"{with_cache['sustained_rps']:.0f} req/s (hit ratio {with_cache['steps'][-1].get('hit_ratio')}); "
          f"ratio {ratio:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"without": without, "with": with_cache, "ratio": ratio}, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
