"""A room of N participants on one machine, through a real workshop: the full stack (daphne,
core.workers, Redis), an instructor and N browser-like students, each in its own session.

Per N and per hot-pool setting (a fresh stack each, LAB_PROCESSES workers with slots for the room
and its pool): an instructor logs in (the admin's log-in form), creates a workshop of the stage
with the room's size as its cap and the pool size asked, opens it (its hot pool starts; the bench
waits for the pool to run, as a room arrives after its instructor), and opens the control room,
whose grid it then polls every 2 s (static/js/workshop-grid.js). The N participants arrive at
random instants within --join-over: each opens the join link, posts the join form (code, nickname,
CSRF token) and follows its redirect to the stage page, polls /workshop/live/ every 4 s from then
on (static/js/workshop.js), opens the lab WebSocket and presses Start.

Measured: labs running; join -> running (the join form posted to the "running" status, the
redirect, the stage page and the socket included) and Start -> running (the click alone), p50/p95,
and how many starts the pool served; then, with every lab running (and, unless --broadcast '' , a
harmless fault broadcast so that the grid reads every lab's history, as it does after the lesson's
big moment), a --seconds window: frames/s per lab (the slowest lab's), event -> browser p50/p95
(arrival of a frame's request sample - the request's completion, as stack_bench) and frame lag p95
(arrival - frame ``t``), stage page load p95 (each participant reloads its stage page
--page-loads times in the window), the live poll's and the grid poll's p95 (the polls answered in
the window), RSS (peak) and CPU of the workers' process tree and of the whole product tree
(workers + daphne + redis-server), by psutil. The bench's own clients share the machine: their
CPU is shown too. At the end the instructor ends the workshop (which stops every lab and the pool).

Run: .venv/bin/python -m bench.room_bench --participants 10 25 50 75   (starts its own stack)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.quiet import stack_output
from bench.stack_bench import Client, lab_start_running, pct, redis_server
from tests.stack import Stack, run_stack

SLUG = "single-server"
LIVE_POLL_S = 4.0  # static/js/workshop.js
GRID_POLL_S = 2.0  # static/js/workshop-grid.js
INSTRUCTOR = ("instructor", "Room-bench-2026")
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
CODE = re.compile(r'data-testid="join-code-big">([^<]+)<')
HEADER = ("| N | pool | processes x slots | labs running | join -> running p50 / p95 ms "
          "| start -> running p50 / p95 ms | from the pool | frames/s per lab min | event->browser p50 / p95 ms "
          "| frame lag p95 ms | page load p95 ms "
          "| live poll p95 ms | grid poll p95 ms | workers RSS MB idle / with labs (per lab) | all RSS MB "
          "| workers CPU % | all CPU % | bench CPU % |")


@dataclass
class Participant:
    index: int
    join_ms: float | None = None  # the join form posted -> the lab's "running" status
    start_ms: float | None = None  # Start -> "running"
    error: str = ""
    lab: str = ""
    frames: int = 0
    events_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    page_ms: list[float] = field(default_factory=list)
    live: list[tuple[float, float]] = field(default_factory=list)  # (answered at, ms) of every live poll

    @property
    def nickname(self) -> str:
        return f"student-{self.index:03d}"


@dataclass
class Room:
    """The workshop as its instructor's browser holds it."""

    http: aiohttp.ClientSession
    base: str
    pk: int = 0
    code: str = ""
    pool: int = 0
    grid: list[tuple[float, float]] = field(default_factory=list)  # (answered at, ms) of every grid poll
    grid_rows: int = 0
    grid_histories: int = 0  # labs whose history the last grid answer read (the last broadcast's)


# HTTP as a browser does it ---------------------------------------------------------------------
async def page(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:
        text = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {resp.status}")
        return text


def csrf_of(html: str, url: str) -> str:
    m = CSRF.search(html)
    if m is None:
        raise RuntimeError(f"no CSRF token in {url}")
    return m.group(1)


async def form_post(http: aiohttp.ClientSession, base: str, url: str, data: dict[str, str]) -> tuple[str, str]:
    """Post a form as the browser would (its Origin, the page's CSRF token in ``data``), follow the
    redirect; the final page's path and text. Anything but a 200 at the end is an error."""
    async with http.post(url, data=data, headers={"Origin": base, "Referer": url}) as resp:
        text = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"POST {url}: HTTP {resp.status}")
        return resp.url.path, text


