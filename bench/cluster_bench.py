"""Cluster benchmarks (engine only, no Django, no Redis): a stage-4 lab (clients → dns → lb →
3 web → a primary SQL database + 2 replicas) under the realistic workload.

1. sustained answered req/s, telemetry on vs off (alternated, 3 runs each);
2. killing a backend (web-2) under load: kill → end of the last failed request that tried web-2,
   and how many failed, with the balancer's retries 0 and 1;
3. killing the primary (db-1) under load with writes: kill → promotion and kill → first
   successful write, and lost writes, with failover_after_s 1 and 3.

Run: .venv/bin/python -m bench.cluster_bench [--runs N] [--json FILE]
(``--runs`` scales every part: the defaults are 3 + 3 sustained, 10 per kill variant, 5 per
failover variant; ``--runs 1`` gives one run of each for a quick look.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time
from typing import Any

import core.engine.nodes.client
import core.engine.nodes.dns
import core.engine.nodes.lb
import core.engine.nodes.sqldb
import core.engine.nodes.web  # noqa: F401
from core.engine import keys
from core.engine.lab import Lab
from core.engine.spec import parse_topology
from core.engine.telemetry import Trace


class _CountResets(logging.Handler):
    """aiohttp's server logs a traceback for every request whose caller hung up before the body
    was read (a client timeout under overload): counted here instead of flooding the output."""

    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        _CountResets.count += 1


_server_log = logging.getLogger("aiohttp.server")
_server_log.addHandler(_CountResets())
_server_log.propagate = False

BLOCK = 55000 + os.getpid() % 5000
WEBS = ("web-1", "web-2", "web-3")
DBS = ("db-1", "db-2", "db-3")
# The realistic workload's parameters, if this checkout's client has them.
_labs = 0


def topology(
    *,
    rate: float,
    write_ratio: float = 0.1,
    zipf_s: float = 1.0,
    retries: int = 1,
    health_interval_s: float = 1.0,
    fall: int = 2,
    failover_after_s: float = 3.0,
    users: int = 1000,
    posts: int = 5000,
):
    """Stage 4 with a replicated database. ``rate`` is the total, split over the two clients. The
    modelled capacity is far above what one process can carry, so the engine is the limit."""
    web_params = {"workers": 64, "service_ms": 0, "queue_limit": 10000}
    db_params = {"workers": 64, "service_ms": 0, "queue_limit": 10000, "users": users, "posts": posts}
    client_params: dict[str, Any] = {"rate": rate / 2, "write_ratio": write_ratio, "zipf_s": zipf_s}
    return parse_topology(
        {
            "domain": "www.scalelab.test",
            "nodes": [
                {"id": "dns", "kind": "dns", "host": 53, "params": {"target": "lb"}},
                {
                    "id": "lb",
                    "kind": "lb",
                    "host": 100,
                    "params": {"health_interval_s": health_interval_s, "fall": fall, "rise": 2, "retries": retries},
                },
                *({"id": w, "kind": "web", "host": 20 + i, "params": web_params} for i, w in enumerate(WEBS, 1)),
                {
                    "id": "db-1",
                    "kind": "sqldb",
                    "host": 91,
                    "params": db_params | {"failover_after_s": failover_after_s},
                },
                *(
                    {"id": d, "kind": "sqldb", "host": 90 + i, "params": db_params | {"replica_of": "db-1"}}
                    for i, d in enumerate(DBS[1:], 2)
                ),
                {"id": "browser", "kind": "client", "params": {"flavor": "web", **client_params}},
                {"id": "phone", "kind": "client", "params": {"flavor": "mobile", **client_params}},
            ],
            "edges": [
                ["browser", "dns"],
                ["phone", "dns"],
                ["browser", "lb"],
                ["phone", "lb"],
                *(["lb", w] for w in WEBS),
                *([w, d] for w in WEBS for d in DBS),
            ],
        }
    )


def new_lab(topo) -> Lab:
    """Every lab on a fresh network block, so no run meets the previous run's sockets."""
    global _labs
    _labs += 1
    return Lab(topo, network=keys.network_for(BLOCK + _labs))


