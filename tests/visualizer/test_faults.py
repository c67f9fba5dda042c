"""No lab is silently dead: a dead worker's lab is recorded lost, a queued lab Redis lost is
enqueued again, a lab runs once however often it is delivered, and its row says how it ended.

In-process, against the suite's Redis; the engine is replaced where only the record matters. The
same faults against a real worker and daphne are in test_worker_faults.py.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from channels.db import database_sync_to_async
from django.test import override_settings

from core.engine import keys
from lessons.models import Lesson
from tests.visualizer.conftest import session_create
from tests.visualizer.test_consumer import connected, listening, next_message, receive_until
from visualizer import consumers, services
from visualizer.models import Lab

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Labs handed to the broker (none reaches a worker here)."""
    from visualizer.tasks import run_lab

    calls: list[str] = []
    monkeypatch.setattr(run_lab, "apply_async", lambda args, task_id: calls.append(args[0]))
    return calls


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's Redis may have started seconds ago: judge heartbeats at once."""
    monkeypatch.setattr(services, "REDIS_SETTLE_S", 0)


def running_lab(lesson: Lesson, session_key: str, r: redis.Redis, *, beating: bool) -> Lab:
    lab = services.lab_start(session_key=session_key, lesson=lesson)
    Lab.objects.filter(pk=lab.pk).update(state=Lab.State.RUNNING)
    lab.state = Lab.State.RUNNING
    r.set(keys.status_key(str(lab.id)), json.dumps({"type": "status", "lab": str(lab.id), "state": "running"}))
    if beating:
        r.set(keys.heartbeat_key(str(lab.id)), "1", ex=keys.HEARTBEAT_TTL_S)
    return lab


# Watching a lab (services.lab_watch) ------------------------------------------------------------


def test_a_running_lab_without_a_heartbeat_is_recorded_lost(lesson: Lesson, alice: str, r: redis.Redis,
                                                            settled: None, enqueued: list[str]) -> None:
    lab = running_lab(lesson, alice, r, beating=False)
    assert services.lab_watch(lab_id=str(lab.id)) is False
    lab.refresh_from_db()
    assert lab.state == Lab.State.FAILED
    status = json.loads(r.get(keys.status_key(str(lab.id))))
    assert (status["state"], status["reason"]) == ("lost", "lost")
    assert status["message"] == "lost: the worker hosting this lab stopped; start again"
    assert services.lab_for_session(session_key=alice, lesson=lesson) is None  # free to start again


def test_a_beating_lab_is_left_alone(lesson: Lesson, alice: str, r: redis.Redis, settled: None,
                                     enqueued: list[str]) -> None:
    lab = running_lab(lesson, alice, r, beating=True)
    assert services.lab_watch(lab_id=str(lab.id)) is True
    lab.refresh_from_db()
    assert lab.state == Lab.State.RUNNING


def test_a_lab_is_not_judged_by_a_redis_that_has_just_restarted(lesson: Lesson, alice: str, r: redis.Redis,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                enqueued: list[str]) -> None:
    # A restarted Redis holds no heartbeats until running labs have reconnected and beaten again.
    monkeypatch.setattr(services, "REDIS_SETTLE_S", 10**9)
    lab = running_lab(lesson, alice, r, beating=False)
    assert services.lab_watch(lab_id=str(lab.id)) is True
    lab.refresh_from_db()
    assert lab.state == Lab.State.RUNNING


def test_a_starting_lab_has_the_grace_its_worker_gave_it(lesson: Lesson, alice: str, r: redis.Redis,
                                                         settled: None, enqueued: list[str]) -> None:
    lab = services.lab_start(session_key=alice, lesson=lesson)
    Lab.objects.filter(pk=lab.pk).update(state=Lab.State.STARTING)  # claimed by a worker, which
    services._lab_claimed(r, lab)  # says so, with a first heartbeat that lasts the start-up
    assert 0 < r.ttl(keys.heartbeat_key(str(lab.id))) <= keys.STARTING_GRACE_S
    assert services.lab_watch(lab_id=str(lab.id)) is True
    r.delete(keys.heartbeat_key(str(lab.id)))  # the worker died before the engine's first beat
    assert services.lab_watch(lab_id=str(lab.id)) is False
    lab.refresh_from_db()
    assert lab.state == Lab.State.FAILED


