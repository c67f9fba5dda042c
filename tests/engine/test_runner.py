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
        assert stopped["state"] == "stopped"
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
