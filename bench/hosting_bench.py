"""How one process should host many labs: a thread per lab, each with its own asyncio.run, or one
event loop thread that hosts them all (the choice behind visualizer/hosting.py).

A child process hosts N stage-1 labs (``core.engine.runner.run_lab``, the lesson's live checks, its
default traffic) in one of the two ways and reports each lab's Start -> running time; the parent
subscribes to every lab's out channel on a real redis-server and measures frames/s per lab, frame
lag (receipt - frame ``t``), and the child's RSS and CPU over --seconds (psutil).

Run: .venv/bin/python -m bench.hosting_bench [--labs 10 50] [--modes threads loop] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.stack_bench import pct, redis_server

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "content" / "01-single-server.md"
BLOCK = 30000 + os.getpid() % 5000


def lesson() -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    import django

    django.setup()
    from lessons.loader import lessons_check
    from visualizer.services import lesson_checks, lesson_measures

    [data], errors = lessons_check([LESSON])
    assert not errors, errors
    return {"topology": data.topology, "checks": lesson_checks(data), "measures": lesson_measures(data)}


def child(mode: str, labs: int, redis_url: str, spec: dict[str, Any]) -> None:
    """Host ``labs`` labs until stdin closes; print 'RUNNING <i> <ms>' as each one runs."""
    from core.engine import keys
    from core.engine.runner import run_lab

    def job(i: int, loop_started: float) -> Any:
        async def running() -> None:
            ms = (time.perf_counter() - loop_started) * 1000
            with out_lock:  # one line per write: the labs' threads must not interleave
                sys.stdout.write(f"RUNNING {i} {ms:.1f}\n")
                sys.stdout.flush()

        return run_lab(lab_id=f"hb{i}", topology=spec["topology"], network=keys.network_for(BLOCK + i),
                       redis_url=redis_url, idle_seconds=3600, checks=spec["checks"],
                       measures=spec["measures"], on_running=running)

    out_lock = threading.Lock()
    stops = []
    if mode == "threads":
        for i in range(labs):
            t = threading.Thread(target=lambda i=i: asyncio.run(job(i, time.perf_counter())), daemon=True)
            t.start()
            stops.append(t)
    else:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        for i in range(labs):
            stops.append(asyncio.run_coroutine_threadsafe(job(i, time.perf_counter()), loop))
    sys.stdin.read()  # the parent closes it to stop the labs
    r = redis.Redis.from_url(redis_url)
    for i in range(labs):
        r.publish(keys.in_channel(f"hb{i}"), '{"action": "stop"}')
    for s in stops:
        s.join(10) if isinstance(s, threading.Thread) else s.result(10)
    print("STOPPED", flush=True)


def measure(mode: str, labs: int, seconds: float, redis_url: str, spec: Path) -> dict[str, Any]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    sub = r.pubsub()
    sub.psubscribe("scalelab:lab:hb*")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bench.hosting_bench", "--child", mode, str(labs), redis_url,
                             str(spec)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    starts: list[float] = []
    assert proc.stdout is not None
    while len(starts) < labs:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the child ended early")
        if line.startswith("RUNNING"):
            starts.append(float(line.split()[2]))
    all_running = time.perf_counter() - t0
    ps = psutil.Process(proc.pid)
    settled = time.monotonic() + 3  # first frames, imports done; what arrives meanwhile is dropped
    while time.monotonic() < settled:
        sub.get_message(timeout=0.1)
    frames: dict[str, int] = {}
    lag: list[float] = []
    cpu0 = ps.cpu_times()
    rss = []
    start, end = time.time(), time.time() + seconds
    next_sample = 0.0
    while time.time() < end:
        m = sub.get_message(timeout=0.1)
        if time.monotonic() >= next_sample:
            rss.append(ps.memory_info().rss)
            next_sample = time.monotonic() + 1
        if not m or m["type"] != "pmessage":
            continue
        msg = json.loads(m["data"])
        if msg.get("type") == "frame" and msg["t"] >= start:  # made in the window, not queued before
            frames[msg["lab"]] = frames.get(msg["lab"], 0) + 1
            lag.append((time.time() - msg["t"]) * 1000)
    cpu1 = ps.cpu_times()
    cpu_pct = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / seconds * 100
    threads = ps.num_threads()
    proc.stdin.close()
    proc.wait(30)
    sub.close()
    per_lab = [frames.get(f"hb{i}", 0) / seconds for i in range(labs)]
    return {"mode": mode, "labs": labs, "start_p50_ms": statistics.median(starts), "start_p95_ms": pct(starts, 0.95),
            "all_running_s": all_running, "rss_mb": max(rss) / 2**20, "cpu_pct": cpu_pct, "threads": threads,
            "frames_min": min(per_lab), "frames_mean": statistics.fmean(per_lab),
            "lag_p50_ms": pct(lag, 0.5), "lag_p95_ms": pct(lag, 0.95)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, labs, url, spec = sys.argv[2:6]
        child(mode, int(labs), url, json.loads(Path(spec).read_text()))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--modes", nargs="+", default=["threads", "loop"], choices=["threads", "loop"])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    spec = Path(f"/tmp/hosting-bench-{os.getpid()}.json")
    spec.write_text(json.dumps(lesson()))
    print("| mode | labs | start p50 / p95 ms | all running s | RSS MB | RSS/lab MB | CPU % | threads "
          "| frames/s min / mean | frame lag p50 / p95 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    try:
        with redis_server() as url:
            for labs in args.labs:
                for mode in args.modes:
                    x = measure(mode, labs, args.seconds, url, spec)
                    print(f"| {x['mode']} | {x['labs']} | {x['start_p50_ms']:.0f} / {x['start_p95_ms']:.0f} "
                          f"| {x['all_running_s']:.1f} | {x['rss_mb']:.0f} | {x['rss_mb'] / labs:.1f} "
                          f"| {x['cpu_pct']:.0f} | {x['threads']} | {x['frames_min']:.2f} / {x['frames_mean']:.2f} "
                          f"| {x['lag_p50_ms']:.1f} / {x['lag_p95_ms']:.1f} |", flush=True)
    finally:
        spec.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