async def poll(http: aiohttp.ClientSession, url: str, every: float, into: list[tuple[float, float]],
               check: Callable[[Any], None], stop: asyncio.Event) -> None:
    """GET ``url`` ``every`` s after the last answer (setTimeout in the page's script), until ``stop``."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
            return
        t0 = time.perf_counter()
        async with http.get(url) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"poll {url}: HTTP {resp.status}")
        into.append((time.time(), (time.perf_counter() - t0) * 1000))
        check(json.loads(body))


# The instructor ----------------------------------------------------------------------------------
async def room_open(room: Room, *, lesson_pk: int, cap: int, pool: str) -> None:
    """Log in, create the workshop (pool "room": the field left blank, sized to the room), open it."""
    http, base = room.http, room.base
    login = f"{base}/admin/login/?next=/workshops/"
    path, html = await form_post(http, base, login, {
        "username": INSTRUCTOR[0], "password": INSTRUCTOR[1], "next": "/workshops/",
        "csrfmiddlewaretoken": csrf_of(await page(http, login), login)})
    if path != "/workshops/":
        raise RuntimeError(f"the instructor's log-in ended on {path}")
    path, html = await form_post(http, base, f"{base}/workshops/", {
        "title": f"room_bench {cap}", "lessons": str(lesson_pk), "cap": str(cap), "hours": "3",
        "pool_size": "" if pool == "room" else pool, "csrfmiddlewaretoken": csrf_of(html, "/workshops/")})
    m = re.fullmatch(r"/workshops/(\d+)/", path)
    if m is None:
        raise RuntimeError(f"creating the workshop ended on {path}")
    room.pk = int(m.group(1))
    url = f"{base}/workshops/{room.pk}/"
    _, html = await form_post(http, base, url, {"do": "open", "csrfmiddlewaretoken": csrf_of(html, url)})
    if 'data-testid="workshop-state">Open<' not in html or (code := CODE.search(html)) is None:
        raise RuntimeError("the workshop did not open")
    room.code = code.group(1).strip()


async def room_broadcast(room: Room, node: str) -> int:
    """A fault for every lab that changes nothing ("slow NODE by 0 ms"), so that the grid then reads
    every lab's history on each poll (workshops.broadcast_recovery), as after a real one; how many
    labs it reached."""
    url = f"{room.base}/workshops/{room.pk}/"
    _, html = await form_post(room.http, room.base, url, {
        "do": "broadcast", "action": "slow", "node": node, "ms": "0", "label": "room_bench",
        "csrfmiddlewaretoken": csrf_of(await page(room.http, url), url)})
    sent = re.search(r"Sent to (\d+) labs", html)
    if sent is None:
        raise RuntimeError("the broadcast was not sent")
    return int(sent.group(1))


async def room_end(room: Room) -> tuple[float, str]:
    """The instructor's End: ms taken, and what the page said."""
    url = f"{room.base}/workshops/{room.pk}/"
    token = csrf_of(await page(room.http, url), url)
    t0 = time.perf_counter()
    _, html = await form_post(room.http, room.base, url, {"do": "end", "csrfmiddlewaretoken": token})
    ms = (time.perf_counter() - t0) * 1000
    said = re.search(r'data-testid="control-message">([^<]+)<', html)
    return ms, said.group(1) if said else ""


