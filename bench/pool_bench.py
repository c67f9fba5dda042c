"""Hot pool: a student's "Start lab" -> lab running, served from a workshop's pool vs started cold.

Each run is a new student: the stage page (a session), the lab socket, hello, then {"action":
"start"}; timed to the lab's "running" status and to its first frame at the client. Cold: a plain
lab_start (queue, worker slot, boot). Hot: the socket's pool is set (the test seam
tests.visualizer.pool_asgi, as the workshop pages set it) and a pool of --size labs waits; before
each hot run the pool is back to full, so every run is a claim. Each lab is stopped after its run.

Run: .venv/bin/python -m bench.pool_bench [--runs 10] [--size 2] [--slug single-server]
(starts its own redis-server, worker and daphne, as stack_bench does)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.quiet import stack_output
from bench.stack_bench import pct, redis_server
from tests.stack import CONTENT, Stack, run_stack, wait_for

POOL = "bench-pool"


async def one_start(base: str, slug: str, pool: str | None) -> dict[str, float]:
    t_join = time.perf_counter()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/stage/{slug}/") as resp:
            assert resp.status == 200, resp.status
        query = f"?pool={pool}" if pool else ""
        ws = await http.ws_connect(f"{base.replace('http', 'ws')}/ws/lab/{slug}/{query}", headers={"Origin": base},
                                   max_msg_size=0)
        try:
            assert json.loads((await ws.receive(timeout=10)).data)["type"] == "hello"
            t0 = time.perf_counter()
            await ws.send_str(json.dumps({"action": "start"}))
            out = {"join_ms": (t0 - t_join) * 1000}
            lab = None
            while "frame_ms" not in out:
                m = json.loads((await ws.receive(timeout=60)).data)
                at = (time.perf_counter() - t0) * 1000
                if m["type"] == "error" or m.get("state") == "failed":
                    raise RuntimeError(m)
                lab = lab or m.get("lab")
                if m["type"] == "status" and m["state"] == "running":
                    out.setdefault("running_ms", at)
                elif m["type"] == "frame" and "running_ms" in out:
                    out["frame_ms"] = at
            await ws.send_str(json.dumps({"action": "stop"}))
            while True:
                m = json.loads((await ws.receive(timeout=15)).data)
                if m["type"] == "status" and m["state"] == "stopped" and m["lab"] == lab:
                    return out
        finally:
            await ws.close()


def pool_running(stack: Stack) -> int:
    with sqlite3.connect(stack.db_path) as db:
        ids = [r[0] for r in db.execute(
            "select id from visualizer_lab where pool = ? and state in ('queued', 'starting', 'running')", (POOL,))]
    dashed = (f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in ids)
    return sum(stack.status(i).get("state") == "running" for i in dashed)


def run(stack: Stack, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {"cold": [], "hot": []}
    for _ in range(args.runs):
        results["cold"].append(asyncio.run(asyncio.wait_for(one_start(stack.url, args.slug, None), 120)))
    stack.shell("from lessons.models import Lesson\nfrom visualizer.pool import pool_fill\n"
                f"pool_fill(pool='{POOL}', lesson=Lesson.objects.get(slug='{args.slug}'), size={args.size})")
    for _ in range(args.runs):
        wait_for(lambda: pool_running(stack) >= args.size, 120, "the pool to be full")
        results["hot"].append(asyncio.run(asyncio.wait_for(one_start(stack.url, args.slug, POOL), 120)))
    stack.shell(f"from visualizer.pool import pool_drain\npool_drain(pool='{POOL}')")
    return results


def report(results: dict[str, list[dict[str, float]]]) -> None:
    print(f"\nstart -> lab running, {len(results['cold'])} new students each, ms")
    print(f"  {'':22} {'p50':>8} {'p95':>8} {'min':>8} {'max':>8}")
    for mode in ("cold", "hot"):
        for key, label in (("running_ms", "start -> running"), ("frame_ms", "start -> first frame"),
                           ("join_ms", "join (page + socket)")):
            v = [r[key] for r in results[mode]]
            print(f"  {mode + ': ' + label:22} {statistics.median(v):8.1f} {pct(v, 0.95):8.1f}"
                  f" {min(v):8.1f} {max(v):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--size", type=int, default=2, help="the pool's size")
    parser.add_argument("--slug", default="single-server")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    t0 = time.monotonic()
    lesson = CONTENT / "01-single-server.md" if args.slug == "single-server" else None  # else all
    with (redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="pool-bench-") as tmp,
          stack_output(Path(tmp) / "stack.log"),
          run_stack(Path(tmp), redis_url, lessons=[lesson] if lesson else None, web=True,
                    slots=args.size + 1, asgi="tests.visualizer.pool_asgi:application") as stack):
        results = run(stack, args)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\ntotal {time.monotonic() - t0:.0f}s (stack start and stop included)")


if __name__ == "__main__":
    main()