class Recorder:
    """Wraps lab.record (one call per finished request) and lab.telemetry.event (every event,
    not only the 20 a frame keeps); takes a frame every 250 ms like the worker does."""

    def __init__(self, lab: Lab, *, telemetry: bool = True, keep: bool = True) -> None:
        self.lab, self.telemetry, self.keep = lab, telemetry, keep
        self.traces: list[Trace] = []
        self.events: list[dict[str, Any]] = []
        self.ok = self.done = self.writes = 0
        record, event = lab.record, lab.telemetry.event

        def on_trace(trace: Trace) -> None:
            self.done += 1
            self.ok += trace.ok
            self.writes += trace.write
            if self.keep:
                self.traces.append(trace)
            if self.telemetry:
                record(trace)

        def on_event(t: float, kind: str, **fields: Any) -> None:
            self.events.append({"t": t, "kind": kind, **fields})
            event(t, kind, **fields)

        lab.record = on_trace  # type: ignore[method-assign]
        lab.telemetry.event = on_event  # type: ignore[method-assign]

    def reset(self) -> None:
        self.traces.clear()
        self.ok = self.done = self.writes = 0

    async def run_for(self, seconds: float) -> None:
        t0 = time.perf_counter()
        while (left := seconds - (time.perf_counter() - t0)) > 0:
            await asyncio.sleep(min(0.25, left))
            if self.telemetry:
                self.lab.frame()


def _hit(trace: Trace, node: str) -> bool:
    """The request tried ``node`` and that hop failed."""
    return any(h.dst == node and not h.ok for h in trace.hops)


# 1. Sustained --------------------------------------------------------------------------------
async def sustained(telemetry: bool, *, rate: float, seconds: float, warmup: float) -> dict[str, float]:
    lab = new_lab(topology(rate=rate))
    rec = Recorder(lab, telemetry=telemetry, keep=False)
    async with lab:
        await rec.run_for(warmup)
        rec.reset()
        t0 = time.perf_counter()
        await rec.run_for(seconds)
        elapsed = time.perf_counter() - t0
        return {
            "ok_rps": rec.ok / elapsed,
            "done_rps": rec.done / elapsed,
            "write_share": rec.writes / max(1, rec.done),
        }


# 2. Backend kill -----------------------------------------------------------------------------
async def backend_kill(retries: int, *, rate: float, after: float) -> dict[str, Any]:
    lab = new_lab(topology(rate=rate, retries=retries, health_interval_s=1.0, fall=2))
    rec = Recorder(lab)
    async with lab:
        await rec.run_for(1.0)
        rec.reset()
        killed = time.time()
        await lab.command({"action": "kill", "node": "web-2"})
        # Until the balancer has taken web-2 out (passively or by health checks) and 0.5 s more:
        # from then on it is not picked, so no new request can fail on it. At most ``after`` s.
        deadline = time.monotonic() + after
        while time.monotonic() < deadline:
            await rec.run_for(0.25)
            down = [e["t"] for e in rec.events if e["kind"] == "backend_down" and e.get("backend") == "web-2"]
            if down and time.time() - down[0] >= 0.5:
                break
    # Only requests that finished after the kill; a failure before it would be a baseline error.
    done = [tr for tr in rec.traces if tr.t + tr.ms / 1000 >= killed]
    failed = [tr for tr in done if not tr.ok]
    mine = [tr for tr in failed if _hit(tr, "web-2")]
    last = max((tr.t + tr.ms / 1000 for tr in mine), default=None)
    down = [e["t"] for e in rec.events if e["kind"] == "backend_down" and e.get("backend") == "web-2"]
    return {
        "last_error_s": None if last is None else last - killed,
        "failed": len(mine),
        "failed_writes": sum(tr.write for tr in mine),
        "other_failed": len(failed) - len(mine),
        "retried_ok": sum(1 for tr in done if tr.ok and _hit(tr, "web-2")),
        "marked_down_s": (down[0] - killed) if down else None,
        "finished": len(done),
        # What each failed request saw: its op and the status of every hop to web-2.
        "failures": [
            {"op": tr.op, "write": tr.write, "web2": [h.status for h in tr.hops if h.dst == "web-2"]} for tr in mine
        ],
    }


