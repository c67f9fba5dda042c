"""CDN edges on real sockets: DNS hands the static name to the CDN, edges cache what the origin
serves for its max-age, a purge or a new version makes a miss, a killed edge's clients fall back to
the origin, and a hit saves the trip to the origin."""

from __future__ import annotations

import asyncio
import statistics
import time

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from core.engine import assets
from core.engine.commands import CommandError
from core.engine.lab import Lab
from core.engine.spec import Topology, parse_topology
from core.engine.telemetry import Trace
from tests.engine.topologies import stage1

STATIC = "static.scalelab.test"
CDN = "cdn.scalelab.test"


def site(*, cdn: str = "off", rate: float = 0.0, max_age_s: float = 300, max_mb: float = 16,
         phone_edge: str = "edge-b") -> Topology:
    """An origin, two edges, a browser using edge-a and a phone using ``phone_edge``."""
    return parse_topology({
        "domain": "www.scalelab.test",
        "nodes": [
            {"id": "dns", "kind": "dns", "host": 53, "params": {"ttl": 1, "cdn": cdn}},
            {"id": "web", "kind": "web", "host": 80,
             "params": {"assets": "on", "service_ms": 1, "static_max_age_s": max_age_s}},
            {"id": "edge-a", "kind": "cdn", "host": 91, "params": {"origin": "web", "max_mb": max_mb}},
            {"id": "edge-b", "kind": "cdn", "host": 92, "params": {"origin": "web", "max_mb": max_mb}},
            {"id": "browser", "kind": "client", "params": {"rate": rate}},
            {"id": "phone", "kind": "client", "params": {"rate": rate, "flavor": "mobile"}},
        ],
        "edges": [["browser", "dns"], ["phone", "dns"], ["browser", "web"], ["phone", "web"],
                  ["browser", "edge-a"], ["phone", phone_edge], ["edge-a", "web"], ["edge-b", "web"]],
    })


async def ask(lab: Lab, name: str, source: str | None = None) -> tuple[list[str], list[str]]:
    """(CNAME targets, A addresses) of a real query, from ``source``'s address if given."""
    query = dns.message.make_query(name, dns.rdatatype.A)
    reply = await dns.asyncquery.udp(query, lab.address("dns"), port=8053, timeout=2.0,
                                     source=lab.address(source) if source else None)
    cnames = [str(r.target).rstrip(".") for rrset in reply.answer for r in rrset
              if r.rdtype == dns.rdatatype.CNAME]
    return cnames, [r.address for rrset in reply.answer for r in rrset if r.rdtype == dns.rdatatype.A]


async def fetch(lab: Lab, client: str, path: str) -> Trace:
    ref = assets.AssetRef(f"{STATIC}:8080", path, path)
    return await lab.nodes[client].fetch_asset(ref)  # type: ignore[attr-defined]


def status(trace: Trace) -> list[tuple[str, str, str]]:
    return [(h.src, h.dst, h.status) for h in trace.hops if h.proto == "http"]


async def test_the_static_name_points_at_the_origin_or_by_cname_at_the_callers_edge(network):
    async with Lab(site(), network=network) as lab:
        assert await ask(lab, STATIC) == ([], [lab.address("web")])
        await lab.command({"action": "cdn", "node": "dns", "value": "on"})
        cnames, addresses = await ask(lab, STATIC, source="phone")
        assert cnames == [CDN]
        assert addresses == [lab.address("edge-b"), lab.address("edge-a")]  # the phone's edge first
        assert (await ask(lab, CDN, source="browser"))[1][0] == lab.address("edge-a")
        assert await ask(lab, lab.topology.domain) == ([], [lab.address("web")])  # the site is as it was
        with pytest.raises(CommandError, match="already points at the CDN"):
            await lab.command({"action": "cdn", "node": "dns", "value": "on"})
        assert [e["kind"] for e in lab.frame()["events"]] == ["lab_started", "cdn_set"]


async def test_a_site_without_assets_answers_and_reports_as_before(network):
    async with Lab(stage1(rate=20, service_ms=1), network=network) as lab:
        query = dns.message.make_query(STATIC, dns.rdatatype.A)
        reply = await dns.asyncquery.udp(query, lab.address("dns"), port=8053, timeout=2.0)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        with pytest.raises(CommandError, match="no static assets"):
            await lab.command({"action": "cdn", "node": "dns", "value": "on"})
        with pytest.raises(CommandError, match="serves no static assets"):
            await lab.command({"action": "version", "node": "web"})
        await asyncio.sleep(1.0)
        frame = lab.frame()
        assert frame["totals"]["rps"] > 0
        assert not [k for k in frame["totals"] if k.startswith("static")]
        assert "static_p95_ms" not in frame["nodes"]["browser"] and "static" not in frame["nodes"]["dns"]


