"""A room of N participants on one machine: the full stack (daphne, core.workers, Redis) with N real
browser-like clients, each in its own session, joining over a few seconds and each starting a
stage-1 lab at its default traffic, then all running together.

Per N (a fresh stack each, LAB_PROCESSES workers of ceil(N / LAB_PROCESSES) slots, so every lab
fits): labs running; Start -> running p50/p95 (the click to the "running" status, as stack_bench);
during the --seconds window: frames/s per lab (the slowest lab's), event -> browser p50/p95
(arrival of a frame's request sample - the request's completion, as stack_bench) and frame lag
p95 (arrival - frame ``t``), stage page load p95 (each participant GETs its stage page
--page-loads times in the window), and RSS (peak) and CPU of the workers' process tree and of the
whole product tree (workers + daphne + redis-server), by psutil. The bench's own clients share the
machine: their CPU is shown too.

Run: .venv/bin/python -m bench.room_bench --participants 10 25 50 75   (starts its own stack)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.quiet import stack_output
from bench.stack_bench import Client, connect, lab_start_running, lab_stop_stopped, pct, redis_server
from tests.stack import Stack, run_stack

SLUG = "single-server"
HEADER = ("| N | processes x slots | labs running | start p50 / p95 ms | frames/s per lab min | "
          "event->browser p50 / p95 ms | frame lag p95 ms | page load p95 ms | "
          "workers RSS MB idle / with labs (per lab) | all RSS MB | workers CPU % | all CPU % | bench CPU % |")


@dataclass
class Participant:
    index: int
    start_ms: float | None = None
    error: str = ""
    lab: str = ""
    frames: int = 0
    events_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    page_ms: list[float] = field(default_factory=list)


def product_tree(stack: Stack, redis_pid: int | None) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(the workers' tree: core.workers, its workers and their redis-servers; everything: + daphne, Redis)."""
    workers: list[psutil.Process] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        master = psutil.Process(stack.worker.pid)
        workers = [master, *master.children(recursive=True)]
    rest = []
    for pid in (stack.web.pid if stack.web else None, redis_pid):
        if pid is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                rest.append(psutil.Process(pid))
    return workers, workers + rest


def rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def cpu_s(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def cpu_pct(before: dict[int, float], after: dict[int, float], seconds: float) -> float:
    """% of one core (200 = both cores of this machine) over the window, processes alive throughout."""
    return sum(after[pid] - before[pid] for pid in before.keys() & after.keys()) / seconds * 100


async def participant(p: Participant, base: str, join_at: float, window: dict[str, float],
                      running: asyncio.Event, go: asyncio.Event, done: asyncio.Event, page_loads: int) -> None:
    await asyncio.sleep(max(0.0, join_at - time.monotonic()))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        client: Client | None = None
        try:
            client, _ = await connect(http, base, SLUG)
            started = await lab_start_running(client)
            p.start_ms, p.lab = started["click_running_ms"], started["lab"]
        except Exception as exc:
            p.error = f"start: {exc!r}"
        finally:
            running.set()  # counted by the caller: this participant has an outcome
        if p.error or client is None:
            return
        try:
            await go.wait()
            client.drain()
            loads = [window["start"] + (k + random.random()) * window["seconds"] / page_loads
                     for k in range(page_loads)]
            pages = asyncio.create_task(page_load_times(http, base, loads, p))
            end = window["start"] + window["seconds"]
            while (left := end - time.time()) > 0:
                try:
                    got = await client.next(timeout=left)
                except TimeoutError:
                    break
                m = got.msg
                if m.get("type") != "frame" or m.get("lab") != p.lab or m["t"] < window["start"]:
                    continue
                p.frames += 1
                p.lag_ms.append((got.at - m["t"]) * 1000)
                p.events_ms += [(got.at - (s["t"] + s["ms"] / 1000)) * 1000 for s in m.get("samples", [])]
            await pages
            await done.wait()
        except Exception as exc:
            p.error = p.error or f"run: {exc!r}"
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lab_stop_stopped(client, p.lab), 20)
            if client.reader:
                client.reader.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.ws.close(), 5)


async def page_load_times(http: aiohttp.ClientSession, base: str, at: list[float], p: Participant) -> None:
    for when in at:  # wall-clock instants within the window
        await asyncio.sleep(max(0.0, when - time.time()))
        t0 = time.perf_counter()
        async with http.get(f"{base}/stage/{SLUG}/") as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"stage page: HTTP {resp.status}")
        p.page_ms.append((time.perf_counter() - t0) * 1000)