# 3. Primary kill -----------------------------------------------------------------------------
async def primary_kill(failover_after_s: float, *, rate: float, after: float) -> dict[str, Any]:
    lab = new_lab(topology(rate=rate, write_ratio=0.2, failover_after_s=failover_after_s))
    rec = Recorder(lab)
    async with lab:
        await rec.run_for(1.0)
        rec.reset()
        killed = time.time()
        await lab.command({"action": "kill", "node": "db-1"})
        deadline = time.monotonic() + after
        while time.monotonic() < deadline:
            await rec.run_for(0.25)
            if any(e["kind"] == "promoted" for e in rec.events) and _first_write(rec.traces, killed):
                await rec.run_for(0.25)  # the writes in flight at that moment
                break
        primary = lab.replication.primary_id
        watcher = _task_state(lab.replication._task)
        stuck = None
        if primary == "db-1":  # no promotion: keep what the engine was doing, for a bug report
            import io

            out = io.StringIO()
            if lab.replication._task is not None and not lab.replication._task.done():
                lab.replication._task.print_stack(file=out)
            cluster = next(iter(lab.replication.clusters.values()))
            replicas = {
                n: {k: getattr(lab.nodes[n], k) for k in ("up", "role", "following", "received", "lsn")}
                | {"down_since": lab.nodes[n].primary_down_since, "pending": len(lab.nodes[n]._pending)}
                for n in ("db-2", "db-3")
            }
            stuck = {"promoting": cluster.promoting, "lost_since": cluster.lost_since,
                     "now": time.monotonic(), "replicas": replicas, "watcher_stack": out.getvalue()}
    promoted = [e for e in rec.events if e["kind"] == "promoted" and e["t"] >= killed]
    lost = [e for e in rec.events if e["kind"] == "primary_lost" and e["t"] >= killed]
    first = _first_write(rec.traces, killed)
    writes_after = [tr for tr in rec.traces if tr.write and tr.t + tr.ms / 1000 >= killed]
    return {
        "primary_lost_s": (lost[0]["t"] - killed) if lost else None,
        "promoted_s": (promoted[0]["t"] - killed) if promoted else None,
        "first_write_s": None if first is None else first - killed,
        "failed_writes": sum(1 for tr in writes_after if not tr.ok and (first is None or tr.t < first)),
        "lost_writes": promoted[0]["lost"] if promoted else None,
        "new_primary": primary,
        "watcher": watcher,  # the replication watcher task after the run: "running" if healthy
        "stuck": stuck,
        "events": [
            {**e, "t": round(e["t"] - killed, 3)}
            for e in rec.events
            if e["t"] >= killed and e["kind"] not in ("stale_read", "traffic_set")
        ],
    }


def _task_state(task: asyncio.Task[Any] | None) -> str:
    if task is None:
        return "none"
    if not task.done():
        return "running"
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return f"died: {type(exc).__name__}: {exc}" if exc else "returned"


def _first_write(traces: list[Trace], killed: float) -> float | None:
    """End time of the earliest successful write that started after the kill."""
    ends = [tr.t + tr.ms / 1000 for tr in traces if tr.write and tr.ok and tr.t >= killed]
    return min(ends, default=None)