def test_a_queued_lab_that_redis_lost_is_enqueued_again_once(lesson: Lesson, alice: str, r: redis.Redis,
                                                             enqueued: list[str]) -> None:
    lab = services.lab_start(session_key=alice, lesson=lesson)
    enqueued.clear()
    assert services.lab_watch(lab_id=str(lab.id)) is True
    assert enqueued == []  # its status key is there: so is its broker message
    r.flushdb()  # what a Redis restart without persistence leaves
    assert services.lab_watch(lab_id=str(lab.id)) is True
    assert services.lab_watch(lab_id=str(lab.id)) is True  # a second page of the session
    assert enqueued == [str(lab.id)]
    assert json.loads(r.get(keys.status_key(str(lab.id))))["state"] == "queued"
    lab.refresh_from_db()
    assert lab.state == Lab.State.QUEUED


def test_a_lab_that_ended_while_redis_was_away_gets_its_last_status(lesson: Lesson, alice: str,
                                                                   r: redis.Redis, enqueued: list[str]) -> None:
    lab = running_lab(lesson, alice, r, beating=False)
    Lab.objects.filter(pk=lab.pk).update(state=Lab.State.FAILED)  # lab_run recorded it; Redis lost the rest
    r.flushdb()
    assert services.lab_watch(lab_id=str(lab.id)) is False
    status = json.loads(r.get(keys.status_key(str(lab.id))))
    assert (status["state"], status["reason"]) == ("failed", "redis")
    assert status["message"] == "failed: the lab ended while Redis was unreachable"


# Nobody watching: before a start counts or allocates, dead labs are swept (services.lab_sweep) -------


def unwatched_lab(lesson: Lesson, r: redis.Redis, *, beating: bool, address: str = "10.1.2.3") -> Lab:
    """A running lab of another session at ``address`` that no page shows, so no lab_watch runs."""
    lab = running_lab(lesson, session_create(), r, beating=beating)
    Lab.objects.filter(pk=lab.pk).update(client_address=address)
    return lab


def assert_lost(lab: Lab, r: redis.Redis) -> None:
    lab.refresh_from_db()
    assert lab.state == Lab.State.FAILED
    status = json.loads(r.get(keys.status_key(str(lab.id))))
    assert (status["state"], status["reason"]) == ("lost", "lost")


@override_settings(LABS_PER_ADDRESS=2)
def test_an_unwatched_dead_lab_does_not_count_against_its_address(lesson: Lesson, alice: str, r: redis.Redis,
                                                                  settled: None, enqueued: list[str]) -> None:
    dead = unwatched_lab(lesson, r, beating=False)
    alive = unwatched_lab(lesson, r, beating=True)
    lab = services.lab_start(session_key=alice, lesson=lesson, client_address="10.1.2.3")
    assert lab.state == Lab.State.QUEUED
    assert_lost(dead, r)
    alive.refresh_from_db()
    assert alive.state == Lab.State.RUNNING
    with pytest.raises(services.LabRefused):  # the address is at its cap again: alice's lab and the live one
        services.lab_start(session_key=session_create(), lesson=lesson, client_address="10.1.2.3")


def test_an_unwatched_dead_labs_network_is_handed_out_again(lesson: Lesson, alice: str, r: redis.Redis,
                                                            settled: None, enqueued: list[str]) -> None:
    r.set(keys.NETBLOCK_COUNTER, 41)
    dead = unwatched_lab(lesson, r, beating=False)
    alive = unwatched_lab(lesson, r, beating=True)
    assert (dead.network, alive.network) == (keys.network_for(42), keys.network_for(43))
    r.set(keys.NETBLOCK_COUNTER, 41)  # the counter wrapped: its next block is the dead lab's
    lab = services.lab_start(session_key=alice, lesson=lesson)
    assert lab.network == keys.network_for(42)
    assert_lost(dead, r)
    alive.refresh_from_db()
    assert alive.state == Lab.State.RUNNING


def test_the_sweep_spares_a_lab_its_worker_has_just_claimed(lesson: Lesson, r: redis.Redis, settled: None,
                                                            enqueued: list[str]) -> None:
    # lab_run moves the row to starting, then beats: in between, the status still says queued.
    lab = services.lab_start(session_key=session_create(), lesson=lesson)
    Lab.objects.filter(pk=lab.pk).update(state=Lab.State.STARTING)
    assert services.lab_sweep() == 0
    lab.refresh_from_db()
    assert lab.state == Lab.State.STARTING


