"""Soak: many lab start/stop cycles through the real stack, then what is left beyond the baseline.

One browser-like client (a Django session and its WebSocket on daphne) starts a lab of --lesson,
waits for "running", stops it and waits for both "stopped" statuses (the web side's and the
engine's), --cycles times. Before and after (each after --settle seconds) it counts, for the
worker's process tree: open file descriptors, child processes, sockets listening (or bound, UDP)
on 127.x by the tree or on any network a lab of this run used, node scratch directories of the
tree's processes (core.engine.scratch), and processes once in the tree that outlived it (orphans).

--kill-every K: every K-th cycle the lab is started and, once running, its host is SIGKILLed
instead of stopped: the worker process hosting it (core.workers starts a new one) or the whole worker (started
again, as tests.stack does), alternately by default (--kill). Then, each wait bounded: the killed
processes' redis-server children must die (PR_SET_PDEATHSIG) and the lab's sockets close; the page
may or may not be told a final status for the lost lab (noted, never waited on past --final-wait);
the next start, on the same page, must sweep the dead process's node directories.

Run: .venv/bin/python -m bench.soak_bench [--cycles 1000] [--kill-every 50] [--lesson web-and-data-tiers]
(starts its own redis-server, a worker with one slot, and daphne). Exit status 1 if anything leaked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.stack_bench import Client, connect, lab_stop_stopped, pct, redis_server
from core.engine import scratch
from tests.stack import Stack, run_stack, wait_for

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
FINAL_STATES = ("stopped", "failed", "lost")


# What the worker holds -------------------------------------------------------------------------


def worker_tree(stack: Stack) -> list[psutil.Process]:
    """The worker's master, its pool processes and theirs (a lab's redis-server)."""
    assert stack.worker is not None
    try:
        master = psutil.Process(stack.worker.pid)
        return [master, *master.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def pool_processes(stack: Stack) -> list[psutil.Process]:
    assert stack.worker is not None
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(stack.worker.pid).children()
    return []


@dataclass
class Seen:
    """Every process ever seen in the worker's tree, by (pid, create time) so a reused pid is not it."""

    procs: dict[tuple[int, float], str] = field(default_factory=dict)

    def add(self, procs: list[psutil.Process]) -> None:
        for p in procs:
            with contextlib.suppress(psutil.Error):
                self.procs.setdefault((p.pid, p.create_time()), p.name())

    def pids(self) -> set[int]:
        return {pid for pid, _ in self.procs}

    def outliving(self, tree: list[psutil.Process]) -> tuple[list[str], list[str]]:
        """(orphans: alive outside the current tree, zombies: dead but not reaped) as 'name pid'."""
        in_tree = {p.pid for p in tree}
        orphans, zombies = [], []
        for (pid, created), name in self.procs.items():
            if pid in in_tree:
                continue
            try:
                p = psutil.Process(pid)
                if p.create_time() != created:
                    continue
                (zombies if p.status() == psutil.STATUS_ZOMBIE else orphans).append(f"{name} {pid}")
            except psutil.NoSuchProcess:
                continue
        return orphans, zombies


def fds(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.num_fds()
    return total


def fd_targets(procs: list[psutil.Process]) -> dict[str, str]:
    """'name pid fd N' → what it is (a path, socket:[inode], pipe:[inode]): to say what a leak is."""
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.Error, OSError):
            name = p.name()
            inet = {c.fd: c for c in p.net_connections(kind="inet")}
            for fd in os.listdir(f"/proc/{p.pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{p.pid}/fd/{fd}")
                    if (c := inet.get(int(fd))) is not None:
                        peer = f"{c.raddr.ip}:{c.raddr.port}" if c.raddr else "-"
                        target += f" {c.laddr.ip}:{c.laddr.port} → {peer} {c.status}"
                    out[f"{name} {p.pid} fd {fd}"] = target
    return out


def sockets(pids: set[int], networks: set[str]) -> list[str]:
    """Listening TCP and bound UDP sockets on 127.x: of these processes, or of anyone on a lab's network."""
    out = []
    for c in psutil.net_connections(kind="inet"):
        if not c.laddr or not (c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)):
            continue
        ip = c.laddr.ip
        if ipaddress.ip_address(ip) not in LOOPBACK:
            continue
        if c.pid in pids or ip.rsplit(".", 1)[0] in networks:
            out.append(f"{ip}:{c.laddr.port} pid {c.pid}")
    return out


