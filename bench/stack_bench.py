"""Full-stack benchmarks: a real WebSocket client against daphne + a Celery worker + Redis.

1. lab start: click ({"action": "start"} sent) → status "running" received (every node serving),
   with the queued → running part separately; 20 runs, each stopped before the next.
2. event → browser: for each sampled request in each frame received, arrival time at the client
   minus the request's completion (sample.t + sample.ms / 1000), at 10, 100 and 1,000 req/s;
   plus frames/s and bytes per frame received.

Run: .venv/bin/python -m bench.stack_bench   (starts its own redis-server, worker and daphne)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis

from bench.quiet import stack_output
from tests.stack import free_port, run_stack

REDIS_SERVER = Path(sys.executable).parent / "redis-server"
SLUG = "single-server"
STEP_TIMEOUT_S = 30.0


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


@contextlib.contextmanager
def redis_server():
    port = free_port()
    proc = subprocess.Popen(
        [str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
            finally:
                client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Received:
    at: float  # time.time() when the text arrived
    mono: float  # time.perf_counter() when the text arrived
    size: int  # bytes of the text message
    msg: dict[str, Any]


@dataclass
class Client:
    """One browser tab: a WebSocket with a session cookie; a reader timestamps every message."""

    ws: aiohttp.ClientWebSocketResponse
    queue: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while True:
            m = await self.ws.receive()
            at, mono = time.time(), time.perf_counter()
            if m.type != aiohttp.WSMsgType.TEXT:
                return
            self.queue.put_nowait(Received(at, mono, len(m.data.encode()), json.loads(m.data)))

    def start(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def send(self, command: dict[str, Any]) -> float:
        await self.ws.send_str(json.dumps(command))
        return time.perf_counter()

    async def next(self, timeout: float = STEP_TIMEOUT_S) -> Received:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def until(self, pred, timeout: float = STEP_TIMEOUT_S) -> Received:
        deadline = time.perf_counter() + timeout
        while True:
            r = await self.next(max(0.01, deadline - time.perf_counter()))
            if r.msg.get("type") == "error":
                raise RuntimeError(f"error from the server: {r.msg}")
            if pred(r.msg):
                return r

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


def is_status(state: str, lab: str | None = None):
    def pred(msg: dict[str, Any]) -> bool:
        return msg.get("type") == "status" and msg.get("state") == state and (lab is None or msg.get("lab") == lab)

    return pred


async def lab_start_running(c: Client) -> dict[str, Any]:
    """Send start; time the queued, starting and running statuses of the new lab."""
    c.drain()
    t0 = await c.send({"action": "start"})
    # The consumer answers a start with the status Redis holds once it has subscribed: usually
    # "queued", but "starting" or "running" when the worker was quicker. Waiting for "queued"
    # alone once waited 30 s in vain (1 run in ~50).
    first = await c.until(lambda m: m.get("type") == "status" and m.get("state") in ("queued", "starting", "running"))
    lab = first.msg["lab"]
    seen: dict[str, float] = {"queued": first.mono, first.msg["state"]: first.mono}
    if first.msg["state"] == "running":
        return _start_times(lab, t0, seen)
    while True:
        r = await c.until(lambda m: m.get("type") == "status" and m.get("lab") == lab)
        state = r.msg["state"]
        seen.setdefault(state, r.mono)
        if state == "failed":
            raise RuntimeError(f"lab failed to start: {r.msg}")
        if state == "running":
            break
    return _start_times(lab, t0, seen)


def _start_times(lab: str, t0: float, seen: dict[str, float]) -> dict[str, Any]:
    return {
        "lab": lab,
        "click_running_ms": (seen["running"] - t0) * 1000,
        "click_queued_ms": (seen["queued"] - t0) * 1000,
        "queued_running_ms": (seen["running"] - seen["queued"]) * 1000,
        "queued_starting_ms": (seen["starting"] - seen["queued"]) * 1000 if "starting" in seen else float("nan"),
        "starting_running_ms": (seen["running"] - seen["starting"]) * 1000 if "starting" in seen else float("nan"),
    }


async def lab_stop_stopped(c: Client, lab: str) -> None:
    """Send stop; wait for both "stopped" statuses: the web side's (no nodes) and the engine's (lists
    its nodes, sent once every socket is closed). They arrive in either order."""
    await c.send({"action": "stop"})
    seen = set()
    while seen != {"web", "engine"}:
        r = await c.until(is_status("stopped", lab), timeout=15)
        seen.add("engine" if r.msg.get("nodes") else "web")


async def bench_start(c: Client, runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for _ in range(runs):
        r = await lab_start_running(c)
        for k, v in r.items():
            if k != "lab":
                results.setdefault(k, []).append(v)
        await lab_stop_stopped(c, r["lab"])
    return results


async def bench_latency(c: Client, rates: list[float], seconds: float, warmup: float) -> list[dict[str, Any]]:
    r = await lab_start_running(c)
    lab = r["lab"]
    out = []
    try:
        for rate in rates:
            await c.send({"action": "traffic", "rate": rate})
            await asyncio.sleep(warmup)
            c.drain()
            t_end = time.perf_counter() + seconds
            lat: list[float] = []
            frame_lag: list[float] = []
            sizes: list[int] = []
            rps: list[float] = []
            ok_rps: list[float] = []
            first = last = None
            while (left := t_end - time.perf_counter()) > 0:
                try:
                    got = await c.next(timeout=left)
                except TimeoutError:
                    break
                m = got.msg
                if m.get("type") != "frame" or m.get("lab") != lab:
                    continue
                first = first if first is not None else got.mono
                last = got.mono
                sizes.append(got.size)
                frame_lag.append((got.at - m["t"]) * 1000)
                rps.append(m["totals"]["rps"])
                ok_rps.append(m["totals"]["ok_rps"])
                for s in m.get("samples", []):
                    lat.append((got.at - (s["t"] + s["ms"] / 1000)) * 1000)
            n = len(sizes)
            out.append(
                {
                    "rate": rate,
                    "frames": n,
                    "frames_per_s": (n - 1) / (last - first) if n > 1 else float("nan"),
                    "samples": len(lat),
                    "p50_ms": pct(lat, 0.50),
                    "p95_ms": pct(lat, 0.95),
                    "max_ms": max(lat) if lat else float("nan"),
                    "frame_lag_p50_ms": pct(frame_lag, 0.50),
                    "frame_lag_p95_ms": pct(frame_lag, 0.95),
                    "bytes_mean": statistics.fmean(sizes) if sizes else float("nan"),
                    "bytes_max": max(sizes) if sizes else 0,
                    "rps": statistics.fmean(rps) if rps else float("nan"),
                    "ok_rps": statistics.fmean(ok_rps) if ok_rps else float("nan"),
                }
            )
    finally:
        with contextlib.suppress(Exception):
            await c.send({"action": "traffic", "rate": 0})
            await lab_stop_stopped(c, lab)
    return out


async def connect(http: aiohttp.ClientSession, base: str, slug: str = SLUG) -> tuple[Client, str]:
    async with http.get(f"{base}/stage/{slug}/") as resp:
        assert resp.status == 200, resp.status
    session = {c.key: c.value for c in http.cookie_jar}.get("sessionid")
    if not session:
        raise RuntimeError("the stage page set no sessionid cookie")
    ws_url = base.replace("http://", "ws://") + f"/ws/lab/{slug}/"
    ws = await http.ws_connect(ws_url, headers={"Origin": base}, max_msg_size=0)
    client = Client(ws)
    client.start()
    hello = await client.next()
    assert hello.msg.get("type") == "hello", hello.msg
    return client, session


async def run(base: str, args: argparse.Namespace) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    # unsafe=True: keep cookies set by an IP-address host (127.0.0.1).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        client, _ = await connect(http, base)
        try:
            starts = await bench_start(client, args.runs)
            latency = await bench_latency(client, args.rates, args.seconds, args.warmup)
        finally:
            if client.reader:
                client.reader.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.ws.close(), 5)
    return starts, latency


def report(starts: dict[str, list[float]], latency: list[dict[str, Any]]) -> None:
    n = len(starts["click_running_ms"])
    print(f"\nlab start (single-server, 4 nodes), {n} runs, ms")
    print(f"  {'':22} {'median':>8} {'p95':>8} {'min':>8} {'max':>8}")
    labels = {
        "click_running_ms": "click → running",
        "click_queued_ms": "click → queued",
        "queued_running_ms": "queued → running",
        "queued_starting_ms": "  queued → starting",
        "starting_running_ms": "  starting → running",
    }
    for key, label in labels.items():
        v = starts[key]
        print(f"  {label:22} {statistics.median(v):8.1f} {pct(v, 0.95):8.1f} {min(v):8.1f} {max(v):8.1f}")
    print("\nevent → browser (request completion → its frame at the WebSocket client), ms")
    print(
        f"  {'rate':>6} {'rps':>6} {'ok_rps':>7} {'samples':>7} {'p50':>6} {'p95':>6} {'max':>6}"
        f" {'frame p50':>9} {'frame p95':>9} {'frames/s':>8} {'B mean':>7} {'B max':>6}"
    )
    for r in latency:
        print(
            f"  {r['rate']:6.0f} {r['rps']:6.0f} {r['ok_rps']:7.0f} {r['samples']:7d} {r['p50_ms']:6.0f}"
            f" {r['p95_ms']:6.0f} {r['max_ms']:6.0f} {r['frame_lag_p50_ms']:9.1f} {r['frame_lag_p95_ms']:9.1f}"
            f" {r['frames_per_s']:8.2f} {r['bytes_mean']:7.0f} {r['bytes_max']:6d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--verbose", action="store_true", help="show the worker's and daphne's output")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    t0 = time.monotonic()
    with (redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="stack-bench-") as tmp,
          stack_output(Path(tmp) / "stack.log", verbose=args.verbose) as out,
          run_stack(Path(tmp), redis_url, web=True, slots=2) as stack):
        print(f"stack up in {time.monotonic() - t0:.1f}s: daphne {stack.url}, worker pid {stack.worker.pid}, "
              "2 slots", file=out)
        budget = args.runs * 20 + len(args.rates) * (args.seconds + args.warmup + 30) + 60
        starts, latency = asyncio.run(asyncio.wait_for(run(stack.url, args), budget))
    report(starts, latency)
    if args.json:
        args.json.write_text(json.dumps({"starts": starts, "latency": latency}, indent=1))
    print(f"\ntotal {time.monotonic() - t0:.0f}s (stack start and stop included)")


if __name__ == "__main__":
    main()
