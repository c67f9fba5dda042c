"""Stage 9 on real sockets: sessions in a server's memory die with it, in the shared store they
survive, and the autoscaler adds and removes web servers through the lab's own add and remove."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from core.engine.commands import CommandError
from core.engine.lab import Lab
from core.engine.sessions import SESSION_COOKIE
from core.engine.telemetry import Trace
from core.engine.workload import Request
from tests.engine.topologies import stage9

USERS = range(1, 13)


def login(user: int) -> Request:
    return Request("POST", "/api/login", {"user": user}, user, False, "login")


def feed(user: int) -> Request:
    return Request("GET", "/api/feed", None, user, False, "feed", (("user", str(user)),))


async def log_everyone_in(lab: Lab) -> None:
    browser = lab.nodes["browser"]
    for user in USERS:
        await browser.request(login(user))
    assert all(browser.user_sessions.logged_in(u) for u in USERS)


async def read_all(lab: Lab) -> None:
    browser = lab.nodes["browser"]
    await asyncio.gather(*(browser.request(feed(u)) for u in USERS))


def totals(lab: Lab) -> dict[str, Any]:
    return lab.frame()["totals"]


async def test_sessions_in_memory_die_with_their_server_and_each_lost_user_is_counted_once(network):
    async with Lab(stage9(algorithm="sticky", store=False), network=network) as lab:
        await log_everyone_in(lab)
        on_web1 = lab.nodes["web-1"].sessions.count
        assert on_web1 and lab.nodes["web-2"].sessions.count == len(USERS) - on_web1  # round robin, then pinned
        await read_all(lab)
        await read_all(lab)
        assert totals(lab)["logouts_total"] == 0  # sticky: every user stays on the server that knows them
        await lab.command({"action": "kill", "node": "web-1"})
        await read_all(lab)  # web-1's users: refused, retried on web-2, which has never heard of them
        browser = lab.nodes["browser"]
        assert browser.user_sessions.logouts == on_web1
        assert sum(not browser.user_sessions.logged_in(u) for u in USERS) == on_web1
        await read_all(lab)  # logged out is not counted again: they no longer send a session
        frame = totals(lab)
        assert frame["logouts_total"] == on_web1 and frame["logouts_rps"] > 0


async def test_round_robin_over_sessions_in_memory_logs_users_out_without_any_fault(network):
    async with Lab(stage9(algorithm="round_robin", store=False), network=network) as lab:
        await log_everyone_in(lab)  # users 1, 3, 5 … on web-1, 2, 4, 6 … on web-2
        browser = lab.nodes["browser"]
        await browser.request(feed(100))  # an anonymous visitor: the turn moves on by one
        for user in USERS:  # one at a time, so that the turns are known
            await browser.request(feed(user))
        assert totals(lab)["logouts_total"] == len(USERS)  # each user bounced to the server without them


async def test_sessions_moved_to_the_shared_store_survive_a_killed_server(network):
    messages: list[dict[str, Any]] = []
    async with Lab(stage9(algorithm="round_robin", sessions="memory"), network=network, emit=messages.append) as lab:
        await log_everyone_in(lab)
        assert lab.nodes["web-1"].sessions.count + lab.nodes["web-2"].sessions.count == len(USERS)
        await lab.command({"action": "sessions", "node": "store", "value": "shared"})
        events = [e for e in lab.frame()["events"] if e["kind"] == "sessions_set"]
        assert events and events[-1]["moved"] == len(USERS) and events[-1]["shared"] is True
        await read_all(lab)  # round robin: every user meets a server that did not log them in
        assert totals(lab)["logouts_total"] == 0
        await lab.command({"action": "kill", "node": "web-1"})
        await read_all(lab)
        await read_all(lab)
        browser = lab.nodes["browser"]
        assert browser.user_sessions.logouts == 0
        assert all(browser.user_sessions.logged_in(u) for u in USERS)
        # A new login lands in the store too, and the store holds every session.
        await browser.request(login(99))
        async with asyncio.timeout(5):
            while lab.nodes["store"].keys < len(USERS) + 1:  # its gauge refreshes once a second
                await asyncio.sleep(0.1)
        assert lab.frame()["nodes"]["store"]["sessions"] == len(USERS) + 1
        assert SESSION_COOKIE in browser.user_sessions.cookies(99)


async def test_a_dead_session_store_fails_logged_in_pages_rather_than_logging_users_out(network):
    async with Lab(stage9(algorithm="round_robin", sessions="shared"), network=network) as lab:
        await log_everyone_in(lab)
        await lab.command({"action": "kill", "node": "store"})
        await read_all(lab)
        frame = totals(lab)
        assert frame["logouts_total"] == 0 and frame["err_rps"] > 0
        assert all(lab.nodes["browser"].user_sessions.logged_in(u) for u in USERS)


async def until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.1)


async def test_the_autoscaler_adds_a_server_under_load_and_drains_one_when_it_passes(network):
    # One server of 2 workers × 20 ms serves 100 req/s: 70 req/s is 0.7 of it, above the 0.4 target.
    policy = {"enabled": "on", "target_util": 0.4, "min": 1, "max": 3, "cooldown_s": 1}
    topology = stage9(algorithm="round_robin", backends=1, store=False, autoscaler=policy, workers=2,
                      service_ms=20.0, rate=70)
    seen: list[dict[str, Any]] = []
    async with Lab(topology, network=network) as lab:
        scaler = lab.nodes["scaler"]

        def events(kind: str) -> list[dict[str, Any]]:
            seen.extend(lab.frame()["events"])
            return [e for e in seen if e["kind"] == kind]

        await until(lambda: events("scaled_out"), timeout=20)
        out = events("scaled_out")[0]
        assert out["node"] == "scaler" and out["servers"] >= 2 and out["util"] > 0.4
        assert "web-2" in lab.nodes and lab.nodes["web-2"].up
        assert any(e["kind"] == "node_added" and e["node"] == "web-2" for e in seen)  # the lab's own add
        assert lab.frame()["nodes"]["scaler"]["servers"] == len(scaler.servers()) >= 2
        await until(lambda: lab.nodes["web-2"].served > 0, timeout=5)
        failed: list[Trace] = []
        record = lab.telemetry.record
        lab.telemetry.record = lambda t: (t.ok or failed.append(t), record(t))  # watch every request from here
        lab.nodes["browser"].set_rate(5)
        await until(lambda: events("scaled_in"), timeout=25)
        back = events("scaled_in")[0]
        assert back["servers"] == len(scaler.servers()) < out["servers"]
        assert any(e["kind"] == "node_removed" for e in seen)  # drained, then removed
        await asyncio.sleep(0.5)
        assert not failed, [t.hops for t in failed[:3]]  # a drained server fails no request
        # Never below the minimum, whatever the load.
        lab.nodes["browser"].set_rate(0)
        await asyncio.sleep(2.5)
        assert len(scaler.servers()) >= 1


async def test_the_autoscalers_policy_changes_live_and_an_impossible_one_is_refused(network):
    topology = stage9(algorithm="round_robin", backends=2, store=False, autoscaler={"min": 2, "max": 4})
    async with Lab(topology, network=network) as lab:
        await lab.command({"action": "target", "node": "scaler", "util": 0.7})
        await lab.command({"action": "limits", "node": "scaler", "max": 8})
        await lab.command({"action": "cooldown", "node": "scaler", "s": 30})
        gauges = lab.frame()["nodes"]["scaler"]
        assert (gauges["target_util"], gauges["min_servers"], gauges["max_servers"], gauges["cooldown_s"]) == (
            0.7, 2, 8, 30.0)
        with pytest.raises(CommandError, match="min_servers <= max_servers"):
            await lab.command({"action": "limits", "node": "scaler", "min": 9})
        with pytest.raises(CommandError, match=r"between 0\.1 and 1"):
            await lab.command({"action": "target", "node": "scaler", "util": 0})
        with pytest.raises(CommandError, match="unknown node"):
            await lab.command({"action": "autoscale", "node": "ghost", "value": "on"})
        assert lab.frame()["nodes"]["scaler"]["max_servers"] == 8 and lab.state == "running"
        await lab.command({"action": "autoscale", "node": "scaler", "value": "on"})
        events = [e["kind"] for e in lab.frame()["events"]]
        assert "autoscale_set" in events
        # Off, it left the tier alone; on, with no load it stays at its minimum (2 servers).
        await asyncio.sleep(4.5)
        assert len(lab.nodes["scaler"].servers()) == 2
