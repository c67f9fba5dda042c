"""Stage 8 (CDN), engine only: each region's latency with and without the CDN.

The stage-8 lesson's own lab (an origin in eu, an edge and a browser in each of eu, us and asia;
modelled round trips eu-us 90, eu-asia 180, asia-us 160 ms). For each browser (one per region):
its pages' p95 and its assets' p95 (`static_p95_ms`), first with the static name pointing at the
origin, then with it a CNAME to the CDN (`cdn dns on`) once the edges are warm; plus the edges'
hit ratio and the modelled cost.

Run: .venv/bin/python -m bench.cdn_bench [--runs 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path
from typing import Any

import yaml

from core.engine import keys
from core.engine.lab import Lab
from core.engine.spec import parse_topology

LESSON = Path(__file__).resolve().parent.parent / "lessons" / "content" / "08-cdn.md"
BROWSERS = ("browser-eu", "browser-us", "browser-asia")


async def measure(lab: Lab, seconds: float) -> dict[str, dict[str, float]]:
    """Median over the period of each browser's per-second page and asset p95."""
    lab.frame()
    rows: dict[str, dict[str, list[float]]] = {b: {"page": [], "static": []} for b in BROWSERS}
    last: dict[str, Any] = {}
    for _ in range(int(seconds * 2)):
        await asyncio.sleep(0.5)
        last = lab.frame()
        for b in BROWSERS:
            n = last["nodes"][b]
            if n.get("p95_ms") is not None:
                rows[b]["page"].append(n["p95_ms"])
            if n.get("static_p95_ms") is not None:
                rows[b]["static"].append(n["static_p95_ms"])
    out = {b: {k: statistics.median(v) if v else float("nan") for k, v in r.items()} for b, r in rows.items()}
    out["cdn"] = dict(last.get("cdn") or {})
    return out


async def one_run(block: int, seconds: float) -> tuple[dict, dict]:
    front = LESSON.read_text().split("---", 2)[1]
    async with Lab(parse_topology(yaml.safe_load(front)["topology"]), network=keys.network_for(block)) as lab:
        await asyncio.sleep(3)
        without = await measure(lab, seconds)
        await lab.command({"action": "cdn", "node": "dns", "value": "on"})
        await asyncio.sleep(8)  # the cached answers expire (TTL 5 s) and each edge fills
        with_cdn = await measure(lab, seconds)
    return without, with_cdn


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    runs = [await one_run(46000 + i, args.seconds) for i in range(args.runs)]

    def med(which: int, browser: str, key: str) -> float:
        return statistics.median(r[which][browser][key] for r in runs)

    print(f"{args.runs} runs, medians of per-second p95s over {args.seconds:g} s each\n")
    print("| region (browser) | page p95 without | page p95 with CDN | assets p95 without | assets p95 with CDN |")
    print("|---|---|---|---|---|")
    for b in BROWSERS:
        print(f"| {b.split('-')[1]} | {med(0, b, 'page'):.0f} ms | {med(1, b, 'page'):.0f} ms "
              f"| {med(0, b, 'static'):.0f} ms | {med(1, b, 'static'):.0f} ms |")
    cdn = runs[-1][1]["cdn"]
    if cdn:
        print(f"\nlast run, with the CDN: edges' hit ratio {cdn.get('hit_ratio')}, modelled cost"
              f" ${cdn.get('cost_usd')} (edges ${cdn.get('edge_cost_usd')}, origin ${cdn.get('origin_cost_usd')})")


if __name__ == "__main__":
    asyncio.run(main())
