"""The watch socket (/ws/watch/<lab_id>/), against a real Redis: staff only, the owner's hello and
live messages, and every command refused with nothing reaching the lab."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from core.asgi import application
from core.engine import keys
from lessons.models import Lesson
from tests.visualizer.test_consumer import connected, listening, next_message, receive_until
from tests.visualizer.test_progress import passed, progress_rows, publish
from visualizer import services
from visualizer.consumers import MAX_MESSAGE_BYTES
from visualizer.models import Lab
from visualizer.watchers import CLOSE_NOT_STAFF, READ_ONLY

pytestmark = pytest.mark.django_db(transaction=True)


def signed_in(*, staff: bool) -> str:
    """The session key of a signed-in user (staff or not), as the browser's cookie carries it."""
    user = User.objects.create_user(f"{'staff' if staff else 'user'}-{User.objects.count()}", password="pw",
                                    is_staff=staff)
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@pytest.fixture
def staff(transactional_db: None) -> str:
    return signed_in(staff=True)


@pytest.fixture
def lab(lesson: Lesson, alice: str) -> Lab:
    """Alice's lab, queued (no worker here: what the lab would receive is read off its in channel)."""
    return services.lab_start(session_key=alice, lesson=lesson)


def watcher(session_key: str | None, lab_id: str) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    return WebsocketCommunicator(application, f"/ws/watch/{lab_id}/", headers=headers)


async def watching(session_key: str, lab: Lab) -> tuple[WebsocketCommunicator, dict]:
    comm = watcher(session_key, str(lab.id))
    ok, _ = await comm.connect()
    assert ok
    return comm, await comm.receive_json_from(timeout=3)


async def closed_with(comm: WebsocketCommunicator) -> int:
    await comm.connect()
    output = await comm.receive_output(timeout=3)
    await comm.disconnect()
    assert output["type"] == "websocket.close"
    return output["code"]


async def test_it_refuses_anyone_but_staff(lab: Lab, alice: str) -> None:
    user = await database_sync_to_async(signed_in)(staff=False)
    assert await closed_with(watcher(None, str(lab.id))) == CLOSE_NOT_STAFF  # no session
    assert await closed_with(watcher(user, str(lab.id))) == CLOSE_NOT_STAFF  # signed in, not staff
    assert await closed_with(watcher(alice, str(lab.id))) == CLOSE_NOT_STAFF  # even the lab's owner


async def test_it_closes_for_a_lab_that_does_not_exist(lesson: Lesson, staff: str) -> None:
    assert await closed_with(watcher(staff, "00000000-0000-0000-0000-000000000000")) == 4404


async def test_staff_get_the_owners_hello_and_the_labs_messages(lab: Lab, staff: str, redis_url: str) -> None:
    comm, hello = await watching(staff, lab)
    assert hello["type"] == "hello" and hello["lesson"] == "fixture-single"
    assert hello["status"]["lab"] == str(lab.id) and hello["status"]["state"] == "queued"
    assert [n["id"] for n in hello["topology"]["nodes"]] == ["dns", "web", "browser", "phone"]
    frame = json.dumps({"type": "frame", "lab": str(lab.id), "seq": 1})
    publish(redis_url, lab, frame)
    assert await comm.receive_from(timeout=3) == frame  # verbatim, as the owner's page gets it
    await comm.disconnect()


OVERSIZED = json.dumps({"action": "start", "pad": "x" * MAX_MESSAGE_BYTES})
COMMANDS = [
    json.dumps({"action": "start"}),
    json.dumps({"action": "stop"}),
    json.dumps({"action": "kill", "node": "web"}),
    json.dumps({"action": "restart", "node": "web"}),
    json.dumps({"action": "traffic", "rate": 100}),
    json.dumps({"action": "check", "step": "start"}),
    json.dumps({"action": "add", "like": "web"}),
    json.dumps({"action": "explode"}),  # not a command at all
    "not json",
    "[" * 5000,  # nested too deep to parse
    OVERSIZED,  # a LabConsumer would close over this; here it is refused like the rest
]


