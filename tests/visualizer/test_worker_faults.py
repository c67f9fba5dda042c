"""Faults of the app itself, through the real stack: a page's socket on daphne, a Celery worker.

A Redis restart leaves no lab silently dead (the running one carries on, the queued one still
runs); a SIGKILLed worker's lab is recorded lost within seconds, the page is told, and the student
can start again.
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
import psutil
import pytest

from core.engine import keys
from tests.stack import RestartableRedis, Stack, run_stack, wait_for
from tests.visualizer.test_worker import FIXTURE, on_network

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
def own_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    yield server
    server.kill()


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
        assert stack.lab_state(queued) == "running"
        wait_for(lambda: stack.lab_state(lab) == "stopped", 15, "alice's lab to be recorded stopped")
        await bob.send({"action": "stop"})


def pool_lab_running(stack: Stack) -> psutil.Process:
    [child] = stack.pool()
    return child


async def test_a_sigkilled_pool_process_leaves_its_lab_lost_and_the_student_starts_again(web_stack: Stack) -> None:
    stack = web_stack
    async with page(stack) as alice:
        await alice.send({"action": "start"})
        lab = (await alice.until("status", state="running"))["lab"]
        pool_lab_running(stack).send_signal(signal.SIGKILL)  # as the OOM killer would
        killed = time.monotonic()
        lost = await alice.until("status", timeout=LOST_WITHIN_S + 5, state="lost", lab=lab)
        assert time.monotonic() - killed < LOST_WITHIN_S
        assert lost["message"] == "lost: the worker hosting this lab stopped; start again"
        assert stack.lab_state(lab) == "failed"

        await alice.send({"action": "kill", "node": "web"})
        assert (await alice.until("error"))["message"] == "lab is not running"
        await alice.send({"action": "start"})  # the worker replaced its pool process
        again = await alice.until("status", state="running")
        assert again["lab"] != lab
        await alice.send({"action": "stop"})


async def test_a_sigkilled_worker_takes_its_labs_down_and_they_are_recorded_lost(web_stack: Stack) -> None:
    stack = web_stack
    async with page(stack) as alice:
        await alice.send({"action": "start"})
        running = await alice.until("status", state="running")
        lab, network = running["lab"], running["nodes"]["web"]["address"].rsplit(".", 1)[0]
        assert stack.worker is not None
        os.kill(stack.worker.pid, signal.SIGKILL)  # the whole worker: its pool processes die with it
        killed = time.monotonic()
        await alice.until("status", timeout=LOST_WITHIN_S + 5, state="lost", lab=lab)
        assert time.monotonic() - killed < LOST_WITHIN_S
        assert stack.lab_state(lab) == "failed"
        wait_for(lambda: not on_network(network), 15, f"every socket on {network} to close")
        assert not stack.redis.exists(keys.heartbeat_key(lab))

        await alice.send({"action": "start"})  # at once: it waits for a worker to come back
        assert (await alice.until("status", state="queued"))["lab"] != lab
