"""What one session or one client address may hold: sockets, labs, networks; and a race-free start."""

from __future__ import annotations

import threading

import pytest
from channels.db import database_sync_to_async
from django.db import close_old_connections
from django.test import override_settings

from core import redis as core_redis
from core.engine import keys
from lessons.models import Lesson
from tests.visualizer.conftest import communicator, session_create
from tests.visualizer.test_consumer import connected, receive_until
from visualizer import services
from visualizer.models import Lab

pytestmark = pytest.mark.django_db(transaction=True)


async def test_an_eleventh_socket_for_one_session_is_refused(lesson: Lesson, alice: str, bob: str) -> None:
    open_ = [(await connected(alice))[0] for _ in range(10)]
    eleventh = communicator(alice)
    await eleventh.connect()
    assert (await eleventh.receive_output(timeout=3)) == {"type": "websocket.close", "code": 4429}
    await eleventh.disconnect()
    # Another session is not affected, and a closed socket frees its place.
    other, hello = await connected(bob)
    assert hello["type"] == "hello"
    await open_.pop().disconnect()
    again, hello = await connected(alice)
    assert hello["type"] == "hello"
    for comm in [*open_, other, again]:
        await comm.disconnect()


def test_two_concurrent_starts_leave_one_live_lab(lesson: Lesson, alice: str) -> None:
    barrier = threading.Barrier(4)
    results: list[object] = []

    def start() -> None:
        try:
            barrier.wait(timeout=5)
            results.append(services.lab_start(session_key=alice, lesson=lesson))
        except Exception as exc:
            results.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert all(isinstance(r, Lab) for r in results), results
    live = list(Lab.objects.filter(session_key=alice, state__in=Lab.LIVE_STATES))
    assert len(live) == 1


def test_the_network_allocator_skips_a_block_a_live_lab_holds(lesson: Lesson, alice: str, bob: str) -> None:
    r = core_redis.client()
    r.set(keys.NETBLOCK_COUNTER, 41)
    held = services.lab_start(session_key=bob, lesson=lesson)
    assert held.network == keys.network_for(42)
    r.set(keys.NETBLOCK_COUNTER, 41)  # the counter wrapped: its next block is bob's live one
    lab = services.lab_start(session_key=alice, lesson=lesson)
    assert lab.network == keys.network_for(43)
    held.refresh_from_db()
    assert held.state == Lab.State.QUEUED


def test_the_allocator_draws_past_every_held_block() -> None:
    draws = iter(range(10))
    held = {keys.network_for(i) for i in range(5)}
    assert keys.network_allocate(lambda: next(draws), held) == keys.network_for(5)
    with pytest.raises(RuntimeError):
        keys.network_allocate(lambda: 0, {keys.network_for(0)})


@override_settings(LABS_PER_ADDRESS=2)
async def test_labs_per_client_address_are_capped(lesson: Lesson) -> None:
    comms = []
    for i in range(3):
        session = await database_sync_to_async(session_create)()
        comm = communicator(session)
        comm.scope["client"] = ("10.1.2.3", 50000 + i)
        ok, _ = await comm.connect()
        assert ok
        await comm.receive_json_from(timeout=3)
        await comm.send_json_to({"action": "start"})
        comms.append(comm)
    for comm in comms[:2]:
        assert (await receive_until(comm, "status"))["state"] == "queued"
    refused = await receive_until(comms[2], "error")
    assert "2 labs running" in refused["message"]
    live = await database_sync_to_async(
        Lab.objects.filter(client_address="10.1.2.3", state__in=Lab.LIVE_STATES).count)()
    assert live == 2
    # A start from another address still works.
    other = await database_sync_to_async(session_create)()
    comm = communicator(other)
    comm.scope["client"] = ("10.9.9.9", 1)
    await comm.connect()
    await comm.receive_json_from(timeout=3)
    await comm.send_json_to({"action": "start"})
    assert (await receive_until(comm, "status"))["state"] == "queued"
    for c in [*comms, comm]:
        await c.disconnect()


@override_settings(LABS_PER_ADDRESS=1, BEHIND_TLS_PROXY=True)
async def test_behind_the_proxy_labs_are_counted_by_the_forwarded_address(lesson: Lesson) -> None:
    # Every socket comes from the proxy (127.0.0.1): the address is the proxy's X-Forwarded-For entry.
    async def start_from(forwarded: str) -> dict:
        session = await database_sync_to_async(session_create)()
        comm = communicator(session)
        comm.scope["client"] = ("127.0.0.1", 40000)
        comm.scope["headers"].append((b"x-forwarded-for", forwarded.encode()))
        await comm.connect()
        await comm.receive_json_from(timeout=3)
        await comm.send_json_to({"action": "start"})
        while (msg := await comm.receive_json_from(timeout=3))["type"] not in ("status", "error"):
            pass
        await comm.disconnect()
        return msg

    assert (await start_from("198.51.100.1"))["state"] == "queued"
    assert (await start_from("198.51.100.2"))["state"] == "queued"  # another student, same proxy
    # A client's own claim before the proxy's entry does not make it someone else.
    assert (await start_from("198.51.100.9, 198.51.100.1"))["type"] == "error"
    rows = await database_sync_to_async(list)(Lab.objects.values_list("client_address", flat=True))
    assert sorted(rows) == ["198.51.100.1", "198.51.100.2"]