class ClaimedBetweenReads:
    """The suite's Redis, with lab_run's claim of ``lab`` (heartbeat, then status "starting")
    slipped in right after the first pipeline a caller runs: a worker claiming the lab while a
    page's watch or a sweep reads it, the race that recorded new labs lost in full runs."""

    def __init__(self, r: redis.Redis, lab: Lab) -> None:
        self.r, self.lab, self.claimed = r, lab, False

    def pipeline(self, **kwargs: Any) -> Any:
        pipe = self.r.pipeline(**kwargs)
        execute = pipe.execute

        def execute_then_claim(*args: Any, **kw: Any) -> Any:
            out = execute(*args, **kw)
            if not self.claimed:
                self.claimed = True
                services._lab_claimed(self.r, self.lab)
            return out

        pipe.execute = execute_then_claim
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.r, name)


@pytest.mark.parametrize("caller", ["a page's watch", "a sweep"])
def test_a_lab_its_worker_claims_while_it_is_read_is_not_recorded_lost(
        lesson: Lesson, r: redis.Redis, settled: None, enqueued: list[str], monkeypatch: pytest.MonkeyPatch,
        caller: str) -> None:
    lab = services.lab_start(session_key=session_create(), lesson=lesson)
    Lab.objects.filter(pk=lab.pk).update(state=Lab.State.STARTING)  # lab_run's claim of the row
    redis_between = ClaimedBetweenReads(r, lab)
    monkeypatch.setattr(services.core_redis, "client", lambda: redis_between)
    if caller == "a sweep":
        assert services.lab_sweep() == 0
    else:
        assert services.lab_watch(lab_id=str(lab.id)) is True
    assert redis_between.claimed
    lab.refresh_from_db()
    assert lab.state == Lab.State.STARTING
    assert json.loads(r.get(keys.status_key(str(lab.id))))["state"] == "starting"


def test_the_sweep_does_not_judge_by_a_redis_that_has_just_restarted(lesson: Lesson, r: redis.Redis,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     enqueued: list[str]) -> None:
    monkeypatch.setattr(services, "REDIS_SETTLE_S", 10**9)
    lab = unwatched_lab(lesson, r, beating=False)
    assert services.lab_sweep() == 0
    lab.refresh_from_db()
    assert lab.state == Lab.State.RUNNING


