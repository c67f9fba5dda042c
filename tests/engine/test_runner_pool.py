"""A hot-pool lab in the runner: it waits unwatched for its claim, then starts afresh for its claimant."""

import asyncio
import json
import time

import redis.asyncio as aioredis

from core.engine import keys
from core.engine.runner import run_lab
from tests.engine.test_runner import next_message
from tests.engine.topologies import stage1

CHECKS = {"start": "event(lab_started)", "traffic": "metric(totals.rps) > 0 for 1s"}


async def test_a_pool_lab_waits_unwatched_then_judges_its_claimant_from_the_claim(redis_url, network):
    r = aioredis.from_url(redis_url)
    task = asyncio.create_task(run_lab(lab_id="p1", topology=stage1(rate=10, service_ms=2).to_dict(),
                                       network=network, redis_url=redis_url, checks=CHECKS,
                                       idle_seconds=0.5, pooled=True))
    pubsub = r.pubsub()
    try:
        async with asyncio.timeout(15):  # bounded: the lab runs (its status key says so)
            while not (raw := await r.get(keys.status_key("p1"))) or json.loads(raw)["state"] != "running":
                await asyncio.sleep(0.05)
        await asyncio.sleep(3)  # six times its idle time, unwatched
        assert not task.done()
        assert not await r.exists(keys.history_key("p1"))  # its chart starts at the claim

        claimed_at = time.time()
        await r.publish(keys.in_channel("p1"), json.dumps({"action": "claim"}))
        await asyncio.sleep(0.5)  # the claimant's page subscribes a moment later
        await pubsub.subscribe(keys.out_channel("p1"))
        started = await next_message(pubsub, "check", where=lambda m: m["step"] == "start")
        assert started["passed"] is True and started["t"] >= claimed_at + 0.5 and started["seconds"] < 1
        traffic = await next_message(pubsub, "check", where=lambda m: m["step"] == "traffic")
        assert 1 <= traffic["seconds"] < 3  # timed from the claim, not from the pool's start
        await r.publish(keys.in_channel("p1"), json.dumps({"action": "claim"}))  # a repeat: ignored
        await asyncio.sleep(1.2)
        assert await r.llen(keys.history_key("p1")) >= 1

        await pubsub.unsubscribe(keys.out_channel("p1"))  # claimed, it stops for idleness like any lab
        assert await asyncio.wait_for(task, 10) == "idle"
    finally:
        if not task.done():
            await r.publish(keys.in_channel("p1"), json.dumps({"action": "stop"}))
            await asyncio.wait_for(task, 5)
        await pubsub.aclose()
        await r.aclose()


async def test_a_pool_lab_still_ends_at_its_lifetime_if_nobody_claims_it(redis_url, network):
    reason = await asyncio.wait_for(
        run_lab(lab_id="p2", topology=stage1().to_dict(), network=network, redis_url=redis_url,
                idle_seconds=0.5, max_seconds=2.5, pooled=True), 15)
    assert reason == "limit"  # a pool nobody drained does not run for ever


async def test_a_pool_lab_nobody_claims_ends_when_its_pool_closes_and_says_why(redis_url, network):
    r = aioredis.from_url(redis_url)
    try:
        reason = await asyncio.wait_for(
            run_lab(lab_id="p3", topology=stage1().to_dict(), network=network, redis_url=redis_url,
                    idle_seconds=0.5, max_seconds=600, pooled=True, pool_seconds=2.5), 15)
        assert reason == "unclaimed"  # its workshop's end, long before its lifetime
        last = json.loads(await r.get(keys.status_key("p3")))
        assert (last["state"], last["reason"]) == ("stopped", "unclaimed")
        assert last["message"] == "stopped: its workshop ended before anyone claimed it"
    finally:
        await r.aclose()


async def test_a_claimed_pool_lab_is_not_held_to_its_pools_end(redis_url, network):
    r = aioredis.from_url(redis_url)
    pool_s = 5.0  # time enough to start and be claimed on a busy machine
    opened = time.monotonic()
    task = asyncio.create_task(run_lab(lab_id="p4", topology=stage1().to_dict(), network=network,
                                       redis_url=redis_url, idle_seconds=600, pooled=True, pool_seconds=pool_s))
    try:
        async with asyncio.timeout(pool_s):
            while not (raw := await r.get(keys.status_key("p4"))) or json.loads(raw)["state"] != "running":
                await asyncio.sleep(0.05)
        await r.publish(keys.in_channel("p4"), json.dumps({"action": "claim"}))
        # Past the pool's end the claimant's lab runs on: its lifetime and idleness count from the claim.
        await asyncio.sleep(opened + pool_s + 2 - time.monotonic())
        assert not task.done()
    finally:
        await r.publish(keys.in_channel("p4"), json.dumps({"action": "stop"}))
        assert await asyncio.wait_for(task, 10) == "stopped"
        await r.aclose()
