"""Regions: each a block of the lab's addresses, with a modelled round trip between any two."""

from __future__ import annotations

import time

import aiohttp
import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest

from core.engine.lab import Lab
from core.engine.spec import SpecError, parse_topology, region_block, topology_from_dict

RTT_MS = 120.0


def world(**extra) -> dict:
    return {
        "regions": {"eu": "Europe", "us": "North America"},
        "latency_ms": {"us-eu": RTT_MS},
        "nodes": [
            {"id": "dns", "kind": "dns", "params": {"target": "web-eu"}},
            {"id": "web-eu", "kind": "web", "region": "eu", "params": {"service_ms": 0}},
            {"id": "web-us", "kind": "web", "region": "us", "params": {"service_ms": 0}},
            {"id": "client-eu", "kind": "client", "region": "eu", "params": {"rate": 0}},
        ],
        "edges": [["client-eu", "dns"], ["client-eu", "web-eu"], ["client-eu", "web-us"]],
        **extra,
    }


def test_each_region_is_a_block_of_addresses_and_a_node_without_one_sits_outside_them() -> None:
    topo = parse_topology(world())
    hosts = {n.id: n.host for n in topo.nodes}
    assert hosts["web-eu"] in region_block(0) and hosts["client-eu"] in region_block(0)
    assert hosts["web-us"] in region_block(1)
    assert not any(hosts["dns"] in region_block(i) for i in range(4))


def test_the_latency_matrix_is_symmetric_and_zero_within_a_region() -> None:
    topo = parse_topology(world())
    assert topo.rtt_ms("eu", "us") == topo.rtt_ms("us", "eu") == RTT_MS
    assert topo.rtt_ms("eu", "eu") == 0
    assert topo.rtt_ms("", "us") == 0  # a node in no region (DNS: anycast) is near everyone


def test_a_copy_stays_in_its_region_and_the_normalised_form_round_trips() -> None:
    topo = parse_topology(world())
    grown, spec = topo.with_clone("web-us")
    assert spec.region == "us" and spec.host in region_block(1)
    again = topology_from_dict(grown.to_dict())
    assert again.node(spec.id).region == "us"
    assert again.latency_ms == {"eu-us": RTT_MS}
    assert grown.to_dict()["region_hosts"]["us"] == [100, 149]


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        ({"latency_ms": {}}, "topology.latency_ms", "no round trip given for eu-us"),
        ({"latency_ms": {"eu-mars": 5, "eu-us": 5}}, "topology.latency_ms.eu-mars", "two different regions"),
        ({"latency_ms": {"eu-us": -1}}, "topology.latency_ms.eu-us", "round trip in ms"),
        ({"regions": {"EU": "Europe"}, "latency_ms": {}}, "topology.regions.EU", "lower-case"),
    ],
)
def test_a_bad_region_declaration_names_its_field(change: dict, path: str, reason: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_topology(world(**change))
    assert any(str(e).startswith(path) and reason in e.reason for e in caught.value.errors), caught.value


def test_a_node_in_an_unknown_region_or_outside_its_block_is_refused() -> None:
    doc = world()
    doc["nodes"][1]["region"] = "asia"
    doc["nodes"][2]["host"] = 60  # eu's block
    with pytest.raises(SpecError) as caught:
        parse_topology(doc)
    reasons = {str(e) for e in caught.value.errors}
    assert any("nodes[1].region: unknown region 'asia'" in r for r in reasons), reasons
    assert any("nodes[2].host: host 60 is outside region us's block (100-149)" in r for r in reasons), reasons


async def _get_ms(session: aiohttp.ClientSession, url: str) -> float:
    start = time.monotonic()
    async with session.get(url) as resp:
        await resp.read()
        assert resp.status == 200
    return (time.monotonic() - start) * 1000


async def test_a_request_to_another_region_costs_the_modelled_round_trip_and_one_nearby_does_not(network) -> None:
    async with Lab(parse_topology(world()), network=network) as lab:
        source = lab.address("client-eu")  # a request from the eu client's own address
        connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            near = [await _get_ms(session, f"http://{lab.address('web-eu')}:8080/") for _ in range(5)]
            far = [await _get_ms(session, f"http://{lab.address('web-us')}:8080/") for _ in range(5)]
        assert max(near) < RTT_MS / 2, near
        assert min(far) >= RTT_MS, far
        assert min(far) - min(near) == pytest.approx(RTT_MS, abs=60), (near, far)

        # The DNS server is in no region: near everyone, its answer is not delayed.
        query = dns.message.make_query(lab.topology.domain, dns.rdatatype.A)
        start = time.monotonic()
        await dns.asyncquery.udp(query, lab.address("dns"), port=8053, timeout=2.0, source=source)
        assert (time.monotonic() - start) * 1000 < RTT_MS / 2
