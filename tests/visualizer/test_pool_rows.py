"""The hot pool's rows against a real Redis, no worker: what a claim does when no engine hears it,
what it hands over and tops up, and what a drain leaves alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from core import redis as core_redis
from core.engine import keys
from lessons.models import Lesson
from tests.visualizer.test_faults import enqueued  # noqa: F401 (a fixture)
from visualizer import pool, services
from visualizer.models import Lab

pytestmark = pytest.mark.django_db(transaction=True)
POOL = "rows-pool"


@pytest.fixture
def engines(redis_url: str) -> Iterator[redis.client.PubSub]:
    """Stands where running engines would: subscribed to the in channels of the pool's labs."""
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    yield pubsub
    pubsub.close()
    client.close()


def run_all(engines: redis.client.PubSub | None) -> list[Lab]:
    """Mark the pool's labs running (as their worker would), listening on their in channels."""
    labs = list(Lab.objects.filter(pool=POOL, state=Lab.State.QUEUED).order_by("created"))
    Lab.objects.filter(pk__in=[lab.pk for lab in labs]).update(state=Lab.State.RUNNING)
    if engines is not None:
        engines.subscribe(*[keys.in_channel(str(lab.id)) for lab in labs])
    return labs


def test_a_claim_no_engine_hears_stops_that_lab_and_says_none(lesson: Lesson, enqueued: list[str]) -> None:  # noqa: F811
    assert pool.pool_fill(pool=POOL, lesson=lesson, size=1) == 1
    [lab] = run_all(None)  # its worker died: nothing listens on its in channel
    assert pool.pool_claim(pool=POOL, session_key="sam", lesson=lesson) is None
    lab.refresh_from_db()
    assert lab.state == Lab.State.STOPPED and lab.session_key == "sam"  # not handed out, and stopped


def test_a_claim_refills_until_the_pool_is_drained(lesson: Lesson, enqueued: list[str],  # noqa: F811
                                                   engines: redis.client.PubSub) -> None:
    assert pool.pool_fill(pool=POOL, lesson=lesson, size=2) == 2
    first, _ = run_all(engines)
    claimed = pool.pool_claim(pool=POOL, session_key="sam", lesson=lesson, client_address="10.0.0.7")
    assert claimed is not None and claimed.pk == first.pk  # the oldest first
    assert (claimed.session_key, claimed.pool, claimed.client_address) == ("sam", "", "10.0.0.7")
    assert Lab.objects.filter(pool=POOL, state__in=Lab.LIVE_STATES).count() == 2  # one queued to replace it
    messages = [m for m in iter(lambda: engines.get_message(timeout=1), None) if m["type"] == "message"]
    assert [json.loads(m["data"]) for m in messages] == [{"action": "claim"}]

    assert pool.pool_drain(pool=POOL) == 2
    assert not Lab.objects.filter(pool=POOL, state__in=Lab.LIVE_STATES).exists()
    claimed.refresh_from_db()
    assert claimed.state == Lab.State.RUNNING  # the student's lab is not the pool's any more


def test_a_fill_is_remembered_until_the_end_it_names_or_a_day(lesson: Lesson, enqueued: list[str]) -> None:  # noqa: F811
    r = core_redis.client()
    pool.pool_fill(pool=POOL, lesson=lesson, size=1, until=timezone.now() + timedelta(days=5))
    assert 5 * 86400 - 60 < r.ttl(pool._fill_key(POOL)) <= 5 * 86400
    pool.pool_fill(pool=POOL, lesson=lesson, size=1)  # no end named: the fallback
    assert pool.FILL_TTL_S - 60 < r.ttl(pool._fill_key(POOL)) <= pool.FILL_TTL_S
    pool.pool_fill(pool=POOL, lesson=lesson, size=1, until=timezone.now() - timedelta(seconds=5))
    assert r.ttl(pool._fill_key(POOL)) == 1  # already past: gone at once, not an error
    assert len(enqueued) == 1  # the pool was full all along
    pool.pool_drain(pool=POOL)


def test_pool_labs_carry_the_pools_end_and_one_whose_slot_comes_after_it_never_starts(
        lesson: Lesson, enqueued: list[str], engines: redis.client.PubSub) -> None:  # noqa: F811
    until = timezone.now() + timedelta(hours=1)
    pool.pool_fill(pool=POOL, lesson=lesson, size=1, until=until)
    [first] = run_all(engines)
    assert first.pool_until == until  # the engine stops it then if nobody has claimed it
    claimed = pool.pool_claim(pool=POOL, session_key="sam", lesson=lesson)
    assert claimed is not None and claimed.pool_until is None  # the student's now, not bound by the pool
    refill = Lab.objects.get(pool=POOL, state=Lab.State.QUEUED)
    assert refill.pool_until == until  # a claim's refill carries it too

    Lab.objects.filter(pk=refill.pk).update(pool_until=timezone.now() - timedelta(seconds=1))
    services.lab_run(lab_id=str(refill.id))  # its worker slot came after the workshop ended
    refill.refresh_from_db()
    assert refill.state == Lab.State.STOPPED
    status = json.loads(core_redis.client().get(keys.status_key(str(refill.id))))
    assert (status["state"], status["reason"]) == ("stopped", "unclaimed")
    assert not core_redis.client().exists(keys.heartbeat_key(str(refill.id)))  # it never ran
