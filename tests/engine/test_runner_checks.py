"""Live checks in the runner: a real lab, its frames evaluated server-side, verdicts on request."""

import asyncio
import json

import redis.asyncio as aioredis

from core.engine import keys
from core.engine.host import LiveChecks
from core.engine.runner import run_lab
from tests.engine.test_runner import next_message
from tests.engine.topologies import stage1

CHECKS = {
    "start": "event(lab_started)",
    "kill-web": 'event(node_killed, node=web)\nwhen metric(web.up) == 1 say "Kill the web server"',
    "outage": "metric(totals.err_rps) > 0 for 1s",
}


async def test_it_publishes_passed_steps_and_answers_check_now_with_a_hint(redis_url, network):
    r = aioredis.from_url(redis_url)
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.out_channel("c1"))
    task = asyncio.create_task(run_lab(lab_id="c1", topology=stage1(rate=10, service_ms=2).to_dict(),
                                       network=network, redis_url=redis_url, checks=CHECKS))
    try:
        started = await next_message(pubsub, "check", where=lambda m: m["step"] == "start")
        assert started["passed"] is True and started["lab"] == "c1" and started["seconds"] < 2
        assert "lab_started" in started["detail"]

        # "Check now" on a step not done yet: its verdict with the index of the hint that holds.
        await r.publish(keys.in_channel("c1"), json.dumps({"action": "check", "step": "kill-web"}))
        verdict = await next_message(pubsub, "check", where=lambda m: m["step"] == "kill-web")
        assert verdict["passed"] is False and verdict["hint"] == 0 and verdict["now"] is True

        # Acting in the lab passes the step; the outage then lasts long enough for the next one.
        await r.publish(keys.in_channel("c1"), json.dumps({"action": "kill", "node": "web"}))
        killed = await next_message(pubsub, "check", where=lambda m: m["step"] == "kill-web")
        assert killed["passed"] is True and "hint" not in killed
        outage = await next_message(pubsub, "check", where=lambda m: m["step"] == "outage")
        # Timed from its predecessor passing in this lab, so at least the 1 s it had to hold.
        assert outage["passed"] is True and 1.0 <= outage["seconds"] < 4

        await r.publish(keys.in_channel("c1"), json.dumps({"action": "check", "step": "kill-web"}))
        again = await next_message(pubsub, "check", where=lambda m: m.get("now") and m["step"] == "kill-web")
        assert again["passed"] is True and again["hint"] is None

        await r.publish(keys.in_channel("c1"), json.dumps({"action": "check", "step": "nope"}))
        assert "no check" in (await next_message(pubsub, "error"))["message"]
        await r.publish(keys.in_channel("c1"), json.dumps({"action": "check", "step": 3}))
        assert "step id" in (await next_message(pubsub, "error"))["message"]
    finally:
        await r.publish(keys.in_channel("c1"), json.dumps({"action": "stop"}))
        await asyncio.wait_for(task, 5)
        await pubsub.aclose()
        await r.aclose()


def test_a_broken_check_is_skipped_not_fatal():
    live = LiveChecks({"bad": "metric(", "ok": "event(lab_started)"}, started=100.0)
    assert live.order == ["ok"]
    [message] = live.feed({"t": 101.5, "totals": {}, "nodes": {}, "edges": {}, "events": [
        {"t": 101.0, "kind": "lab_started"}]})
    assert message["step"] == "ok" and message["seconds"] == 1.5
    assert live.verdict("bad")["type"] == "error"


def test_without_checks_nothing_is_evaluated():
    live = LiveChecks(None, started=0.0)
    assert live.feed({"t": 1.0, "events": [{"t": 1.0, "kind": "lab_started"}]}) == []