async def room(stack: Stack, redis_pid: int, n: int, args: argparse.Namespace) -> dict[str, Any]:
    workers, everything = product_tree(stack, redis_pid)
    idle_workers_mb = rss_mb(workers)
    people = [Participant(i) for i in range(n)]
    window = {"start": 0.0, "seconds": args.seconds}
    outcomes = [asyncio.Event() for _ in people]
    go, done = asyncio.Event(), asyncio.Event()
    t0 = time.monotonic()
    joins = sorted(t0 + random.uniform(0, args.join_over) for _ in people)
    tasks = [asyncio.create_task(participant(p, stack.url, at, window, ev, go, done, args.page_loads))
             for p, at, ev in zip(people, joins, outcomes, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in outcomes)), args.join_over + 120)
    await asyncio.sleep(args.settle)
    workers, everything = product_tree(stack, redis_pid)
    bench = psutil.Process()
    cpu0, bench0 = cpu_s(everything), cpu_s([bench])
    window["start"] = time.time()
    go.set()
    peak_workers = peak_all = 0.0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        workers, everything = product_tree(stack, redis_pid)
        peak_workers, peak_all = max(peak_workers, rss_mb(workers)), max(peak_all, rss_mb(everything))
        await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
    cpu1, bench1 = cpu_s(everything), cpu_s([bench])
    worker_pids = {p.pid for p in workers}
    done.set()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
    ok = [p for p in people if not p.error]
    starts = [p.start_ms for p in people if p.start_ms is not None]
    events = [x for p in ok for x in p.events_ms]
    return {
        "n": n, "running": sum(p.start_ms is not None for p in people), "errors": [p.error for p in people if p.error],
        "start_p50": statistics.median(starts) if starts else math.nan, "start_p95": pct(starts, 0.95),
        "fps_min": min((p.frames / args.seconds for p in ok), default=math.nan),
        "event_p50": pct(events, 0.5), "event_p95": pct(events, 0.95),
        "lag_p95": pct([x for p in ok for x in p.lag_ms], 0.95),
        "page_p95": pct([x for p in ok for x in p.page_ms], 0.95),
        "workers_mb": peak_workers, "idle_workers_mb": idle_workers_mb, "all_mb": peak_all,
        "workers_cpu": cpu_pct({k: v for k, v in cpu0.items() if k in worker_pids}, cpu1, args.seconds),
        "all_cpu": cpu_pct(cpu0, cpu1, args.seconds), "bench_cpu": cpu_pct(bench0, bench1, args.seconds),
    }


def row(r: dict[str, Any], processes: int, slots: int) -> str:
    cells = [
        r["n"], f"{processes} x {slots}", f"{r['running']}/{r['n']}", f"{r['start_p50']:.0f} / {r['start_p95']:.0f}",
        f"{r['fps_min']:.2f}", f"{r['event_p50']:.0f} / {r['event_p95']:.0f}", f"{r['lag_p95']:.0f}",
        f"{r['page_p95']:.0f}",
        f"{r['idle_workers_mb']:.0f} / {r['workers_mb']:.0f} ({r['workers_mb'] / r['n']:.1f})", f"{r['all_mb']:.0f}",
        f"{r['workers_cpu']:.0f}", f"{r['all_cpu']:.0f}", f"{r['bench_cpu']:.0f}",
    ]
    return "| " + " | ".join(map(str, cells)) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[10, 25, 50, 75])
    parser.add_argument("--seconds", type=float, default=30.0, help="the measured window, all labs running")
    parser.add_argument("--join-over", type=float, default=5.0, help="participants join within this many s")
    parser.add_argument("--settle", type=float, default=2.0, help="wait after the last lab runs")
    parser.add_argument("--page-loads", type=int, default=3, help="stage page GETs per participant in the window")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="LAB_PROCESSES")
    parser.add_argument("--verbose", action="store_true", help="show the workers' and daphne's output")
    args = parser.parse_args()
    # Every participant comes from 127.0.0.1: the per-address cap would refuse the eleventh.
    os.environ["LABS_PER_ADDRESS"] = "0"
    print(f"room_bench: {args.seconds:g} s window, joins over {args.join_over:g} s, "
          f"{args.page_loads} page loads each, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print(HEADER)
    print("|" + "---|" * HEADER.count(" |"))
    for n in args.participants:
        slots = math.ceil(n / args.processes)
        with redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="room-bench-") as tmp:
            redis_pid = next(p.pid for p in psutil.Process().children()
                             if p.name().startswith("redis-server"))
            with stack_output(Path(tmp) / "stack.log", verbose=args.verbose) as table:
                with run_stack(Path(tmp), redis_url, web=True, slots=slots, processes=args.processes,
                               idle_seconds=3600) as stack:
                    r = asyncio.run(room(stack, redis_pid, n, args))
                print(row(r, args.processes, slots), file=table)
                for error in sorted(set(r["errors"]))[:5]:
                    print(f"  ({r['errors'].count(error)} participant(s)) {error}", file=table)


if __name__ == "__main__":
    main()