async def test_a_miss_fetches_from_the_origin_and_a_hit_is_served_by_the_edge(network):
    async with Lab(site(cdn="on"), network=network) as lab:
        miss = await fetch(lab, "browser", "/static/hero.jpg")
        assert miss.ok and status(miss) == [("browser", "edge-a", "200 MISS"), ("edge-a", "web", "200")]
        hit = await fetch(lab, "browser", "/static/hero.jpg")
        assert hit.ok and status(hit) == [("browser", "edge-a", "200 HIT")]
        edge, web = lab.nodes["edge-a"], lab.nodes["web"]
        assert (edge.store.hits, edge.store.misses) == (1, 1)  # type: ignore[attr-defined]
        assert edge.bytes_out == 2 * 200 * 1024 and web.static_bytes == 200 * 1024  # type: ignore[attr-defined]
        table = lab.frame()["cdn"]
        assert table["edge_bytes"] == 2 * 200 * 1024 and table["origin_bytes"] == 200 * 1024
        assert table["cost_usd"] == pytest.approx(table["edge_cost_usd"] + table["origin_cost_usd"], abs=2e-6)
        assert table["cost_usd"] > 0 and table["hit_ratio"] == 0.5


async def test_a_purge_makes_the_next_request_a_miss_on_every_edge(network):
    async with Lab(site(cdn="on"), network=network) as lab:
        for client in ("browser", "phone"):
            await fetch(lab, client, "/static/logo.v1.png")
            await fetch(lab, client, "/static/hero.jpg")
        await lab.command({"action": "purge", "node": "edge-a", "what": "logo"})
        event = lab.frame()["events"][-1]
        assert (event["kind"], event["what"], event["objects"]) == ("purged", "logo", 2)
        assert status(await fetch(lab, "phone", "/static/logo.v1.png"))[0][2] == "200 MISS"  # edge-b too
        assert status(await fetch(lab, "browser", "/static/hero.jpg"))[0][2] == "200 HIT"  # not purged
        await lab.command({"action": "purge", "node": "edge-b", "what": "all"})
        assert status(await fetch(lab, "browser", "/static/hero.jpg"))[0][2] == "200 MISS"
        with pytest.raises(CommandError, match="what must be one of"):
            await lab.command({"action": "purge", "node": "edge-a", "what": "/etc/passwd"})


async def test_an_object_expires_after_the_origins_max_age(network):
    async with Lab(site(cdn="on", max_age_s=1), network=network) as lab:
        await fetch(lab, "browser", "/static/app.css")
        assert status(await fetch(lab, "browser", "/static/app.css"))[0][2] == "200 HIT"
        await asyncio.sleep(1.1)
        assert status(await fetch(lab, "browser", "/static/app.css"))[0][2] == "200 MISS"


async def test_a_small_edge_evicts_the_least_recently_used_and_counts_it(network):
    async with Lab(site(cdn="on", max_mb=0.25), network=network) as lab:
        for path in ("/static/hero.jpg", "/static/app.css", "/static/app.js"):  # 310 KB into 256 KB
            await fetch(lab, "browser", path)
        edge = lab.frame()["nodes"]["edge-a"]
        assert edge["evictions"] == 1 and edge["objects"] == 2 and edge["used_mb"] <= 0.25
        assert status(await fetch(lab, "browser", "/static/hero.jpg"))[0][2] == "200 MISS"  # it was the oldest
        await lab.command({"action": "memory", "node": "edge-a", "mb": 16})
        assert lab.frame()["nodes"]["edge-a"]["max_mb"] == 16


async def test_a_new_version_is_a_new_url_the_pages_reference_at_once(network):
    async with Lab(site(cdn="on", rate=10), network=network) as lab:
        await asyncio.sleep(1.5)
        assert "/static/logo.v1.png" in lab.nodes["edge-a"].store  # type: ignore[attr-defined]
        await lab.command({"action": "version", "node": "web"})
        assert lab.frame()["events"][-1] | {"t": 0} == {
            "t": 0, "kind": "asset_versioned", "node": "web", "asset": "logo.v2.png"}
        await asyncio.sleep(1.5)
        frame = lab.frame()
        assert frame["nodes"]["web"]["asset_version"] == 2
        assert "/static/logo.v2.png" in lab.nodes["edge-a"].store  # type: ignore[attr-defined]
        assert "/static/logo.v2.png" in lab.nodes["edge-b"].store  # type: ignore[attr-defined]
        assert frame["totals"]["static_err_rps"] == 0
        gone = await fetch(lab, "browser", "/static/logo.v3.png")  # not deployed: the origin has no such file
        assert not gone.ok and status(gone)[:2] == [("browser", "edge-a", "404 MISS"), ("edge-a", "web", "404")]


