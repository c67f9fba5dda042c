"""Progress: recorded by the consumer only from its own lab's passed checks, sent in hello, kept."""

from __future__ import annotations

import json

import pytest
import redis
from channels.db import database_sync_to_async

from core.engine import keys
from lessons.models import Lesson
from tests.visualizer.conftest import communicator
from tests.visualizer.test_consumer import connected, receive_until
from visualizer import services
from visualizer.models import Lab, Progress

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def steps(lesson: Lesson) -> None:
    """The fixture lesson's steps as the loader stores them (only the ids matter here)."""
    lesson.steps = [{"id": s, "title": s, "check": "event(lab_started)", "hints": [], "solution": [], "predict": None}
                    for s in ("start", "a", "b", "c", "d")]
    lesson.save(update_fields=["steps"])


def passed(lab: Lab, step: str, **extra: object) -> str:
    """A check message as the engine publishes it (compact JSON, like the runner)."""
    message = {"type": "check", "step": step, "passed": True, "t": 1764300000.5, "seconds": 12.5,
               "detail": "totals.rps is 6.1 (> 1)", "lab": str(lab.id), **extra}
    return json.dumps(message, separators=(",", ":"))


def publish(redis_url: str, lab: Lab, text: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.publish(keys.out_channel(str(lab.id)), text)
    r.close()


def progress_rows(session_key: str) -> list[tuple[str, float | None]]:
    return [(p.step_id, p.seconds) for p in Progress.objects.filter(session_key=session_key)]


async def test_a_passed_check_from_its_own_lab_is_recorded_and_pushed(
    lesson: Lesson, alice: str, redis_url: str
) -> None:
    lab = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    comm, hello = await connected(alice)
    assert hello["progress"] == {}
    publish(redis_url, lab, passed(lab, "start"))
    check = await receive_until(comm, "check")
    assert check["step"] == "start" and check["passed"] is True  # forwarded verbatim
    update = await receive_until(comm, "progress")
    assert update["progress"]["start"]["seconds"] == 12.5
    assert update["progress"]["start"]["passed_at"] == 1764300000.5
    assert await database_sync_to_async(progress_rows)(alice) == [("start", 12.5)]

    # Idempotent: the same step passing again (a new lab run) keeps the first record.
    publish(redis_url, lab, passed(lab, "start", seconds=99.0))
    await receive_until(comm, "check")
    assert await comm.receive_nothing(timeout=0.3)
    assert await database_sync_to_async(progress_rows)(alice) == [("start", 12.5)]
    await comm.disconnect()

    # A reload (or a server restart: it is in the database) says hello with the progress.
    comm, hello = await connected(alice)
    assert hello["progress"]["start"]["seconds"] == 12.5
    await comm.disconnect()


async def test_only_the_engines_passed_check_for_this_lab_counts(lesson: Lesson, alice: str, bob: str,
                                                                 redis_url: str) -> None:
    lab_a = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    lab_b = await database_sync_to_async(services.lab_start)(session_key=bob, lesson=lesson)
    comm, _ = await connected(alice)
    # Not passed, or claiming another lab, on alice's channel: forwarded but never recorded.
    publish(redis_url, lab_a, passed(lab_a, "a", passed=False))
    publish(redis_url, lab_a, passed(lab_b, "b"))
    # Bob's lab passing a step is bob's progress, and alice's socket never sees it.
    publish(redis_url, lab_b, passed(lab_b, "c"))
    # A step the lesson does not have is not recorded either.
    publish(redis_url, lab_a, passed(lab_a, "ghost"))
    await receive_until(comm, "check", step="ghost")
    assert await comm.receive_nothing(timeout=0.5)
    assert await database_sync_to_async(progress_rows)(alice) == []

    # The browser cannot claim a step: a check message sent up the socket is not a command.
    await comm.send_json_to({"type": "check", "step": "d", "passed": True})
    assert (await comm.receive_json_from(timeout=3))["type"] == "error"
    await comm.send_json_to({"action": "check", "step": "d", "passed": True})
    assert (await comm.receive_json_from(timeout=3))["type"] == "error"
    assert await database_sync_to_async(progress_rows)(alice) == []
    await comm.disconnect()


async def test_check_now_goes_to_the_engine(lesson: Lesson, alice: str, redis_url: str) -> None:
    from tests.visualizer.test_consumer import listening, next_message

    lab = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    async with listening(redis_url, keys.in_channel(str(lab.id))) as pubsub:
        comm, _ = await connected(alice)
        await comm.send_json_to({"action": "check", "step": "start"})
        assert await next_message(pubsub) == {"action": "check", "step": "start"}
        await comm.send_json_to({"action": "check", "step": "<script>"})
        assert "step id" in (await comm.receive_json_from(timeout=3))["message"]
        await comm.disconnect()


async def test_hello_without_a_session_lab_still_has_progress(lesson: Lesson, alice: str) -> None:
    lab = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    await database_sync_to_async(services.progress_record)(
        session_key=alice, lesson=lesson, lab_id=str(lab.id),
        message={"type": "check", "step": "start", "passed": True, "lab": str(lab.id), "seconds": 3})
    await database_sync_to_async(services.lab_stop)(lab=lab)
    comm = communicator(alice)
    await comm.connect()
    hello = await comm.receive_json_from(timeout=3)
    assert hello["status"] == {"state": "stopped"} and hello["progress"]["start"]["seconds"] == 3.0
    await comm.disconnect()
