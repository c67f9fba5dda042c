"""Several data centres: GeoDNS moves a region's users off a dead centre no sooner than its TTL and
health checks allow, data cross the ocean late, and the other centre's copy takes over."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.engine.commands import CommandError
from core.engine.lab import Lab
from core.engine.telemetry import Outages
from tests.engine.topologies import stage10

TTL, INTERVAL, FALL = 1, 0.5, 2
# The health checks run every INTERVAL whatever the outage does, so FALL failed ones in a row end
# between (FALL - 1) and FALL intervals after it began, by where in its interval it fell.
DETECT = INTERVAL * FALL  # the longest they take to see the centre is gone
DETECT_SOONEST = INTERVAL * (FALL - 1)


def test_an_outage_runs_from_the_first_failed_request_to_the_first_good_one_after_it() -> None:
    o = Outages()
    o.record("users-eu", 10.0, True)
    o.record("users-eu", 10.5, False)
    o.record("users-eu", 11.0, False)
    o.record("users-eu", 13.5, True)
    assert o.last == {"users-eu": 3.0} and o.latest == 3.0
    o.record("users-eu", 12.0, False)  # finished late: sent during the outage that has ended
    o.record("users-eu", 14.0, True)
    assert o.last["users-eu"] == 3.0
    o.record("users-eu", 15.0, False)  # a blip: one failed write among good reads
    o.record("users-eu", 15.1, True)
    assert o.last["users-eu"] == 3.0


async def frames_until(lab: Lab, cond, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        frame = lab.frame()
        if cond(frame):
            return frame
    raise AssertionError(f"no frame within {timeout} s where {what}")


async def test_a_dead_centre_s_users_move_to_the_other_no_sooner_than_dns_allows_and_come_back(network) -> None:
    async with Lab(stage10(ttl=TTL, health_interval_s=INTERVAL, fall=FALL, rate=30), network=network) as lab:
        await frames_until(lab, lambda f: f["nodes"]["lb-eu"]["rps"] > 5 and f["nodes"]["lb-us"]["rps"] > 5, 10,
                           "both centres serve their own region")
        await lab.command({"action": "outage", "region": "eu"})
        assert [n for n in ("lb-eu", "web-eu", "db-eu", "users-eu") if not lab.nodes[n].up] == [
            "lb-eu", "web-eu", "db-eu"]  # the centre's servers, not its users
        frame = await frames_until(lab, lambda f: f["nodes"]["users-eu"].get("failover_s") is not None, 15,
                                   "the eu users' outage ended")
        outage = frame["nodes"]["users-eu"]["failover_s"]
        # No user moves before DNS has seen the centre is gone (DETECT_SOONEST at best, less the
        # few ms to the first failed request), and a cached answer lives up to the TTL more: a
        # user whose answer expires before DNS has noticed gets lb-eu again, for a whole TTL.
        # (An earlier bound of TTL - 0.3 failed at 0.67 s: checks that fell just after the outage
        # began saw it in 0.5 s, and the users' cached answer expired right after.)
        assert DETECT_SOONEST - 0.15 <= outage <= TTL + DETECT + 1.0, outage
        assert frame["totals"]["failover_s"] is not None
        await frames_until(lab, lambda f: f["nodes"]["users-eu"]["err_rps"] == 0 and f["nodes"]["lb-us"]["rps"] > 40,
                           10, "the eu users are served by us without errors")
        # us took over the data: its replica was promoted, counting the writes that had not crossed.
        await frames_until(lab, lambda f: (f.get("replication") or {}).get("primary") == "db-us", 10,
                           "db-us promoted")

        with pytest.raises(CommandError, match="already down"):
            await lab.command({"action": "outage", "region": "eu"})
        await lab.command({"action": "recover", "region": "eu"})
        await frames_until(lab, lambda f: f["nodes"]["lb-eu"]["rps"] > 5, 15, "eu users are back home")


async def test_a_cut_off_centre_is_seen_by_the_health_checks_like_a_dead_one(network) -> None:
    async with Lab(stage10(ttl=TTL, health_interval_s=INTERVAL, fall=FALL, rate=20), network=network) as lab:
        await frames_until(lab, lambda f: f["nodes"]["lb-eu"]["rps"] > 5, 10, "eu serves")
        await lab.command({"action": "outage", "region": "eu", "mode": "isolate"})
        assert all(lab.nodes[n].up for n in ("lb-eu", "web-eu", "db-eu"))  # alive, but unreachable
        assert lab.partitioned("lb-eu", "dns") and lab.partitioned("lb-eu", "users-eu")
        assert not lab.partitioned("lb-eu", "web-eu")  # inside the centre, the network still works
        frame = await frames_until(lab, lambda f: any(e["kind"] == "dns_target_down" for e in f["events"]), 10,
                                   "DNS took lb-eu out")
        assert [e["target"] for e in frame["events"] if e["kind"] == "dns_target_down"] == ["lb-eu"]
        await lab.command({"action": "recover", "region": "eu"})
        assert not lab.partitions


async def test_a_write_in_one_centre_read_too_early_in_the_other_is_caught_as_stale(network) -> None:
    async with Lab(stage10(rate=0, write_ratio=0.5), network=network) as lab:
        await lab.command({"action": "delay", "node": "db-us", "ms": 1500})  # a slow ocean link (modelled)
        await lab.command({"action": "traffic", "node": "users-us", "rate": 40})
        frame = await frames_until(lab, lambda f: f["totals"]["stale_total"] > 0, 20, "a stale read")
        assert frame["nodes"]["db-us"]["lag_ms"] is not None


async def test_an_unknown_region_is_refused_and_the_lab_goes_on(network) -> None:
    async with Lab(stage10(), network=network) as lab:
        with pytest.raises(CommandError, match="unknown region 'asia'"):
            await lab.command({"action": "outage", "region": "asia"})
        with pytest.raises(CommandError, match="has no outage"):
            await lab.command({"action": "recover", "region": "us"})
        assert lab.state == "running"
