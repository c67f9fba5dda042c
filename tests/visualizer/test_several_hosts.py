"""Several machines: Celery workers on two "hosts" share a room's labs through the one Redis and the
one PostgreSQL, and every student's page gets its own lab's frames, whichever host runs it.

Each host is a network namespace with a loopback of its own (tests.multihost); a lab's 127.A.B.x
sockets exist only in the namespace of the worker that runs it. Four students start labs over
real WebSockets on two hosts of two slots each, so every lab running at once means both hosts
took their share.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.engine import keys
from tests.multihost import Host, Room, listening, netns_available, run_room, unix_redis
from tests.postgres import Postgres, pg_query
from tests.stack import CONTENT, log_tail
from tests.student import Student

pytestmark = pytest.mark.slow
HOSTS, SLOTS = 2, 2
STUDENTS = HOSTS * SLOTS


@pytest.fixture
def room(tmp_path: Path, postgres: Postgres) -> Iterator[Room]:
    reason = netns_available()
    if reason is not None:  # never a skip: the suite is whole or it fails, saying why
        pytest.fail(f"{reason}: the two-host test needs root and iproute2 (.ci/run installs it)")
    # A short directory for the socket (a UNIX socket's path has at most 107 bytes).
    sockets = Path(tempfile.mkdtemp(prefix="scalelab-room-"))
    try:
        with unix_redis(sockets) as redis_url, run_room(
                tmp_path, redis_url=redis_url, database_url=postgres.url(postgres.create_database()),
                lessons=[CONTENT / "01-single-server.md"], hosts=HOSTS, slots=SLOTS) as room:
            yield room
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


async def run_lab(room: Room, student: Student) -> dict[str, Any]:
    """Start a lab over the student's WebSocket; wait until it runs and its frames show traffic."""
    await student.send({"action": "start"})
    running = await student.until(lambda m: m["type"] == "status" and m.get("state") == "running",
                                  90, "the lab to run")
    frame = await student.until(lambda m: m["type"] == "frame" and m["totals"]["rps"] > 0,
                                30, "a frame with traffic")
    return {"session": student.session_key, "lab": running["lab"], "nodes": running["nodes"], "frame": frame,
            "heartbeat": await asyncio.to_thread(room.redis.get, keys.heartbeat_key(running["lab"]))}


async def student_runs_a_lab(room: Room) -> dict[str, Any]:
    async with Student(room.url, "single-server") as student:
        # Closing the page leaves the lab running (until LAB_IDLE_SECONDS) for the checks below.
        return await run_lab(room, student)


def test_two_hosts_share_the_rooms_labs_and_each_student_gets_their_own_labs_frames(
        room: Room, tmp_path: Path) -> None:
    async def scenario() -> list[dict[str, Any]]:
        return await asyncio.gather(*(student_runs_a_lab(room) for _ in range(STUDENTS)))

    try:
        labs = asyncio.run(scenario())
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log_tail(tmp_path, 'worker-*.log')}") from None

    # Which host ran each lab: its heartbeat is the pid of the worker process hosting it.
    hosts = {lab["lab"]: room.host_of(int(lab["heartbeat"])) for lab in labs}
    assert all(hosts.values()), hosts
    assert Counter(h.namespace for h in hosts.values()) == {h.namespace: SLOTS for h in room.hosts}

    root = listening(None)
    per_host = {h.namespace: listening(h.namespace) for h in room.hosts}
    for lab in labs:
        host = hosts[lab["lab"]]
        sockets = {(n["address"], n["port"]) for n in lab["nodes"].values() if n["proto"] == "tcp"}
        assert sockets, lab["nodes"]
        assert sockets <= per_host[host.namespace]  # bound on its own host's loopback...
        assert not sockets & root  # ...invisible to the web machine...
        for other in room.hosts:
            if other is not host:
                assert not sockets & per_host[other.namespace]  # ...and to the other host
        network = {n["address"].rsplit(".", 1)[0] for n in lab["nodes"].values()}
        assert len(network) == 1 and lab["frame"]["totals"]["rps"] > 0
    # Every lab row, written by daphne and the two hosts' workers, is one PostgreSQL's.
    rows = dict(pg_query(room.env["DATABASE_URL"], "select session_key, state from visualizer_lab"))
    assert rows == {lab["session"]: "running" for lab in labs}


def test_a_queued_lab_starts_on_whichever_host_frees_a_slot(room: Room, tmp_path: Path) -> None:
    # Every slot of both hosts busy, then one more lab: it must wait for a slot on either host, not
    # be taken (and held) by a worker with none free while the other host frees one.
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as pages:
            students = [await pages.enter_async_context(Student(room.url, "single-server"))
                        for _ in range(STUDENTS)]
            labs = await asyncio.gather(*(run_lab(room, s) for s in students))
            by_host = {h.namespace: [s for s, lab in zip(students, labs, strict=True)
                                     if pid_host(room, lab["heartbeat"]) is h] for h in room.hosts}
            for host in room.hosts:  # each host in turn frees a slot for the next student
                late = await pages.enter_async_context(Student(room.url, "single-server"))
                await late.send({"action": "start"})
                await late.until(lambda m: m["type"] == "status" and m.get("state") == "queued", 10, "queued")
                await asyncio.sleep(2)  # time for a worker with no free slot to take it, were it to
                await by_host[host.namespace].pop().send({"action": "stop"})
                started = await run_lab(room, late)
                assert pid_host(room, started["heartbeat"]) is host
                by_host[host.namespace].append(late)

    try:
        asyncio.run(scenario())
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log_tail(tmp_path, 'worker-*.log')}") from None


def pid_host(room: Room, heartbeat: str | None) -> Host | None:
    return room.host_of(int(heartbeat)) if heartbeat else None
