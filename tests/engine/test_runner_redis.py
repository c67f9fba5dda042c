"""A lab outlives a Redis restart, and ends as failed, saying why, when Redis stays away.

Each test has a redis-server of its own, killed and started again on the same port (with nothing
on disk, as the bundled one runs), so the suite's Redis is never touched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.engine import keys
from core.engine.runner import RedisLink, duration_text, run_lab
from tests.engine.test_runner import next_message
from tests.engine.topologies import stage1
from tests.stack import RestartableRedis


@pytest.fixture
async def watcher(own_redis: RestartableRedis) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(own_redis.url)
    yield r
    await r.aclose()


async def subscribed(r: aioredis.Redis, lab_id: str) -> aioredis.client.PubSub:
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.out_channel(lab_id))
    return pubsub


async def test_a_lab_carries_on_through_a_redis_restart(own_redis, watcher, network):
    pubsub = await subscribed(watcher, "r1")
    task = asyncio.create_task(run_lab(lab_id="r1", topology=stage1(rate=20, service_ms=2).to_dict(),
                                       network=network, redis_url=own_redis.url))
    try:
        await next_message(pubsub, "status", where=lambda m: m["state"] == "running")
        before = (await next_message(pubsub, "frame"))["seq"]
        await pubsub.aclose()

        own_redis.kill()
        await asyncio.sleep(3.0)  # the lab's calls fail meanwhile; it must not end
        assert not task.done()
        own_redis.start()

        # The lab subscribes its in channel again by itself: a command reaches it and works.
        deadline = time.monotonic() + 15
        while await watcher.publish(keys.in_channel("r1"), json.dumps({"action": "ping"})) == 0:
            assert time.monotonic() < deadline, "the lab never subscribed its in channel again"
            await asyncio.sleep(0.2)
        pubsub = await subscribed(watcher, "r1")
        frame = await next_message(pubsub, "frame", where=lambda m: m["seq"] > before)
        assert frame["totals"]["rps"] > 0  # traffic flows on
        deadline = time.monotonic() + 3 * keys.HEARTBEAT_S
        while not await watcher.exists(keys.heartbeat_key("r1")):  # beating again
            assert time.monotonic() < deadline, "the lab's heartbeat did not come back"
            await asyncio.sleep(0.1)
        await watcher.publish(keys.in_channel("r1"), json.dumps({"action": "kill", "node": "web"}))
        await next_message(pubsub, "frame", where=lambda m: not m["nodes"]["web"]["up"])
        assert json.loads(await watcher.get(keys.status_key("r1")))["state"] == "running"

        await watcher.publish(keys.in_channel("r1"), json.dumps({"action": "stop"}))
        assert await asyncio.wait_for(task, 10) == "stopped"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()


async def test_a_lab_ends_as_failed_when_redis_stays_away(own_redis, watcher, network):
    pubsub = await subscribed(watcher, "r2")
    task = asyncio.create_task(run_lab(lab_id="r2", topology=stage1().to_dict(), network=network,
                                       redis_url=own_redis.url, redis_outage_s=2.0))
    try:
        await next_message(pubsub, "status", where=lambda m: m["state"] == "running")
        await pubsub.aclose()
        own_redis.kill()
        began = time.monotonic()
        assert await asyncio.wait_for(task, 20) == "failed"
        assert time.monotonic() - began < 15
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_failed_lab_says_why_when_redis_is_back_in_time(own_redis, watcher, network):
    # Redis back before the lab's last messages are given up: the page can read why it ended.
    pubsub = await subscribed(watcher, "r3")
    task = asyncio.create_task(run_lab(lab_id="r3", topology=stage1().to_dict(), network=network,
                                       redis_url=own_redis.url, redis_outage_s=1.0))
    try:
        await next_message(pubsub, "status", where=lambda m: m["state"] == "running")
        await pubsub.aclose()
        own_redis.kill()
        await asyncio.sleep(2.5)  # past the outage the lab tolerates: it is stopping
        own_redis.start()
        assert await asyncio.wait_for(task, 20) == "failed"
        last = json.loads(await watcher.get(keys.status_key("r3")))
        assert (last["state"], last["reason"]) == ("failed", "redis")
        assert last["message"] == "failed: lost its connection to Redis for 1 s"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_link_gives_up_only_after_a_whole_outage() -> None:
    now = [0.0]
    link = RedisLink("lab x", give_up_after=30, clock=lambda: now[0])
    link.failed(ConnectionError("refused"))
    now[0] = 29.0
    link.failed(ConnectionError("refused"))  # the outage began at 0, not now
    assert not link.gave_up
    link.ok()
    now[0] = 45.0
    link.failed(ConnectionError("refused"))
    assert not link.gave_up
    now[0] = 75.0
    assert link.gave_up


@pytest.mark.parametrize(("seconds", "text"), [(7200, "2-hour"), (5400, "90-minute"), (60, "1-minute"),
                                               (45, "45-second"), (1.5, "1.5-second")])
def test_a_lifetime_is_worded_in_its_largest_whole_unit(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