async def test_clients_of_a_killed_edge_fall_back_to_the_origin_and_keep_their_assets(network):
    async with Lab(site(cdn="on", rate=10), network=network) as lab:
        await asyncio.sleep(1.0)
        await lab.command({"action": "kill", "node": "edge-b"})
        trace = await fetch(lab, "phone", "/static/hero.jpg")
        assert trace.ok
        assert status(trace) == [("phone", "edge-b", "connection refused"), ("phone", "web", "200")]
        assert trace.hops[-1].op == "GET /static/hero.jpg (fallback)"
        await asyncio.sleep(1.5)
        frame = lab.frame()
        assert frame["nodes"]["phone"]["static_rps"] > 0 and frame["totals"]["static_err_rps"] == 0
        assert frame["edges"]["phone>web"]["rps"] > frame["nodes"]["phone"]["rps"]  # pages and assets
        assert frame["nodes"]["edge-a"]["rps"] > 0  # the browser's edge still serves


async def test_an_edge_hit_is_faster_than_a_miss_by_about_the_trip_to_the_origin(network):
    async with Lab(site(cdn="on"), network=network) as lab:
        await lab.command({"action": "slow", "node": "web", "ms": 80})  # a distant origin
        misses: list[float] = []
        hits: list[float] = []
        for i in range(1, 6):
            path = f"/static/logo.v{i}.png"
            lab.nodes["web"].asset_version = 5  # type: ignore[attr-defined]
            misses.append((await fetch(lab, "browser", path)).ms)
            hits.append((await fetch(lab, "browser", path)).ms)
        assert statistics.median(misses) - statistics.median(hits) == pytest.approx(80, abs=40)


async def test_the_lab_stops_within_seconds_while_edges_fetch_from_a_hung_origin(network):
    lab = Lab(site(cdn="on", rate=20), network=network)
    await lab.start()
    await lab.command({"action": "partition", "node": "edge-a", "peer": "web"})  # misses hang
    await asyncio.sleep(1.0)
    began = time.monotonic()
    await lab.stop()
    assert time.monotonic() - began < 5.0 and lab.forced == []




RTT_MS = 120.0


def world(*, geo: str = "nearest", cdn: str = "on") -> Topology:
    """An origin in eu, an edge in each of eu and us, a browser in us; GeoDNS picks the edge."""
    return parse_topology({
        "domain": "www.scalelab.test",
        "regions": {"eu": "Europe", "us": "North America"},
        "latency_ms": {"us-eu": RTT_MS},
        "nodes": [
            {"id": "dns", "kind": "dns", "params": {"ttl": 30, "geo": geo, "cdn": cdn, "target": "web"}},
            {"id": "web", "kind": "web", "region": "eu", "params": {"assets": "on", "service_ms": 0}},
            {"id": "edge-eu", "kind": "cdn", "region": "eu", "params": {"origin": "web"}},
            {"id": "edge-us", "kind": "cdn", "region": "us", "params": {"origin": "web"}},
            {"id": "browser-us", "kind": "client", "region": "us", "params": {"rate": 0}},
        ],
        "edges": [["browser-us", "dns"], ["browser-us", "web"], ["browser-us", "edge-us"],
                  ["edge-eu", "web"], ["edge-us", "web"]],
    })


async def test_geodns_sends_a_far_client_to_its_own_regions_edge_and_a_hit_saves_the_ocean(network):
    async with Lab(world(), network=network) as lab:
        cnames, addresses = await ask(lab, STATIC, source="browser-us")
        assert cnames == [CDN] and addresses == [lab.address("edge-us")]
        misses: list[float] = []
        hits: list[float] = []
        lab.nodes["web"].asset_version = 5  # type: ignore[attr-defined]
        for i in range(1, 6):
            path = f"/static/logo.v{i}.png"
            miss = await fetch(lab, "browser-us", path)
            assert status(miss) == [("browser-us", "edge-us", "200 MISS"), ("edge-us", "web", "200")]
            misses.append(miss.ms)
            hits.append((await fetch(lab, "browser-us", path)).ms)
        # A miss crosses to the origin in eu and back; a hit stays in us.
        assert statistics.median(misses) - statistics.median(hits) == pytest.approx(RTT_MS, abs=40)
        assert statistics.median(hits) < RTT_MS / 3


async def test_without_the_cdn_every_asset_of_a_far_client_crosses_to_the_origin(network):
    async with Lab(world(cdn="off"), network=network) as lab:
        assert await ask(lab, STATIC, source="browser-us") == ([], [lab.address("web")])
        await fetch(lab, "browser-us", "/static/app.css")  # the first asks DNS too
        times = [(await fetch(lab, "browser-us", "/static/app.css")).ms for _ in range(3)]
        assert statistics.median(times) >= RTT_MS * 0.9
