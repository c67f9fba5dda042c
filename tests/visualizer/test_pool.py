"""A workshop's hot pool on the real stack: a worker, daphne, Redis and a WebSocket client.

The pool serves a start and refills; two claims never share a lab; a drain leaves nothing behind;
a pool lab outlives the idle timeout that stops an unwatched ordinary lab.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from core.engine import keys
from tests.stack import Stack, run_stack, wait_for
from tests.visualizer.test_worker import lab_start, on_network

FIXTURE = Path(__file__).parent / "fixtures" / "pool.md"
SLUG = "fixture-pool"
POOL = "test-pool"
IDLE_S = 3

pytestmark = pytest.mark.slow


def pool_call(stack: Stack, call: str) -> str:
    """Call visualizer.pool in a process of the stack's; its last printed line."""
    return stack.shell(
        "from lessons.models import Lesson\n"
        "from visualizer import pool\n"
        f"lesson = Lesson.objects.get(slug='{SLUG}')\n"
        f"print(pool.{call})"
    ).splitlines()[-1]


def rows(stack: Stack, where: str = "1") -> list[dict]:
    with sqlite3.connect(stack.db_path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"select * from visualizer_lab where {where}")]


def lab_id(row: dict) -> str:
    hex_ = row["id"]
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


def waiting_running(stack: Stack) -> list[str]:
    """The pool's unclaimed labs whose engine says running."""
    ids = [lab_id(r) for r in rows(stack, f"pool = '{POOL}' and state in ('queued', 'starting', 'running')")]
    return [i for i in ids if stack.status(i).get("state") == "running"]


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with run_stack(tmp_path, redis_url, lessons=[FIXTURE], web=True, slots=4, idle_seconds=IDLE_S,
                   asgi="tests.visualizer.pool_asgi:application") as stack:
        yield stack


async def student_start(base: str, pool: str | None) -> dict:
    """A student's page: its session, socket and start; what it received, and when."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/stage/{SLUG}/") as resp:
            assert resp.status == 200
        session = {c.key: c.value for c in http.cookie_jar}["sessionid"]
        query = f"?pool={pool}" if pool else ""
        ws = await http.ws_connect(f"{base.replace('http', 'ws')}/ws/lab/{SLUG}/{query}", headers={"Origin": base})
        try:
            hello = json.loads((await ws.receive(timeout=5)).data)
            assert hello["type"] == "hello" and hello["progress"] == {}
            t0 = time.monotonic()
            await ws.send_str(json.dumps({"action": "start"}))
            seen: dict = {"session": session}
            while "check:start" not in seen or "frame" not in seen:
                message = json.loads((await ws.receive(timeout=10)).data)
                at = time.monotonic() - t0
                assert message["type"] != "error", message
                kind = message["type"] + (f":{message['step']}" if message["type"] == "check" else "")
                seen.setdefault(kind, (at, message))
            for _ in range(20):  # the page records progress as it forwards the check: give it a moment
                await asyncio.sleep(0.1)
            await ws.send_str(json.dumps({"action": "stop"}))
            await asyncio.sleep(0.5)
            return seen
        finally:
            await ws.close()


def test_the_pool_serves_a_start_and_refills(stack: Stack) -> None:
    assert pool_call(stack, f"pool_fill(pool='{POOL}', lesson=lesson, size=2)") == "2"
    assert pool_call(stack, f"pool_fill(pool='{POOL}', lesson=lesson, size=2)") == "0"  # already full
    ordinary, _ = lab_start(stack, "nobody-watches", SLUG)
    pool_ids = set(wait_for(lambda: len(ids := waiting_running(stack)) == 2 and ids, 60, "the pool to run"))
    assert all(r["session_key"].startswith("pool-") for r in rows(stack, f"pool = '{POOL}'"))

    # Unwatched, the ordinary lab stops for idleness; the pool's labs do not.
    wait_for(lambda: stack.lab_state(ordinary) == "stopped", 30, "the unwatched lab to stop for idleness")
    assert stack.status(ordinary).get("reason") == "idle"
    time.sleep(IDLE_S)
    assert set(waiting_running(stack)) == pool_ids

    seen = asyncio.run(asyncio.wait_for(student_start(stack.url, POOL), 60))
    at, status = seen["status"]
    assert status["lab"] in pool_ids and status["state"] == "running" and at < 1.0
    assert seen["frame"][0] < 1.5 and seen["frame"][1]["lab"] == status["lab"]
    at, check = seen["check:start"]
    assert check["passed"] is True and check["seconds"] < 1 and at < 3  # judged from the claim
    claimed = status["lab"]
    [row] = rows(stack, f"id = '{claimed.replace('-', '')}'")
    assert row["session_key"] == seen["session"] and row["pool"] == ""
    with sqlite3.connect(stack.db_path) as db:
        steps = db.execute("select step_id from visualizer_progress where session_key = ?",
                           (seen["session"],)).fetchall()
    assert ("start",) in steps

    # The pool tops itself up to its size with a new lab.
    refilled = set(wait_for(lambda: len(ids := waiting_running(stack)) == 2 and ids, 60, "the pool to refill"))
    assert claimed not in refilled and len(refilled - pool_ids) == 1

    # Drained, the pool's labs stop and leave nothing: rows, heartbeats, sockets.
    networks = [r["network"] for r in rows(stack, f"pool = '{POOL}'")]
    assert pool_call(stack, f"pool_drain(pool='{POOL}')") == "2"
    assert not rows(stack, f"pool = '{POOL}' and state != 'stopped'")
    for i in refilled:
        wait_for(lambda i=i: not stack.redis.exists(keys.heartbeat_key(i)), 15, "the heartbeat to go")
    for network in networks:
        wait_for(lambda network=network: not on_network(network), 15, f"every socket on {network} to close")
    assert pool_call(stack, f"pool_claim(pool='{POOL}', session_key='late', lesson=lesson)") == "None"


def test_two_claims_at_once_get_two_labs(stack: Stack) -> None:
    assert pool_call(stack, f"pool_fill(pool='{POOL}', lesson=lesson, size=2)") == "2"
    pool_ids = set(wait_for(lambda: len(ids := waiting_running(stack)) == 2 and ids, 60, "the pool to run"))
    got = stack.shell(
        "import threading\n"
        "from django.db import connection\n"
        "from lessons.models import Lesson\n"
        "from visualizer.pool import pool_claim\n"
        f"lesson = Lesson.objects.get(slug='{SLUG}')\n"
        "barrier, out = threading.Barrier(2), {}\n"
        "def claim(who):\n"
        "    barrier.wait(5)\n"
        f"    out[who] = str(pool_claim(pool='{POOL}', session_key=who, lesson=lesson).id)\n"
        "    connection.close()\n"
        "threads = [threading.Thread(target=claim, args=(who,)) for who in ('ann', 'ben')]\n"
        "[t.start() for t in threads]; [t.join(30) for t in threads]\n"
        "print(out['ann'], out['ben'])"
    ).splitlines()[-1].split()
    assert len(set(got)) == 2 and set(got) == pool_ids
    owners = {lab_id(r): r["session_key"] for r in rows(stack, "session_key in ('ann', 'ben')")}
    assert owners == dict(zip(got, ("ann", "ben"), strict=True))
    assert pool_call(stack, f"pool_drain(pool='{POOL}')") == "2"  # the two refills, not the claimed
    assert {r["pool"] for r in rows(stack, "session_key in ('ann', 'ben')")} == {""}
    for i in got:
        stack.redis.publish(keys.in_channel(i), json.dumps({"action": "stop"}))
