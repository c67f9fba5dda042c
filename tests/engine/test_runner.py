"""A lab wired to a real Redis: commands in, frames and status out."""

import asyncio
import json

import redis.asyncio as aioredis

from core.engine import keys
from core.engine.runner import run_lab
from tests.engine.topologies import stage1


async def next_message(pubsub, want: str, timeout: float = 5.0, where=lambda m: True) -> dict:
    async def wait():
        async for item in pubsub.listen():
            if item["type"] == "message":
                msg = json.loads(item["data"])
                if msg["type"] == want and where(msg):
                    return msg

    return await asyncio.wait_for(wait(), timeout)


async def test_it_streams_frames_obeys_commands_and_stops(redis_url, network):
    r = aioredis.from_url(redis_url)
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.out_channel("t1"))
    task = asyncio.create_task(
        run_lab(
            lab_id="t1",
            topology=stage1(rate=20, service_ms=2).to_dict(),
            network=network,
            redis_url=redis_url,
        )
    )
    try:
        running = await next_message(pubsub, "status", where=lambda m: m["state"] == "running")
        assert running["nodes"]["web"] == {
            "state": "up",
            "address": f"{network}.80",
            "port": 8080,
            "proto": "tcp",
        }
        frame = await next_message(pubsub, "frame", where=lambda m: m["totals"]["rps"] > 0)
        assert frame["lab"] == "t1"

        await r.publish(keys.in_channel("t1"), json.dumps({"action": "kill", "node": "nope"}))
        error = await next_message(pubsub, "error")
        assert "unknown node 'nope'" in error["message"]
        await r.publish(keys.in_channel("t1"), "{not json")
        assert "not JSON" in (await next_message(pubsub, "error"))["message"]

        await r.publish(keys.in_channel("t1"), json.dumps({"action": "kill", "node": "web"}))
        down = await next_message(
            pubsub, "frame", where=lambda m: not m["nodes"]["web"]["up"] and m["totals"]["err_rps"] > 0
        )
        assert down["nodes"]["web"]["rps"] > 0  # clients kept trying and failing
        assert json.loads(await r.get(keys.status_key("t1")))["nodes"]["web"]["state"] == "down"
        assert await r.llen(keys.history_key("t1")) >= 1

        await r.publish(keys.in_channel("t1"), json.dumps({"action": "stop"}))
        assert await asyncio.wait_for(task, 5) == "stopped"
        stopped = json.loads(await r.get(keys.status_key("t1")))
        assert stopped["state"] == "stopped" and "reason" not in stopped  # a stop command needs no word
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()
        await r.aclose()


async def test_it_stops_itself_when_nobody_watches(redis_url, network):
    reason = await asyncio.wait_for(
        run_lab(lab_id="t2", topology=stage1().to_dict(), network=network, redis_url=redis_url, idle_seconds=0.5),
        10,
    )
    assert reason == "idle"


async def test_a_watched_lab_stops_at_its_lifetime_and_says_why(redis_url, network):
    r = aioredis.from_url(redis_url)
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.out_channel("t3"))  # watched: idleness would never stop it
    try:
        reason = await asyncio.wait_for(
            run_lab(lab_id="t3", topology=stage1().to_dict(), network=network, redis_url=redis_url,
                    idle_seconds=600, max_seconds=1.5),
            15,
        )
        assert reason == "limit"
        last = json.loads(await r.get(keys.status_key("t3")))
        assert (last["state"], last["reason"], last["limit_s"]) == ("stopped", "limit", 1.5)
        assert last["message"] == "stopped: reached the 1.5-second limit"
    finally:
        await pubsub.aclose()
        await r.aclose()


async def test_a_running_lab_keeps_its_heartbeat_fresh(redis_url, network):
    r = aioredis.from_url(redis_url)
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.out_channel("t4"))
    task = asyncio.create_task(run_lab(lab_id="t4", topology=stage1().to_dict(), network=network,
                                       redis_url=redis_url))
    try:
        await next_message(pubsub, "status", where=lambda m: m["state"] == "running")
        for _ in range(3):
            await asyncio.sleep(1.0)
            assert 0 < await r.ttl(keys.heartbeat_key("t4")) <= keys.HEARTBEAT_TTL_S
        await r.publish(keys.in_channel("t4"), json.dumps({"action": "stop"}))
        assert await asyncio.wait_for(task, 10) == "stopped"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()
        await r.aclose()
