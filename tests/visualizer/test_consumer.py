"""The lab WebSocket, against a real Redis: hello, per-session isolation, command validation."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from core.engine import keys
from lessons.models import Lesson
from tests.visualizer.conftest import communicator
from visualizer import services
from visualizer.models import Lab

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(session_key: str) -> tuple[WebsocketCommunicator, dict]:
    comm = communicator(session_key)
    ok, _ = await comm.connect()
    assert ok
    return comm, await comm.receive_json_from(timeout=3)


async def receive_until(comm: WebsocketCommunicator, type_: str, **match: object) -> dict:
    while True:
        msg = await comm.receive_json_from(timeout=3)
        if msg["type"] == type_ and all(msg.get(k) == v for k, v in match.items()):
            return msg


async def next_message(pubsub: redis.asyncio.client.PubSub, timeout: float = 3.0) -> dict:
    """The next published message (get_message yields None for subscribe confirmations)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(timeout=0.5)
        if message is not None:
            return json.loads(message["data"])
    raise TimeoutError("no message")


@contextlib.asynccontextmanager
async def listening(redis_url: str, channel: str) -> AsyncIterator[redis.asyncio.client.PubSub]:
    """A subscription to one Redis channel, closed afterwards."""
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        yield pubsub
    finally:
        await pubsub.aclose()
        await r.aclose()


async def test_it_says_hello_with_the_topology(lesson: Lesson, alice: str) -> None:
    comm, hello = await connected(alice)
    assert hello["type"] == "hello" and hello["lesson"] == "fixture-single"
    assert [n["id"] for n in hello["topology"]["nodes"]] == ["dns", "web", "browser", "phone"]
    assert hello["status"] == {"state": "stopped"} and hello["frame"] is None and hello["history"] == []
    await comm.disconnect()


async def test_it_closes_without_a_session(lesson: Lesson) -> None:
    comm = communicator(None)
    await comm.connect()
    assert (await comm.receive_output(timeout=3)) == {"type": "websocket.close", "code": 4401}
    await comm.disconnect()


async def test_it_closes_with_a_forged_session_cookie(lesson: Lesson) -> None:
    comm = communicator("notarealsessionkeyatall1234")
    await comm.connect()
    assert (await comm.receive_output(timeout=3))["code"] == 4401
    await comm.disconnect()


async def test_it_closes_for_a_lesson_without_a_lab(lesson: Lesson, alice: str) -> None:
    comm = communicator(alice, slug="fixture-later")
    await comm.connect()
    assert (await comm.receive_output(timeout=3))["code"] == 4404
    await comm.disconnect()


async def test_it_starts_a_lab_and_reports_it_queued(lesson: Lesson, alice: str) -> None:
    comm, _ = await connected(alice)
    await comm.send_json_to({"action": "start"})
    status = await receive_until(comm, "status", state="queued")
    lab = await database_sync_to_async(Lab.objects.get)(pk=status["lab"])
    assert lab.session_key == alice and lab.network.startswith("127.")
    assert status["slots"] >= 1 and status["nodes"] == {}
    await comm.disconnect()


async def test_it_forwards_frames_of_own_lab_only(lesson: Lesson, alice: str, bob: str, redis_url: str) -> None:
    lab_a = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    lab_b = await database_sync_to_async(services.lab_start)(session_key=bob, lesson=lesson)
    comm_a, hello_a = await connected(alice)
    comm_b, hello_b = await connected(bob)
    assert hello_a["status"]["lab"] == str(lab_a.id) and hello_a["status"]["state"] == "queued"
    assert hello_b["status"]["lab"] == str(lab_b.id)

    r = redis.Redis.from_url(redis_url)
    frame = json.dumps({"type": "frame", "lab": str(lab_a.id), "seq": 1})
    r.publish(keys.out_channel(str(lab_a.id)), frame)
    assert await comm_a.receive_from(timeout=3) == frame  # verbatim
    await asyncio.sleep(0.2)
    assert await comm_b.receive_nothing(timeout=0.3)
    r.close()
    await comm_a.disconnect()
    await comm_b.disconnect()


async def test_it_resumes_with_the_last_frame_and_history(lesson: Lesson, alice: str, redis_url: str) -> None:
    lab = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    r = redis.Redis.from_url(redis_url)
    r.set(keys.frame_key(str(lab.id)), json.dumps({"type": "frame", "seq": 9}))
    r.rpush(keys.history_key(str(lab.id)), json.dumps([1.0, 2.0, 3.0, 4.0, 0.0]))
    r.close()
    comm, hello = await connected(alice)
    assert hello["frame"]["seq"] == 9 and hello["history"] == [[1.0, 2.0, 3.0, 4.0, 0.0]]
    await comm.disconnect()


@pytest.mark.parametrize(
    "command",
    [
        {"action": "explode"},
        {"action": "kill"},
        {"action": "kill", "node": "Web!"},
        {"action": "traffic", "rate": -1},
        {"action": "traffic", "rate": 5001},
        {"action": "traffic", "rate": "lots"},
        {"action": "traffic", "rate": True},
        {"action": "stop", "please": True},
        ["start"],
    ],
)
async def test_it_answers_a_malformed_command_with_an_error(lesson: Lesson, alice: str, command: object) -> None:
    comm, _ = await connected(alice)
    await comm.send_json_to(command)
    error = await comm.receive_json_from(timeout=3)
    assert error["type"] == "error" and error["command"] == command and error["message"]
    await comm.disconnect()


