"""GeoDNS: each client is sent to the nearest target that passes the DNS server's health checks."""

from __future__ import annotations

import asyncio
import time

import dns.asyncquery
import dns.message
import dns.rdatatype

from core.engine import geodns
from core.engine.lab import Lab
from core.engine.spec import parse_topology

REGIONS = {"eu": "eu", "us": "us", "asia": "asia"}
RTT = {"eu-us": 90.0, "asia-eu": 160.0, "asia-us": 120.0}


def rtt(a: str, b: str) -> float:
    return 0.0 if a == b or not a or not b else RTT["-".join(sorted((a, b)))]


def choose(client_region: str, down: set[str] = frozenset()) -> geodns.Choice:
    where = {"web-eu": "eu", "web-us": "us"}
    return geodns.nearest(["web-eu", "web-us"], client_region=client_region, region_of=where.get,
                          rtt_ms=rtt, healthy=lambda t: t not in down)


def test_each_region_gets_its_own_target_and_a_region_without_one_gets_the_nearest() -> None:
    assert choose("eu").targets == ["web-eu"]
    assert choose("us").targets == ["web-us"]
    asia = choose("asia")
    assert asia.targets == ["web-us"]  # 120 ms beats 160 ms
    assert "nearest healthy (120 ms)" in asia.why


def test_a_target_that_is_down_is_skipped_and_with_none_up_every_one_is_answered() -> None:
    moved = choose("us", down={"web-us"})
    assert moved.targets == ["web-eu"] and "down: web-us" in moved.why
    assert choose("us", down={"web-us", "web-eu"}).targets == ["web-eu", "web-us"]  # fail open


def test_health_needs_fall_failures_to_go_down_and_rise_successes_to_come_back() -> None:
    health = geodns.Health(rise=2, fall=3)
    assert [health.check("a", False) for _ in range(3)] == [None, None, "down"]
    assert not health.is_up("a")
    assert [health.check("a", True) for _ in range(2)] == [None, "up"]
    assert health.is_up("a")


def world() -> dict:
    return {
        "regions": REGIONS,
        "latency_ms": RTT,
        "nodes": [
            {"id": "dns", "kind": "dns", "params": {"target": "web-eu", "geo": "nearest", "ttl": 1,
                                                     "health_interval_s": 0.25, "fall": 2, "rise": 2}},
            {"id": "web-eu", "kind": "web", "region": "eu", "params": {"service_ms": 0}},
            {"id": "web-us", "kind": "web", "region": "us", "params": {"service_ms": 0}},
            {"id": "users-eu", "kind": "client", "region": "eu", "params": {"rate": 0}},
            {"id": "users-us", "kind": "client", "region": "us", "params": {"rate": 0}},
            {"id": "users-asia", "kind": "client", "region": "asia", "params": {"rate": 0}},
        ],
        "edges": [[c, t] for c in ("users-eu", "users-us", "users-asia") for t in ("dns", "web-eu", "web-us")],
    }


async def ask(lab: Lab, client: str) -> tuple[list[str], str]:
    """(the answer's node ids, the TXT saying why), asked from the client's own address."""
    query = dns.message.make_query(lab.topology.domain, dns.rdatatype.A)
    reply = await dns.asyncquery.udp(query, lab.address("dns"), port=8053, timeout=2.0, source=lab.address(client))
    ids = [lab.node_at(r.address) for rrset in reply.answer for r in rrset]
    why = [b"".join(r.strings).decode() for rrset in reply.additional for r in rrset]
    return ids, why[0] if why else ""


async def test_geodns_answers_by_the_source_address_and_steers_a_region_away_from_a_dead_server(network) -> None:
    async with Lab(parse_topology(world()), network=network) as lab:
        assert (await ask(lab, "users-eu"))[0] == ["web-eu"]
        assert (await ask(lab, "users-us"))[0] == ["web-us"]
        assert (await ask(lab, "users-asia"))[0] == ["web-us"]

        await lab.command({"action": "kill", "node": "web-us"})
        killed = time.monotonic()
        deadline = killed + 5
        while (await ask(lab, "users-us"))[0] != ["web-eu"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        moved_after = time.monotonic() - killed
        ids, why = await ask(lab, "users-us")
        assert ids == ["web-eu"] and "down: web-us" in why, why
        assert moved_after >= 0.25, moved_after  # at least one check interval: no sooner than it can see
        frame = lab.frame()
        events = [e for e in frame["events"] if e["kind"] == "dns_target_down"]
        assert events and events[0]["target"] == "web-us"
        assert frame["nodes"]["dns"]["healthy"] == 1

        # A real client sees why in its DNS hop: the record's TXT reaches the clicked request.
        await lab.nodes["users-us"].request()
        hops = [h for t in lab.frame()["samples"] for h in t["hops"] if h["proto"] == "dns"]
        assert hops and "web-eu in eu, nearest healthy (90 ms)" in hops[0]["status"], hops

        await lab.command({"action": "restart", "node": "web-us"})
        deadline = time.monotonic() + 5
        while (await ask(lab, "users-us"))[0] != ["web-us"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert (await ask(lab, "users-us"))[0] == ["web-us"]
