"""Faults of the app itself, through the real stack: a page's socket on daphne, a Celery worker.

A Redis restart leaves no lab silently dead (the running one carries on, the queued one still
runs); a SIGKILLed worker's labs (every lab its process hosted) are recorded lost within seconds,
their pages are told, the other process's labs run on, and the students can start again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.engine import keys
from tests.stack import RestartableRedis, Stack, run_stack, wait_for
from tests.visualizer.test_worker import FIXTURE, on_network, owners

pytestmark = pytest.mark.slow
LOST_WITHIN_S = 15  # heartbeat TTL (5 s) + the socket's watch (2 s) + a loaded machine's slack


class PageSocket:
    """The lab WebSocket of one browser session, as the page's JavaScript opens it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, command: dict[str, Any]) -> None:
        await self.ws.send_json(command)

    async def until(self, type_: str, timeout: float = 30.0, where=lambda m: True, **match: Any) -> dict:
        """The next message of this type (and fields) within ``timeout``; others are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.ws.receive_json()
                if message["type"] == type_ and all(message.get(k) == v for k, v in match.items()) \
                        and where(message):
                    return message


@contextlib.asynccontextmanager
async def page(stack: Stack, slug: str = "fixture-single") -> AsyncIterator[PageSocket]:
    """Load the stage page (which makes the session cookie), then open its socket."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{stack.url}/stage/{slug}/") as response:
            assert response.status == 200
        ws = await http.ws_connect(f"ws{stack.url[4:]}/ws/lab/{slug}/", origin=stack.url)
        socket = PageSocket(ws)
        try:
            assert (await socket.until("hello", timeout=10))["lesson"] == slug
            yield socket
        finally:
            await ws.close()


@pytest.fixture
def restartable_stack(tmp_path: Path, own_redis: RestartableRedis) -> Iterator[Stack]:
    with run_stack(tmp_path, own_redis.url, lessons=[FIXTURE], web=True, slots=1) as stack:
        yield stack


@pytest.fixture
def web_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with run_stack(tmp_path, redis_url, lessons=[FIXTURE], web=True, slots=1, redis_db=3) as stack:
        yield stack


async def test_a_restarted_redis_leaves_no_lab_silently_dead(restartable_stack: Stack,
                                                             own_redis: RestartableRedis) -> None:
    stack = restartable_stack
    async with page(stack) as alice, page(stack) as bob:
        await alice.send({"action": "start"})
        lab = (await alice.until("status", state="running"))["lab"]
        await bob.send({"action": "start"})  # the only slot is alice's: bob waits
        queued = (await bob.until("status", state="queued"))["lab"]
        seq = (await alice.until("frame"))["seq"]

        own_redis.kill()
        await asyncio.sleep(2.0)
        own_redis.start()  # empty: statuses, heartbeats and bob's broker message are gone

        # Alice's lab carries on: frames reach her page again, and a command works.
        await alice.until("frame", where=lambda m: m["seq"] > seq)
        deadline = time.monotonic() + 20
        while True:
            await alice.send({"action": "kill", "node": "web"})
            with contextlib.suppress(TimeoutError):
                await alice.until("frame", timeout=2, where=lambda m: not m["nodes"]["web"]["up"])
                break
            assert time.monotonic() < deadline, "the lab never obeyed a command after the restart"
        assert stack.lab_state(lab) == "running"

        # Bob's lab was enqueued again (his page noticed Redis had lost it) and runs once the slot frees.
        await bob.until("status", state="queued", lab=queued)
        await alice.send({"action": "stop"})
        await bob.until("status", timeout=60, state="running", lab=queued)
        # The row follows the engine's status (the worker records it from its own thread).
        wait_for(lambda: stack.lab_state(queued) == "running", 10, "bob's lab to be recorded running")
        wait_for(lambda: stack.lab_state(lab) == "stopped", 15, "alice's lab to be recorded stopped")
        await bob.send({"action": "stop"})


@pytest.fixture
def room_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with run_stack(tmp_path, redis_url, lessons=[FIXTURE], web=True, slots=3, redis_db=3) as stack:
        yield stack


@pytest.fixture
def two_process_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with run_stack(tmp_path, redis_url, lessons=[FIXTURE], web=True, slots=1, processes=2, redis_db=3) as stack:
        yield stack


def host_pid(stack: Stack, lab: str) -> int:
    """The worker process hosting the lab: the pid its heartbeat carries."""
    return int(stack.redis.get(keys.heartbeat_key(lab)))


def network_of(running: dict) -> str:
    return running["nodes"]["web"]["address"].rsplit(".", 1)[0]


async def frames(socket: PageSocket, lab: str, count: int) -> list[dict]:
    return [await socket.until("frame", timeout=5, lab=lab) for _ in range(count)]