# Running a lab (services.lab_run), with the engine replaced ---------------------------------------


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A stand-in for run_lab: records its arguments, says it runs, returns ``result``."""
    seen: dict[str, Any] = {"calls": [], "result": "stopped", "during": None}

    async def run_lab(**kwargs: Any) -> str:
        seen["calls"].append(kwargs)
        await kwargs["on_running"]()
        if seen["during"] is not None:
            await asyncio.to_thread(seen["during"], kwargs["lab_id"])
        return seen["result"]

    import core.engine.runner

    monkeypatch.setattr(core.engine.runner, "run_lab", run_lab)
    return seen


def test_a_lab_runs_once_however_often_it_is_delivered(lesson: Lesson, alice: str, engine: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch, enqueued: list[str]) -> None:
    lab = services.lab_start(session_key=alice, lesson=lesson)
    # A second delivery read the row as queued just before the first one claimed it.
    stale = Lab.objects.select_related("lesson").get(pk=lab.pk)
    Lab.objects.filter(pk=lab.pk).update(state=Lab.State.STARTING)
    monkeypatch.setattr(Lab.objects, "select_related",
                        lambda *a: SimpleNamespace(filter=lambda **k: SimpleNamespace(first=lambda: stale)))
    services.lab_run(lab_id=str(lab.id))
    assert engine["calls"] == []


def test_it_passes_the_lifetime_and_records_the_lab_running(lesson: Lesson, alice: str, engine: dict[str, Any],
                                                            settings: Any, enqueued: list[str]) -> None:
    settings.LAB_MAX_SECONDS = 90
    lab = services.lab_start(session_key=alice, lesson=lesson)
    states = []
    engine["during"] = lambda lab_id: states.append(Lab.objects.get(pk=lab_id).state)
    services.lab_run(lab_id=str(lab.id))
    [call] = engine["calls"]
    assert call["max_seconds"] == 90
    assert states == [Lab.State.RUNNING]
    lab.refresh_from_db()
    assert lab.state == Lab.State.STOPPED


def test_a_lab_that_failed_is_recorded_failed(lesson: Lesson, alice: str, engine: dict[str, Any],
                                              enqueued: list[str]) -> None:
    engine["result"] = "failed"
    lab = services.lab_start(session_key=alice, lesson=lesson)
    services.lab_run(lab_id=str(lab.id))
    lab.refresh_from_db()
    assert lab.state == Lab.State.FAILED


def test_a_lab_recorded_lost_meanwhile_stays_failed(lesson: Lesson, alice: str, engine: dict[str, Any],
                                                   enqueued: list[str]) -> None:
    engine["during"] = lambda lab_id: Lab.objects.filter(pk=lab_id).update(state=Lab.State.FAILED)
    lab = services.lab_start(session_key=alice, lesson=lesson)
    services.lab_run(lab_id=str(lab.id))
    lab.refresh_from_db()
    assert lab.state == Lab.State.FAILED


# The page's socket ----------------------------------------------------------------------------


@pytest.fixture
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumers, "WATCH_S", 0.2)


async def test_the_page_is_told_its_lab_was_lost_and_can_start_again(
    lesson: Lesson, alice: str, r: redis.Redis, settled: None, quick_watch: None, enqueued: list[str]
) -> None:
    lab = await database_sync_to_async(running_lab)(lesson, alice, r, beating=False)
    comm, hello = await connected(alice)
    assert hello["status"]["lab"] == str(lab.id)
    lost = await receive_until(comm, "status", state="lost")
    assert lost["lab"] == str(lab.id) and lost["message"].startswith("lost: the worker hosting this lab stopped")
    await comm.send_json_to({"action": "kill", "node": "web"})
    assert (await receive_until(comm, "error"))["message"] == "lab is not running"
    await comm.send_json_to({"action": "start"})
    queued = await receive_until(comm, "status", state="queued")
    assert queued["lab"] != str(lab.id)
    await comm.disconnect()


async def test_a_command_nobody_receives_gets_an_error(lesson: Lesson, alice: str, r: redis.Redis,
                                                       enqueued: list[str]) -> None:
    # Its worker has just died: the heartbeat has not expired yet, but nothing hears the command.
    await database_sync_to_async(running_lab)(lesson, alice, r, beating=True)
    comm, _ = await connected(alice)
    command = {"action": "kill", "node": "web"}
    await comm.send_json_to(command)
    error = await receive_until(comm, "error")
    assert error["message"] == "the lab did not receive this command: its worker is not answering"
    assert error["command"] == command
    await comm.disconnect()


async def test_a_command_to_a_queued_lab_says_it_is_not_running_yet(lesson: Lesson, alice: str,
                                                                   enqueued: list[str]) -> None:
    await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    comm, _ = await connected(alice)
    await comm.send_json_to({"action": "traffic", "rate": 10})
    assert (await receive_until(comm, "error"))["message"] == "the lab is not running yet: this command was not sent"
    await comm.disconnect()


async def test_the_page_of_a_queued_lab_that_redis_lost_sees_it_queued_again(
    lesson: Lesson, alice: str, r: redis.Redis, redis_url: str, quick_watch: None, enqueued: list[str]
) -> None:
    lab = await database_sync_to_async(services.lab_start)(session_key=alice, lesson=lesson)
    enqueued.clear()
    comm, _ = await connected(alice)
    r.delete(keys.status_key(str(lab.id)))  # Redis restarted: its status and broker message are gone
    status = await receive_until(comm, "status", state="queued")
    assert status["lab"] == str(lab.id)
    assert enqueued == [str(lab.id)]
    await comm.disconnect()


async def test_commands_still_reach_a_listening_engine(lesson: Lesson, alice: str, r: redis.Redis,
                                                       redis_url: str, enqueued: list[str]) -> None:
    lab = await database_sync_to_async(running_lab)(lesson, alice, r, beating=True)
    async with listening(redis_url, keys.in_channel(str(lab.id))) as pubsub:
        comm, _ = await connected(alice)
        await comm.send_json_to({"action": "kill", "node": "web"})
        assert await next_message(pubsub) == {"action": "kill", "node": "web"}
        assert await comm.receive_nothing(timeout=0.5)  # and no error: it was received
        await comm.disconnect()