# A participant -----------------------------------------------------------------------------------
async def participant(p: Participant, base: str, code: str, slug: str, join_at: float, window: dict[str, float],
                      outcome: asyncio.Event, go: asyncio.Event, done: asyncio.Event, page_loads: int) -> None:
    await asyncio.sleep(max(0.0, join_at - time.monotonic()))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP host's cookies
        client: Client | None = None
        live: asyncio.Task[None] | None = None
        try:
            link = f"{base}/join/{code}/"  # the join link (the QR code's): the code is filled in
            data = {"code": code, "nickname": p.nickname, "csrfmiddlewaretoken": csrf_of(await page(http, link), link)}
            t_join = time.perf_counter()
            path, _ = await form_post(http, base, link, data)  # -> the first stage's page
            if path != f"/stage/{slug}/":
                raise RuntimeError(f"the join ended on {path}")

            def joined(answer: Any) -> None:
                if not (answer.get("workshop") or {}).get("code") == code:
                    raise RuntimeError(f"the live poll does not see the workshop: {answer}")

            live = asyncio.create_task(poll(http, f"{base}/workshop/live/", LIVE_POLL_S, p.live, joined, done))
            ws = await http.ws_connect(base.replace("http://", "ws://") + f"/ws/lab/{slug}/",
                                       headers={"Origin": base}, max_msg_size=0)
            client = Client(ws)
            client.start()
            if (hello := await client.next()).msg.get("type") != "hello":
                raise RuntimeError(f"no hello: {hello.msg}")
            started = await lab_start_running(client)
            p.join_ms = (time.perf_counter() - t_join) * 1000
            p.start_ms, p.lab = started["click_running_ms"], started["lab"]
        except Exception as exc:
            p.error = f"join/start: {exc!r}"
        finally:
            outcome.set()  # counted by the caller: this participant has an outcome
        try:
            if p.error or client is None:
                return
            await go.wait()
            client.drain()
            loads = [window["start"] + (k + random.random()) * window["seconds"] / page_loads
                     for k in range(page_loads)]
            pages = asyncio.create_task(page_load_times(http, f"{base}/stage/{slug}/", loads, p))
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
            if live is not None and live.done():
                live.result()  # a poll that failed says why
        except Exception as exc:
            p.error = p.error or f"run: {exc!r}"
        finally:
            if live is not None:
                live.cancel()
            if client is not None:
                if client.reader:
                    client.reader.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.ws.close(), 5)


async def page_load_times(http: aiohttp.ClientSession, url: str, at: list[float], p: Participant) -> None:
    for when in at:  # wall-clock instants within the window
        await asyncio.sleep(max(0.0, when - time.time()))
        t0 = time.perf_counter()
        await page(http, url)  # the whole response read
        p.page_ms.append((time.perf_counter() - t0) * 1000)


# The stack's side --------------------------------------------------------------------------------
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


def db_count(stack: Stack, where: str, *params: object) -> int:
    with sqlite3.connect(stack.db_path) as db:
        return db.execute(f"select count(*) from visualizer_lab where {where}", params).fetchone()[0]


def live_labs(stack: Stack) -> int:
    return db_count(stack, "state in ('queued', 'starting', 'running')")


def claimed_from_pool(stack: Stack, lab_ids: list[str]) -> set[str]:
    """Which of these labs a claim served: a pool lab is older than its participant's join."""
    with sqlite3.connect(stack.db_path) as db:
        rows = db.execute("select l.id from visualizer_lab l join visualizer_participant p "
                          "on p.session_key = l.session_key where l.created < p.joined").fetchall()
    return {i for i in lab_ids if i.replace("-", "") in {r[0] for r in rows}}


def labs_gone(stack: Stack, lab_ids: list[str]) -> list[str]:
    """Of these labs (each ran once), those no longer live: their row's state and last status."""
    with sqlite3.connect(stack.db_path) as db:
        states = dict(db.execute("select id, state from visualizer_lab").fetchall())
    gone = []
    for lab_id in lab_ids:
        state = states.get(lab_id.replace("-", ""))
        if state not in ("queued", "starting", "running"):
            status = stack.status(lab_id)
            gone.append(f"lab {lab_id[:8]} {state}: {status.get('state')} {status.get('message', '')}".strip())
    return gone


async def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.2)


async def guarded(task: Awaitable[None], what: str, errors: list[str]) -> None:
    try:
        await task
    except Exception as exc:
        errors.append(f"{what}: {exc!r}")