async def test_one_worker_process_hosts_three_labs_at_once_and_every_page_gets_its_frames(room_stack: Stack) -> None:
    stack = room_stack
    [worker] = stack.pool()
    async with page(stack) as a, page(stack) as b, page(stack) as c:
        pages = [a, b, c]
        for p in pages:
            await p.send({"action": "start"})
        running = [await p.until("status", state="running") for p in pages]
        labs = [r["lab"] for r in running]
        assert len(set(labs)) == 3
        assert {host_pid(stack, lab) for lab in labs} == {worker.pid}
        for r in running:  # every lab's sockets belong to that one process
            assert owners(network_of(r)) == {worker.pid}
        # All three tick at once: each page gets its own lab's frames, 4 a second.
        began = time.monotonic()
        got = await asyncio.gather(*(frames(p, lab, 8) for p, lab in zip(pages, labs, strict=True)))
        assert time.monotonic() - began < 4
        for lab_frames in got:
            seqs = [f["seq"] for f in lab_frames]
            assert seqs == sorted(seqs) and len(set(seqs)) == 8

        await a.send({"action": "stop"})  # one stops; its siblings carry on
        wait_for(lambda: not on_network(network_of(running[0])), 10, "the stopped lab's sockets to close")
        await asyncio.gather(frames(b, labs[1], 4), frames(c, labs[2], 4))
        assert [p.pid for p in stack.pool()] == [worker.pid]
        for p in (b, c):
            await p.send({"action": "stop"})


async def test_a_sigkilled_worker_process_loses_every_lab_it_hosted_and_students_start_again(
        room_stack: Stack) -> None:
    stack = room_stack
    [worker] = stack.pool()
    async with page(stack) as alice, page(stack) as bob:
        for p in (alice, bob):
            await p.send({"action": "start"})
        labs = [(await p.until("status", state="running"))["lab"] for p in (alice, bob)]
        assert {host_pid(stack, lab) for lab in labs} == {worker.pid}
        worker.send_signal(signal.SIGKILL)  # as the OOM killer would
        killed = time.monotonic()
        for p, lab in zip((alice, bob), labs, strict=True):
            lost = await p.until("status", timeout=LOST_WITHIN_S + 5, state="lost", lab=lab)
            assert lost["message"] == "lost: the worker hosting this lab stopped; start again"
        assert time.monotonic() - killed < LOST_WITHIN_S
        assert [stack.lab_state(lab) for lab in labs] == ["failed", "failed"]

        await alice.send({"action": "kill", "node": "web"})
        assert (await alice.until("error"))["message"] == "lab is not running"
        await alice.send({"action": "start"})  # core.workers started a new worker process
        again = await alice.until("status", timeout=60, state="running")
        assert again["lab"] not in labs
        assert host_pid(stack, again["lab"]) != worker.pid
        await alice.send({"action": "stop"})


async def test_a_killed_worker_process_spares_the_labs_of_the_other(two_process_stack: Stack) -> None:
    stack = two_process_stack
    async with page(stack) as alice, page(stack) as bob:
        for p in (alice, bob):
            await p.send({"action": "start"})
        # One slot each: bob's lab runs in the other process, not queued behind alice's (prefetch off).
        labs = [(await p.until("status", timeout=30, state="running"))["lab"] for p in (alice, bob)]
        hosts = [host_pid(stack, lab) for lab in labs]
        assert sorted(hosts) == sorted(p.pid for p in stack.pool())
        os.kill(hosts[0], signal.SIGKILL)
        await alice.until("status", timeout=LOST_WITHIN_S + 5, state="lost", lab=labs[0])
        await frames(bob, labs[1], 4)  # bob's lab never noticed
        wait_for(lambda: stack.lab_state(labs[1]) == "running", 10, "bob's lab to be recorded running")
        await bob.send({"action": "stop"})


async def test_a_worker_shutdown_stops_its_labs_at_once_and_their_pages_say_lost(web_stack: Stack) -> None:
    stack = web_stack
    async with page(stack) as alice:
        await alice.send({"action": "start"})
        running = await alice.until("status", state="running")
        assert stack.worker is not None
        stack.worker.send_signal(signal.SIGTERM)  # honcho's, on Ctrl-C: a warm shutdown
        began = time.monotonic()
        await alice.until("status", timeout=10, state="lost", lab=running["lab"])
        wait_for(lambda: not on_network(network_of(running)), 10, "the lab's sockets to close")
        stack.worker.wait(timeout=15)  # it did not wait for the lab's two-hour limit
        assert time.monotonic() - began < 15
        assert stack.lab_state(running["lab"]) == "failed"


async def test_a_sigkilled_worker_takes_its_labs_down_and_they_are_recorded_lost(web_stack: Stack) -> None:
    stack = web_stack
    async with page(stack) as alice:
        await alice.send({"action": "start"})
        running = await alice.until("status", state="running")
        lab, network = running["lab"], running["nodes"]["web"]["address"].rsplit(".", 1)[0]
        assert stack.worker is not None
        os.kill(stack.worker.pid, signal.SIGKILL)  # core.workers: its worker processes die with it
        killed = time.monotonic()
        await alice.until("status", timeout=LOST_WITHIN_S + 5, state="lost", lab=lab)
        assert time.monotonic() - killed < LOST_WITHIN_S
        assert stack.lab_state(lab) == "failed"
        wait_for(lambda: not on_network(network), 15, f"every socket on {network} to close")
        assert not stack.redis.exists(keys.heartbeat_key(lab))

        await alice.send({"action": "start"})  # at once: it waits for a worker to come back
        assert (await alice.until("status", state="queued"))["lab"] != lab