async def test_every_command_is_refused_and_nothing_reaches_the_lab(
    lab: Lab, alice: str, staff: str, redis_url: str
) -> None:
    async with listening(redis_url, keys.in_channel(str(lab.id))) as lab_input:
        comm, _ = await watching(staff, lab)
        for text in COMMANDS:
            await comm.send_to(text_data=text)
            error = await comm.receive_json_from(timeout=3)
            assert error["type"] == "error" and error["message"] == READ_ONLY, text[:80]
            assert len(json.dumps(error["command"])) < 300  # a short quote, never the whole message
        await comm.send_to(bytes_data=b'{"action": "stop"}')
        assert (await comm.receive_json_from(timeout=3))["message"] == READ_ONLY
        with pytest.raises(TimeoutError):
            await next_message(lab_input, timeout=1.0)  # the engine heard nothing
    # The quote: the command itself when it is small, else the start of its text.
    await comm.send_json_to({"action": "kill", "node": "web"})
    assert (await comm.receive_json_from(timeout=3))["command"] == {"action": "kill", "node": "web"}
    for text in ("not json", OVERSIZED):
        await comm.send_to(text_data=text)
        assert (await comm.receive_json_from(timeout=3))["command"] == text[:200]

    # Nothing changed: the lab is still queued, and no other lab was started or stopped.
    labs = await database_sync_to_async(lambda: list(Lab.objects.values_list("id", "state")))()
    assert labs == [(lab.id, Lab.State.QUEUED)]
    # And the socket still shows the lab.
    frame = json.dumps({"type": "frame", "lab": str(lab.id), "seq": 2})
    publish(redis_url, lab, frame)
    assert await comm.receive_from(timeout=3) == frame
    await comm.disconnect()


async def test_a_flood_is_told_to_slow_down_and_the_socket_stays(lab: Lab, staff: str, redis_url: str) -> None:
    comm, _ = await watching(staff, lab)
    for _ in range(60):
        await comm.send_json_to({"action": "stop"})
    messages = [(await comm.receive_json_from(timeout=3))["message"] for _ in range(60)]
    assert READ_ONLY in messages and any(m.startswith("slow down") for m in messages)
    frame = json.dumps({"type": "frame", "lab": str(lab.id), "seq": 3})
    publish(redis_url, lab, frame)
    assert await comm.receive_from(timeout=3) == frame
    await comm.disconnect()


@pytest.fixture
def steps(lesson: Lesson) -> None:
    lesson.steps = [{"id": s, "title": s, "check": "event(lab_started)", "hints": [], "solution": [], "predict": None}
                    for s in ("start", "a")]
    lesson.save(update_fields=["steps"])


async def test_it_follows_the_owners_progress_and_records_none(
    steps: None, lab: Lab, alice: str, staff: str, redis_url: str
) -> None:
    # Alone, the watcher forwards the passed check but records nothing: only the owner's socket does.
    comm, hello = await watching(staff, lab)
    assert hello["progress"] == {}
    publish(redis_url, lab, passed(lab, "start"))
    assert (await receive_until(comm, "check"))["step"] == "start"
    assert await comm.receive_nothing(timeout=1.0)
    assert await database_sync_to_async(progress_rows)(alice) == []

    # With the owner's page open, the owner's socket records it and the watcher shows it.
    owner, _ = await connected(alice)
    publish(redis_url, lab, passed(lab, "a"))
    update = await receive_until(comm, "progress")
    assert set(update["progress"]) == {"a"}
    assert await database_sync_to_async(progress_rows)(alice) == [("a", 12.5)]
    await owner.disconnect()
    await comm.disconnect()


async def test_it_follows_the_student_to_a_new_lab(lab: Lab, alice: str, staff: str, lesson: Lesson) -> None:
    comm, _ = await watching(staff, lab)
    newer = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    hello = await receive_until(comm, "hello")  # within FOLLOW_S
    assert hello["status"]["lab"] == str(newer.id) and hello["status"]["state"] == "queued"
    await comm.disconnect()


async def test_the_owners_own_socket_is_unaffected(lab: Lab, alice: str, staff: str, redis_url: str) -> None:
    """A watcher on the same lab: the owner's commands still reach it."""
    comm, _ = await watching(staff, lab)
    owner, _ = await connected(alice)
    async with listening(redis_url, keys.in_channel(str(lab.id))) as lab_input:
        await owner.send_json_to({"action": "kill", "node": "web"})
        assert await next_message(lab_input) == {"action": "kill", "node": "web"}
    await owner.disconnect()
    await comm.disconnect()