def scratch_dirs(pids: set[int]) -> list[str]:
    root = Path(tempfile.gettempdir())
    return sorted(str(d) for pid in pids for d in root.glob(f"{scratch.PREFIX}{pid}-*"))


def snapshot(stack: Stack, seen: Seen, networks: set[str]) -> dict[str, Any]:
    tree = worker_tree(stack)
    seen.add(tree)
    orphans, zombies = seen.outliving(tree)
    return {
        "fds": fds(tree),
        "fd_targets": fd_targets(tree),
        "children": len(tree) - 1,  # every process below the master: its pool, and theirs
        "sockets": sockets({p.pid for p in tree} | seen.pids(), networks),
        "dirs": scratch_dirs(seen.pids()),
        "orphans": orphans,
        "zombies": zombies,
    }


def lab_network(stack: Stack, lab: str) -> str:
    with sqlite3.connect(stack.db_path) as db:
        return db.execute("select network from visualizer_lab where id = ?", (lab.replace("-", ""),)).fetchone()[0]


# One cycle -------------------------------------------------------------------------------------


async def start_running(c: Client, timeout: float, not_lab: str | None = None) -> tuple[str, float]:
    """Send start; (the new lab's id, seconds until its "running" status). Raises on failed or timeout."""
    c.drain()
    t0 = await c.send({"action": "start"})
    deadline = t0 + timeout

    def left() -> float:
        return max(0.01, deadline - time.perf_counter())

    first = await c.until(
        lambda m: (
            m.get("type") == "status"
            and m.get("lab") != not_lab
            and m.get("state") in ("queued", "starting", "running", "failed")
        ),
        timeout=left(),
    )
    lab, msg = first.msg["lab"], first.msg
    while msg["state"] != "running":
        if msg["state"] == "failed":
            raise RuntimeError(f"lab failed to start: {msg.get('message', msg)}")
        got = await c.until(lambda m: m.get("type") == "status" and m.get("lab") == lab, timeout=left())
        msg = got.msg
    return lab, time.perf_counter() - t0


async def final_status(c: Client, lab: str, timeout: float) -> tuple[str | None, float | None]:
    """The page's final status for a lab whose worker was killed, if one comes within timeout
    (error frames meanwhile are skipped: this only watches)."""
    t0 = time.perf_counter()
    while (left := t0 + timeout - time.perf_counter()) > 0:
        try:
            got = await c.next(timeout=left)
        except TimeoutError:
            break
        m = got.msg
        if m.get("type") == "status" and m.get("lab") == lab and m.get("state") in FINAL_STATES:
            return m["state"], time.perf_counter() - t0
    return None, None


# Killing the worker ----------------------------------------------------------------------------


def kill_host(stack: Stack, what: str, network: str) -> dict[str, Any]:
    """SIGKILL the pool process hosting the lab on network (what="pool") or the worker's master
    ("worker"); wait (bounded) for the dead processes, their redis-servers and the lab's sockets."""
    assert stack.worker is not None
    pool = pool_processes(stack)
    owners = {c.pid for c in psutil.net_connections(kind="inet") if c.laddr and c.laddr.ip.startswith(network + ".")}
    host = next((p for p in pool if p.pid in owners), pool[0] if pool else None)
    assert host is not None, "no pool process to kill"
    doomed: list[tuple[psutil.Process, str]] = []
    for p in [host, *host.children(recursive=True)] if what == "pool" else worker_tree(stack):
        with contextlib.suppress(psutil.Error):
            doomed.append((p, p.name()))  # names now: a dead process has none
    pid = host.pid if what == "pool" else stack.worker.pid
    t0, killed_at = time.monotonic(), time.time()
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would; a dead master's pool processes should follow

    def gone(p: psutil.Process) -> bool:
        try:
            return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    def clean() -> bool:
        return all(gone(p) for p, _ in doomed) and not sockets(set(), {network})

    with contextlib.suppress(AssertionError):
        wait_for(clean, 10, "the killed processes and the lab's sockets to go")
    left = [f"{name} {p.pid}" for p, name in doomed if not gone(p)] + sockets(set(), {network})
    return {
        "what": what,
        "pid": pid,
        "killed_at": killed_at,
        "killed_pids": sorted(p.pid for p, name in doomed if name != "redis-server"),
        "redis_servers": sum(1 for _, name in doomed if name == "redis-server"),
        "clean_s": None if left else round(time.monotonic() - t0, 2),
        "left_after_10s": left,
    }