async def room(stack: Stack, redis_pid: int, n: int, pool: str, lesson_pk: int,
               args: argparse.Namespace) -> dict[str, Any]:
    workers, everything = product_tree(stack, redis_pid)
    idle_workers_mb = rss_mb(workers)
    errors: list[str] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as instructor:
        r = Room(instructor, stack.url)
        await room_open(r, lesson_pk=lesson_pk, cap=n, pool=pool)
        with sqlite3.connect(stack.db_path) as db:
            r.pool = db.execute("select pool_size from visualizer_workshop where id = ?", (r.pk,)).fetchone()[0]
        # The instructor opens the room before the students arrive: its pool is running by then.
        await wait_until(lambda: db_count(stack, "pool = ? and state = 'running'", f"workshop-{r.pk}") >= r.pool,
                         120, "the hot pool to run")
        grid_stop = asyncio.Event()

        def grid_seen(answer: Any) -> None:
            r.grid_rows = len(answer["rows"])
            r.grid_histories = len((answer.get("broadcast") or {}).get("labs", {}))

        await page(instructor, f"{stack.url}/workshops/{r.pk}/")  # the control room, whose script polls the grid
        grid = asyncio.create_task(guarded(poll(instructor, f"{stack.url}/workshops/{r.pk}/grid/?lesson={args.slug}",
                                                GRID_POLL_S, r.grid, grid_seen, grid_stop), "grid", errors))

        people = [Participant(i) for i in range(n)]
        window = {"start": 0.0, "seconds": args.seconds}
        outcomes = [asyncio.Event() for _ in people]
        go, done = asyncio.Event(), asyncio.Event()
        t0 = time.monotonic()
        joins = sorted(t0 + random.uniform(0, args.join_over) for _ in people)
        tasks = [asyncio.create_task(participant(p, stack.url, r.code, args.slug, at, window, ev, go, done,
                                                 args.page_loads))
                 for p, at, ev in zip(people, joins, outcomes, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in outcomes)), args.join_over + 120)
        broadcast = await room_broadcast(r, args.broadcast) if args.broadcast else 0
        await asyncio.sleep(args.settle)
        labs = live_labs(stack)
        errors += [f"before the window, {gone}" for gone in labs_gone(stack, [p.lab for p in people if p.lab])]
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
        window_end = time.time()
        worker_pids = {p.pid for p in workers}
        grid_stop.set()
        done.set()
        await asyncio.wait_for(asyncio.gather(*tasks, grid, return_exceptions=True), 120)
        served = claimed_from_pool(stack, [p.lab for p in people if p.lab])
        end_ms, end_said = await room_end(r)

    def in_window(samples: list[tuple[float, float]]) -> list[float]:
        return [ms for at, ms in samples if window["start"] <= at <= window_end]

    ok = [p for p in people if not p.error]
    joined = [p.join_ms for p in people if p.join_ms is not None]
    hot = [p.join_ms for p in people if p.join_ms is not None and p.lab in served]
    cold = [p.join_ms for p in people if p.join_ms is not None and p.lab not in served]
    starts = [p.start_ms for p in people if p.start_ms is not None]
    events = [x for p in ok for x in p.events_ms]
    return {
        "n": n, "pool": r.pool, "pool_asked": pool, "labs": labs, "running": len(starts), "served": len(served),
        "broadcast": broadcast,
        "errors": errors + [p.error for p in people if p.error],
        "join_p50": statistics.median(joined) if joined else math.nan, "join_p95": pct(joined, 0.95),
        "start_p50": statistics.median(starts) if starts else math.nan, "start_p95": pct(starts, 0.95),
        "fps_min": min((p.frames / args.seconds for p in ok), default=math.nan),
        "event_p50": pct(events, 0.5), "event_p95": pct(events, 0.95),
        "lag_p95": pct([x for p in ok for x in p.lag_ms], 0.95),
        "page_p95": pct([x for p in ok for x in p.page_ms], 0.95),
        "live_p95": pct([x for p in people for x in in_window(p.live)], 0.95),
        "live_polls": len([x for p in people for x in in_window(p.live)]),
        "grid_p95": pct(in_window(r.grid), 0.95), "grid_polls": len(in_window(r.grid)), "grid_rows": r.grid_rows,
        "grid_histories": r.grid_histories,
        "workers_mb": peak_workers, "idle_workers_mb": idle_workers_mb, "all_mb": peak_all,
        "workers_cpu": cpu_pct({k: v for k, v in cpu0.items() if k in worker_pids}, cpu1, args.seconds),
        "all_cpu": cpu_pct(cpu0, cpu1, args.seconds), "bench_cpu": cpu_pct(bench0, bench1, args.seconds),
        "end_ms": end_ms, "end_said": end_said,
        "join_hot_p50": statistics.median(hot) if hot else math.nan,
        "join_cold_p50": statistics.median(cold) if cold else math.nan,
        "join_ms": joined, "start_ms": starts,
    }


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def row(r: dict[str, Any], processes: int, slots: int) -> str:
    cells = [
        r["n"], f"{r['pool']} (room)" if r["pool_asked"] == "room" else r["pool"], f"{processes} x {slots}",
        f"{r['running']}/{r['n']}",
        f"{r['join_p50']:.0f} / {r['join_p95']:.0f}", f"{r['start_p50']:.0f} / {r['start_p95']:.0f}",
        f"{r['served']}/{r['running']}", f"{r['fps_min']:.2f}", f"{r['event_p50']:.0f} / {r['event_p95']:.0f}",
        f"{r['lag_p95']:.0f}", f"{r['page_p95']:.0f}", f"{r['live_p95']:.0f}", f"{r['grid_p95']:.0f}",
        f"{r['idle_workers_mb']:.0f} / {r['workers_mb']:.0f} ({r['workers_mb'] / max(1, r['labs']):.1f})",
        f"{r['all_mb']:.0f}", f"{r['workers_cpu']:.0f}", f"{r['all_cpu']:.0f}", f"{r['bench_cpu']:.0f}",
    ]
    return "| " + " | ".join(map(str, cells)) + " |"