async def test_it_survives_non_json_and_stays_usable(lesson: Lesson, alice: str) -> None:
    comm, _ = await connected(alice)
    await comm.send_to(text_data="{not json")
    error = await comm.receive_json_from(timeout=3)
    assert error["type"] == "error" and error["command"] == "{not json"
    await comm.send_json_to({"action": "start"})
    assert (await receive_until(comm, "status"))["state"] == "queued"
    await comm.disconnect()


async def test_it_refuses_node_commands_without_a_live_lab(lesson: Lesson, alice: str) -> None:
    comm, _ = await connected(alice)
    await comm.send_json_to({"action": "kill", "node": "web"})
    error = await comm.receive_json_from(timeout=3)
    assert error["message"] == "lab is not running"
    await comm.disconnect()


async def test_it_publishes_commands_to_the_labs_in_channel(lesson: Lesson, alice: str, redis_url: str) -> None:
    lab = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    async with listening(redis_url, keys.in_channel(str(lab.id))) as pubsub:
        comm, _ = await connected(alice)
        command = {"action": "traffic", "node": "phone", "rate": 30}
        await comm.send_json_to(command)
        assert await next_message(pubsub) == command
        await comm.disconnect()


async def test_it_passes_commands_naming_nodes_added_at_run_time_to_the_engine(
    lesson: Lesson, alice: str, redis_url: str
) -> None:
    # web-2 is not in the lesson: it was added live, and only the engine knows the live topology.
    lab = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    async with listening(redis_url, keys.in_channel(str(lab.id))) as pubsub:
        comm, _ = await connected(alice)
        for command in (
            {"action": "add", "like": "web"},
            {"action": "kill", "node": "web-2"},
            {"action": "partition", "node": "web-2", "peer": "browser"},
            {"action": "remove", "node": "web-2"},
        ):
            await comm.send_json_to(command)
            assert await next_message(pubsub) == command
        await comm.disconnect()


async def test_it_says_hello_with_the_live_topology_once_nodes_were_added(
    lesson: Lesson, alice: str, redis_url: str
) -> None:
    lab = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    live = {**lesson.topology, "nodes": [*lesson.topology["nodes"], {**lesson.topology["nodes"][1], "id": "web-2"}]}
    r = redis.Redis.from_url(redis_url)
    r.set(keys.topology_key(str(lab.id)), json.dumps({"type": "topology", "topology": live}))
    r.close()
    comm, hello = await connected(alice)
    assert [n["id"] for n in hello["topology"]["nodes"]] == ["dns", "web", "browser", "phone", "web-2"]
    await comm.disconnect()


async def test_it_stops_the_lab(lesson: Lesson, alice: str, redis_url: str) -> None:
    lab = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    async with listening(redis_url, keys.in_channel(str(lab.id))) as pubsub:
        comm, _ = await connected(alice)
        await comm.send_json_to({"action": "stop"})
        assert (await receive_until(comm, "status", state="stopped"))["lab"] == str(lab.id)
        assert await next_message(pubsub) == {"action": "stop"}
        await lab.arefresh_from_db()
        assert lab.state == Lab.State.STOPPED
        await comm.disconnect()


async def test_starting_again_stops_the_previous_lab(lesson: Lesson, alice: str) -> None:
    first = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    second = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    await first.arefresh_from_db()
    assert first.state == Lab.State.STOPPED and second.state == Lab.State.QUEUED
    assert first.network != second.network


# Hardening: what one socket may send ----------------------------------------------------------------


async def test_an_oversized_message_closes_the_socket_as_too_big(lesson: Lesson, alice: str) -> None:
    comm, _ = await connected(alice)
    await comm.send_to(text_data=json.dumps({"action": "start", "id": "x" * 20_000}))
    closed = await comm.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": 4009}


async def test_a_deeply_nested_message_gets_an_error_and_the_socket_stays_usable(lesson: Lesson, alice: str) -> None:
    comm, _ = await connected(alice)
    await comm.send_to(text_data="[" * 5000)
    error = await comm.receive_json_from(timeout=3)
    assert error["type"] == "error" and error["command"] == "[" * 200  # a short prefix, not the whole
    await comm.send_to(text_data=json.dumps({"action": "stop", "id": [[[[["deep"]]]]] * 100}))
    error = await comm.receive_json_from(timeout=3)
    assert error["type"] == "error" and isinstance(error["command"], str) and len(error["command"]) <= 200
    await comm.send_json_to({"action": "start"})
    assert (await receive_until(comm, "status"))["state"] == "queued"
    await comm.disconnect()


async def test_a_flood_of_commands_is_told_to_slow_down_and_the_socket_stays(lesson: Lesson, alice: str) -> None:
    comm, _ = await connected(alice)
    for _ in range(200):
        await comm.send_json_to({"action": "kill", "node": "web"})
    messages = [await comm.receive_json_from(timeout=3) for _ in range(200)]
    slowed = [m for m in messages if m["message"].startswith("slow down")]
    assert 100 < len(slowed) < 200  # a burst went through (as "lab is not running"), the rest was refused
    await asyncio.sleep(1.0)  # the bucket refills
    await comm.send_json_to({"action": "kill", "node": "web"})
    assert (await comm.receive_json_from(timeout=3))["message"] == "lab is not running"
    await comm.disconnect()