def worker_back(stack: Stack, what: str, dead_pid: int, killed_at: float) -> float:
    """Bring the worker back to its slots; seconds it took. core.workers starts a new worker process
    by itself (timed from the kill, by the new process's start); a dead master is started again here
    once the page has had its chance at a final status (timed from that restart)."""
    if what == "worker":
        t0 = time.time()
        stack.worker_restart()
        return time.time() - t0

    def replaced() -> list[psutil.Process]:
        pool = pool_processes(stack)
        return pool if len(pool) == stack.processes and dead_pid not in {p.pid for p in pool} else []

    pool = wait_for(replaced, 30, "a new pool process")
    return max(started_at(p.pid) for p in pool) - killed_at  # type: ignore[union-attr]


def started_at(pid: int) -> float:
    """A process's start as a wall-clock time, to ~10 ms. psutil's create_time() adds the start to
    /proc/stat's boot time, which is whole seconds: a replacement could seem to start before the kill."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    booted = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    return booted + ticks / os.sysconf("SC_CLK_TCK")


# The run ---------------------------------------------------------------------------------------


@dataclass
class Page:
    """The one page the bench drives, reopened (a new session) only if its socket breaks."""

    base: str
    lesson: str
    http: aiohttp.ClientSession | None = None
    client: Client | None = None
    reopened: int = 0

    async def open(self) -> Client:
        await self.close()
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.client, _ = await connect(self.http, self.base, self.lesson)
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            if self.client.reader:
                self.client.reader.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.client.ws.close()
        if self.http is not None:
            await self.http.close()
        self.client = self.http = None


async def run(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    seen = Seen()
    networks: set[str] = set()
    page = Page(stack.url, args.lesson)
    c = await page.open()
    start_s: list[float] = []
    stop_s: list[float] = []
    cycle_s: list[float] = []
    failures: list[dict[str, Any]] = []
    kills: list[dict[str, Any]] = []
    fd_series: list[int] = []
    generation_baselines: list[dict[str, Any]] = []
    baseline: dict[str, Any] | None = None
    rebaseline = True  # after the first cycle of each worker (or pool process), warm and settled
    unswept: list[str] = []  # node dirs of a killed process, which the next start must remove
    killed_lab: str | None = None
    await asyncio.sleep(args.settle)
    cold = await asyncio.to_thread(snapshot, stack, seen, networks)
    consecutive = 0
    t_run = time.monotonic()
    progress_every = max(1, args.cycles // 20)
    for i in range(1, args.cycles + 1):
        # Never the last cycle: the start after a kill is what must sweep the dead process's files.
        kill = args.kill_every and i % args.kill_every == 0 and i < args.cycles
        try:
            t0 = time.perf_counter()
            lab, up = await start_running(c, args.step_timeout, not_lab=killed_lab)
            networks.add(await asyncio.to_thread(lab_network, stack, lab))
            seen.add(await asyncio.to_thread(worker_tree, stack))  # the lab's redis-server, while it runs
            if unswept:
                still = [d for d in unswept if os.path.exists(d)]
                kills[-1]["dirs_swept_by_next_start"] = not still
                unswept = []
            if kill:
                what = args.kill if args.kill != "alternate" else ("pool", "worker")[len(kills) % 2]
                network = await asyncio.to_thread(lab_network, stack, lab)
                record = await asyncio.to_thread(kill_host, stack, what, network)
                killed_lab = lab
                record["cycle"] = i
                state, after = await final_status(c, lab, args.final_wait)
                record["page_final_status"] = state or f"none within {args.final_wait:g} s"
                record["page_final_after_s"] = round(after, 2) if after is not None else None
                record["worker_back_s"] = round(
                    await asyncio.to_thread(worker_back, stack, what, record["pid"], record.pop("killed_at")), 2
                )
                unswept = scratch_dirs(set(record["killed_pids"]))
                record["dirs_left_by_kill"] = len(unswept)
                kills.append(record)
                rebaseline = True
                print(
                    f"  cycle {i}: killed the {what} (pid {record['pid']}); page: {record['page_final_status']}; "
                    f"back in {record['worker_back_s']} s; left after 10 s: {record['left_after_10s'] or 'nothing'}",
                    flush=True,
                )
                consecutive = 0
                continue
            t_stop = time.perf_counter()
            await lab_stop_stopped(c, lab)
            done = time.perf_counter()
            start_s.append(up)
            stop_s.append(done - t_stop)
            cycle_s.append(done - t0)
            fd_series.append(fds(await asyncio.to_thread(worker_tree, stack)))
            consecutive = 0
        except (TimeoutError, RuntimeError, AssertionError, aiohttp.ClientError) as exc:
            failures.append({"cycle": i, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(f"  cycle {i}: FAILED {failures[-1]['error']}", flush=True)
            consecutive += 1
            if consecutive >= args.max_failures:
                print(f"  {consecutive} failures in a row: giving up", flush=True)
                break
            if c.ws.closed:
                page.reopened += 1
                c = await page.open()
            continue
        if rebaseline:
            await asyncio.sleep(args.settle)
            baseline = await asyncio.to_thread(snapshot, stack, seen, networks)
            baseline["after_cycle"] = i
            generation_baselines.append(baseline)
            rebaseline = False
        if i % progress_every == 0:
            print(
                f"  cycle {i}/{args.cycles}: cycle p50 {pct(cycle_s, 0.5) * 1000:.0f} ms, "
                f"worker fds {fd_series[-1]}, {len(failures)} failed, {len(kills)} kills",
                flush=True,
            )
    elapsed = time.monotonic() - t_run
    await page.close()
    await asyncio.sleep(args.settle)
    first = generation_baselines[0] if generation_baselines else None
    base = generation_baselines[-1] if generation_baselines else None
    final = await asyncio.to_thread(snapshot, stack, seen, networks)
    for _ in range(5):  # a count above the baseline must stay there: once in ~5 runs a socket lingered past 3 s
        if base is None or final["fds"] <= base["fds"]:
            break
        await asyncio.sleep(1.0)
        final = await asyncio.to_thread(snapshot, stack, seen, networks)
    leaks = {
        "fds": final["fds"] - base["fds"] if base else None,
        "children": final["children"] - stack.slots,
        "sockets": len(final["sockets"]),
        "dirs": len(final["dirs"]),
        "orphans": len(final["orphans"]),
    }
    return {
        "lesson": args.lesson,
        "cycles_asked": args.cycles,
        "cycles_stopped": len(cycle_s),
        "kills": len(kills),
        "failures": failures,
        "page_reopened": page.reopened,
        "elapsed_s": round(elapsed, 1),
        "cycle_ms": summary_ms(cycle_s),
        "start_to_running_ms": summary_ms(start_s),
        "stop_to_stopped_ms": summary_ms(stop_s),
        "before_any_lab": cold,
        "baseline_first": first,
        "baseline_current_worker": base,
        "final": final,
        "leaks_beyond_baseline": leaks,
        "zombies": len(final["zombies"]),
        "fds_after_each_cycle": {
            "first": fd_series[0] if fd_series else None,
            "max": max(fd_series, default=None),
            "last": fd_series[-1] if fd_series else None,
        },
        "kill_records": kills,
        "python": sys.version.split()[0],
        "_fd_series": fd_series,
        "_seen": seen,
    }


def summary_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": round(pct(values, 0.5) * 1000, 1),
        "p95": round(pct(values, 0.95) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def report(s: dict[str, Any]) -> bool:
    """Print the summary; True if nothing leaked."""
    print(
        f"\nsoak: {s['cycles_stopped']} start/stop cycles of {s['lesson']} and {s['kills']} kills "
        f"in {s['elapsed_s']} s; {len(s['failures'])} failed cycles, page reopened {s['page_reopened']}x"
    )
    for label, key in (
        ("cycle (start → stopped)", "cycle_ms"),
        ("start → running", "start_to_running_ms"),
        ("stop → both stopped", "stop_to_stopped_ms"),
    ):
        v = s[key]
        print(f"  {label:24} p50 {v['p50']} ms, p95 {v['p95']} ms, max {v['max']} ms")
    f = s["fds_after_each_cycle"]
    print(f"  worker fds after each stop (no settle): first {f['first']}, max {f['max']}, last {f['last']}")
    for k in s["kill_records"]:
        swept = k.get("dirs_swept_by_next_start")
        print(
            f"  kill at cycle {k['cycle']}: {k['what']} pid {k['pid']} ({k['redis_servers']} redis-server); "
            f"gone in {k['clean_s']} s; left {k['left_after_10s'] or 'nothing'}; page final status "
            f"{k['page_final_status']}; {'pool process replaced' if k['what'] == 'pool' else 'worker restarted'} in "
            f"{k['worker_back_s']} s; "
            f"{k['dirs_left_by_kill']} node dirs left, swept by the next start: "
            f"{'n/a' if swept is None else 'yes' if swept else 'NO'}"
        )
    base, final, leaks = s["baseline_current_worker"], s["final"], s["leaks_beyond_baseline"]
    print("\n  leftovers after a settle      baseline   final   beyond baseline")
    rows = (
        ("worker tree open fds", "fds", lambda x: x),
        ("child processes", "children", lambda x: x),
        ("sockets on 127.x", "sockets", len),
        ("scratch dirs", "dirs", len),
        ("orphans", "orphans", len),
    )
    ok = True
    for label, key, measure in rows:
        b = measure(base[key]) if base else None
        leak = leaks[key]
        leaked = leak is not None and leak > 0  # below the baseline: the baseline held something transient
        ok = ok and not leaked
        shown = "-" if leak is None else leak
        mark = "   LEAK" if leaked else ""
        print(f"  {label:28} {'-' if b is None else b:>9} {measure(final[key]):>7} {shown:>9}{mark}")
    for name, snap in (("baseline", base), ("final", final)):
        for k, v in (snap or {}).get("fd_targets", {}).items():
            if "CLOSE_WAIT" in v:  # the peer closed it and this process has not (yet): worth a look
                print(f"    note: in the {name} count, {k} is {v}")
    if base and leaks["fds"]:
        added = {k: v for k, v in final["fd_targets"].items() if base["fd_targets"].get(k) != v}
        gone = [k for k in base["fd_targets"] if k not in final["fd_targets"]]
        for k, v in list(added.items())[:10]:
            print(f"    fd new since the baseline: {k} → {v}")
        for k in gone[:10]:
            print(f"    fd closed since the baseline: {k} (was {base['fd_targets'][k]})")
    for key in ("sockets", "dirs", "orphans"):
        for item in final[key][:10]:
            print(f"    {key}: {item}")
    if s["zombies"]:
        print(f"  zombies (dead, not reaped: PID 1 here reaps no one): {s['zombies']}")
    ok = ok and not any(k["left_after_10s"] for k in s["kill_records"])
    ok = ok and all(k.get("dirs_swept_by_next_start") is not False for k in s["kill_records"])
    print("\n  " + ("nothing left beyond the baseline" if ok else "SOMETHING WAS LEFT (see above)"))
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument(
        "--lesson",
        default="web-and-data-tiers",
        help="a lesson id (default: stage 2, 7 nodes including a redis-server and a SQL database)",
    )
    ap.add_argument("--kill-every", type=int, default=0, metavar="K", help="SIGKILL the lab's host every K-th cycle")
    ap.add_argument(
        "--kill",
        choices=("pool", "worker", "alternate"),
        default="alternate",
        help="what --kill-every kills: the pool process, the whole worker, or each in turn",
    )
    ap.add_argument(
        "--final-wait", type=float, default=20.0, help="seconds to wait for the killed lab's final status on the page"
    )
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before each count")
    ap.add_argument("--step-timeout", type=float, default=60.0, help="bound on start → running")
    ap.add_argument("--max-failures", type=int, default=5, help="give up after this many failed cycles in a row")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--log", type=Path, default=None, help="a directory to keep the worker's and daphne's logs in")
    args = ap.parse_args()
    t0 = time.monotonic()
    with redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="soak-bench-") as tmp:
        try:
            with run_stack(Path(tmp), redis_url, web=True, slots=1, idle_seconds=600) as stack:
                print(
                    f"stack up in {time.monotonic() - t0:.1f} s: daphne {stack.url}, worker pid {stack.worker.pid}",
                    flush=True,
                )
                summary = asyncio.run(run(stack, args))
        finally:
            if args.log:
                args.log.mkdir(parents=True, exist_ok=True)
                for name in ("worker.log", "daphne.log"):
                    with contextlib.suppress(OSError):
                        (args.log / name).write_text((Path(tmp) / name).read_text(errors="replace"))
        seen: Seen = summary.pop("_seen")
        fd_series = summary.pop("_fd_series")
        # Whatever outlived its worker is the bench's to end (it was counted above).
        for (pid, created), _ in seen.procs.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.create_time() == created:
                    p.kill()
    ok = report(summary)
    if args.json:
        args.json.write_text(json.dumps({**summary, "fds_after_each_cycle_all": fd_series}, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
