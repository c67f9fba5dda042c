"""Mass stop through the real stack: N labs of one lesson, each watched by its own WebSocket client
(its own Django session) with traffic on, all stopped at the same moment.

For each lab: stop sent → the engine's "stopped" status received (it lists its nodes, and is sent
once every node has stopped or been forced). A lab whose engine status does not arrive within
--hang-s is a hang. Then what is left: listeners on the labs' networks (any process), children
of the worker's pool processes, and node directories of the pool processes.

Run: .venv/bin/python -m bench.stop_bench [--labs 30] [--lesson database-replication] [--rate 20]
(starts its own redis-server, a worker with --labs slots, and daphne)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.stack_bench import connect, is_status, lab_start_running, pct, redis_server
from core.engine import scratch
from tests.stack import run_stack


async def one_lab(base: str, lesson: str, rate: float, started: asyncio.Barrier,
                  go: asyncio.Event, hang_s: float) -> dict[str, Any]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        client, _ = await connect(http, base, lesson)
        try:
            info = await lab_start_running(client)
            lab = info["lab"]
            await client.send({"action": "traffic", "rate": rate})
            await started.wait()
            await go.wait()
            client.drain()
            t0 = await client.send({"action": "stop"})
            try:
                got = await client.until(lambda m: is_status("stopped", lab)(m) and bool(m.get("nodes")),
                                         timeout=hang_s)
                return {"lab": lab, "stop_s": got.mono - t0}
            except TimeoutError:
                return {"lab": lab, "stop_s": None}
        finally:
            if client.reader:
                client.reader.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await client.ws.close()


def leftovers(pool: list[psutil.Process]) -> dict[str, int]:
    """What the pool processes still hold once every lab was told to stop: listening or bound
    sockets (any address: a pool process between labs listens on nothing), children, node dirs."""
    pids = {p.pid for p in pool}
    listeners = sum(
        1
        for c in psutil.net_connections(kind="inet")
        if c.pid in pids and (c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr))
    )
    children = sum(len(p.children(recursive=True)) for p in pool if p.is_running())
    dirs = sum(len(list(Path(tempfile.gettempdir()).glob(f"{scratch.PREFIX}{p.pid}-*"))) for p in pool)
    return {"listeners": listeners, "children": children, "dirs": dirs}


async def run(base: str, args: argparse.Namespace, pool: list[psutil.Process]) -> dict[str, Any]:
    started = asyncio.Barrier(args.labs + 1)
    go = asyncio.Event()
    tasks = [asyncio.create_task(one_lab(base, args.lesson, args.rate, started, go, args.hang_s))
             for _ in range(args.labs)]
    t_start = time.monotonic()
    async with asyncio.timeout(args.labs * 10 + 120):
        await started.wait()
    all_up_s = time.monotonic() - t_start
    await asyncio.sleep(args.warmup)
    go.set()
    results = await asyncio.gather(*tasks)
    stops = [r["stop_s"] for r in results if r["stop_s"] is not None]
    await asyncio.sleep(1.0)  # the engine publishes "stopped" just before its last close
    left = leftovers(pool)
    return {
        "labs": args.labs, "lesson": args.lesson, "rate_per_lab": args.rate,
        "all_running_s": round(all_up_s, 1),
        "hangs": sum(1 for r in results if r["stop_s"] is None),
        "stop_s": {"p50": round(pct(stops, 0.5), 2), "p95": round(pct(stops, 0.95), 2),
                   "max": round(max(stops), 2) if stops else None},
        "leftover": left,
        "python": sys.version.split()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labs", type=int, default=30)
    ap.add_argument("--lesson", default="database-replication")
    ap.add_argument("--rate", type=float, default=20.0, help="req/s per lab")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of traffic before the stop")
    ap.add_argument("--hang-s", type=float, default=60.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--log", type=Path, default=None, help="a directory to keep the worker's and daphne's logs in")
    args = ap.parse_args()
    with redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="stop-bench-") as tmp:
        try:
            with run_stack(Path(tmp), redis_url, web=True, slots=args.labs, idle_seconds=600) as stack:
                pool = stack.pool()
                print(f"stack up: daphne {stack.url}, {len(pool)} pool processes", flush=True)
                summary = asyncio.run(run(stack.url, args, pool))
        finally:  # run_stack logs the worker and daphne beside its database
            worker_log = (Path(tmp) / "worker.log").read_text(errors="replace")
            if args.log:
                args.log.mkdir(parents=True, exist_ok=True)
                for name in ("worker.log", "daphne.log"):
                    (args.log / name).write_text((Path(tmp) / name).read_text(errors="replace"))
            forced = [line for line in worker_log.splitlines() if "forcing" in line or "gave up" in line]
    summary["log_lines_bound_enforced"] = len(forced)
    print(json.dumps(summary, indent=2))
    for line in forced[:10]:
        print("  log:", line)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