# Report --------------------------------------------------------------------------------------
def _med_max(values: list[float | None], scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    got = [v * scale for v in values if v is not None]
    missing = len(values) - len(got)
    if not got:
        return "never"
    text = f"{fmt.format(statistics.median(got))} / {fmt.format(max(got))}"
    return text + (f" ({missing} never)" if missing else "")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=None, help="runs of every part (default 3 / 10 / 5)")
    ap.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[250.0, 400.0, 600.0],
        help="total req/s offered in part 1, comma-separated (default 250,400,600: below, near and past the cliff)",
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds in part 1")
    ap.add_argument(
        "--failover",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[1.0, 3.0],
        help="failover_after_s values of part 3 (default 1,3)",
    )
    ap.add_argument("--json", metavar="FILE", help="write the raw figures here")
    ap.add_argument("--only", choices=("sustained", "backend", "primary"), action="append")
    args = ap.parse_args()
    parts = set(args.only or ("sustained", "backend", "primary"))
    out: dict[str, Any] = {"nproc": os.cpu_count()}
    t_all = time.perf_counter()

    if "sustained" in parts:
        n = args.runs or 3
        out["sustained"] = {}
        for rate in args.rates:
            runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
            # on, off, off, on, on, off...: neither mode always runs first.
            order = [m for i in range(n) for m in (("on", "off") if i % 2 == 0 else ("off", "on"))]
            for mode in order:
                r = await sustained(mode == "on", rate=rate, seconds=args.seconds, warmup=1.0)
                runs[mode].append(r)
            on = statistics.median(r["ok_rps"] for r in runs["on"])
            off = statistics.median(r["ok_rps"] for r in runs["off"])
            out["sustained"][f"{rate:g}"] = {"runs": runs, "on_median": on, "off_median": off}
            print(f"1. sustained, {rate:g} req/s offered, {args.seconds:g} s after 1 s warm-up, median of {n}:")
            print(f"   telemetry on {on:,.0f} ok req/s | off {off:,.0f} | on/off {on / off:.2f}")
            for mode in ("on", "off"):
                rs = runs[mode]
                print(
                    f"   {mode:>3}: ok "
                    + ", ".join(f"{r['ok_rps']:.0f}" for r in rs)
                    + " | finished "
                    + ", ".join(f"{r['done_rps']:.0f}" for r in rs)
                    + f" | writes {statistics.mean(r['write_share'] for r in rs):.0%}"
                )

    if "backend" in parts:
        n = args.runs or 10
        out["backend_kill"] = {}
        print(f"2. kill web-2 at 100 req/s (health 1 s, fall 2), {n} runs, median / max:")
        print("   retries | kill → last failed request end ms | failed requests | marked down ms | other failed")
        for retries in (0, 1):
            rs = [await backend_kill(retries, rate=100, after=2.5) for _ in range(n)]
            out["backend_kill"][f"retries_{retries}"] = rs
            print(
                f"   {retries:>7} | {_med_max([r['last_error_s'] for r in rs], 1000):>33} |"
                f" {_med_max([r['failed'] for r in rs]):>15} | {_med_max([r['marked_down_s'] for r in rs], 1000):>14} |"
                f" {sum(r['other_failed'] for r in rs)}"
            )

    if "primary" in parts:
        n = args.runs or 5
        out["primary_kill"] = {}
        print(f"3. kill db-1 at 100 req/s, 20 % writes, {n} runs, median / max:")
        print(
            "   failover_after_s | kill → primary_lost ms | kill → promoted ms | kill → first write ok ms |"
            " failed writes | lost writes"
        )
        for fo in args.failover:
            rs = [await primary_kill(fo, rate=100, after=fo + 4.0) for _ in range(n)]
            out["primary_kill"][f"failover_{fo:g}"] = rs
            print(
                f"   {fo:>16g} | {_med_max([r['primary_lost_s'] for r in rs], 1000):>22} |"
                f" {_med_max([r['promoted_s'] for r in rs], 1000):>18} |"
                f" {_med_max([r['first_write_s'] for r in rs], 1000):>24} |"
                f" {_med_max([r['failed_writes'] for r in rs]):>13} | {_med_max([r['lost_writes'] for r in rs])}"
            )
    out["total_s"] = time.perf_counter() - t_all
    out["server_reset_tracebacks"] = _CountResets.count
    print(
        f"total {out['total_s']:.0f} s; aiohttp 'Error handling request' tracebacks (callers that hung up):"
        f" {_CountResets.count}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    asyncio.run(main())