def pool_size(pool: str, n: int) -> int:
    """The pool a workshop of ``n`` gets: ``pool`` labs, or for "room" what the blank field gives."""
    if pool != "room":
        return int(pool)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    import django

    django.setup()
    from visualizer.workshops import workshop_pool_size

    return workshop_pool_size(cap=n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[10, 25, 50, 75])
    parser.add_argument("--pool", nargs="+", default=["0", "room"],
                        help="the workshop's hot pool, each N run once per value: a size (0: no hot start) "
                             "or 'room' (the form's field left blank: WORKSHOP_POOL_SHARE of N, at most "
                             "WORKSHOP_POOL_MAX)")
    parser.add_argument("--slug", default=SLUG, help="the workshop's stage")
    parser.add_argument("--seconds", type=float, default=30.0, help="the measured window, all labs running")
    parser.add_argument("--join-over", type=float, default=5.0, help="participants join within this many s")
    parser.add_argument("--settle", type=float, default=2.0, help="wait after the last lab runs")
    parser.add_argument("--page-loads", type=int, default=3, help="stage page reloads per participant in the window")
    parser.add_argument("--broadcast", default="web", metavar="NODE",
                        help="before the window, broadcast 'slow NODE by 0 ms' so the grid reads every lab's "
                             "history ('' for no broadcast)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="LAB_PROCESSES")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--verbose", action="store_true", help="show the workers' and daphne's output")
    args = parser.parse_args()
    for pool in args.pool:
        if pool != "room" and not pool.isdigit():
            parser.error(f"--pool: {pool!r} is neither a size nor 'room'")
    print(f"room_bench: {args.slug}, {args.seconds:g} s window, joins over {args.join_over:g} s, "
          f"{args.page_loads} page loads each, broadcast {args.broadcast or 'none'}, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(HEADER)
    print("|" + "---|" * HEADER.count(" |"))
    results = []
    for n in args.participants:
        for pool in args.pool:
            # Slots for the room and its pool: each claim starts a replacement, so N + pool labs run.
            slots = math.ceil((n + pool_size(pool, n)) / args.processes)
            with redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="room-bench-") as tmp:
                redis_pid = next(p.pid for p in psutil.Process().children()
                                 if p.name().startswith("redis-server"))
                with stack_output(Path(tmp) / "stack.log", verbose=args.verbose) as table:
                    with run_stack(Path(tmp), redis_url, web=True, slots=slots, processes=args.processes,
                                   idle_seconds=3600) as stack:
                        lesson_pk = int(stack.shell(
                            "from django.contrib.auth.models import User\nfrom lessons.models import Lesson\n"
                            f"User.objects.create_superuser('{INSTRUCTOR[0]}', '', '{INSTRUCTOR[1]}')\n"
                            f"print(Lesson.objects.get(slug='{args.slug}').pk)").splitlines()[-1])
                        r = asyncio.run(room(stack, redis_pid, n, pool, lesson_pk, args))
                    print(row(r, args.processes, slots), file=table)
                    print(f"  (join -> running p50 {ms(r['join_hot_p50'])} ms served by the pool, "
                          f"{ms(r['join_cold_p50'])} ms started; {r['labs']} labs live; the broadcast reached "
                          f"{r['broadcast']}; {r['live_polls']} live polls and {r['grid_polls']} grid polls of "
                          f"{r['grid_rows']} rows and {r['grid_histories']} labs' histories in the window; "
                          f"End: {r['end_ms']:.0f} ms, \"{r['end_said']}\")",
                          file=table)
                    for error in sorted(set(r["errors"]))[:5]:
                        print(f"  ({r['errors'].count(error)} participant(s)) {error}", file=table)
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
