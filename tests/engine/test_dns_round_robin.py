"""Scaling out without a balancer: DNS answers with every copy of its target, in rotating order."""

from __future__ import annotations

import asyncio
import time

import dns.asyncquery
import dns.message
import dns.rdatatype

from core.engine.lab import Lab
from tests.engine.topologies import stage1


async def ask(lab: Lab) -> list[str]:
    query = dns.message.make_query(lab.topology.domain, dns.rdatatype.A)
    reply = await dns.asyncquery.udp(query, lab.address("dns"), port=8053, timeout=2.0)
    return [r.address for rrset in reply.answer for r in rrset]


async def test_dns_rotates_over_the_target_and_the_servers_added_like_it(network):
    async with Lab(stage1(ttl=1, service_ms=2.0), network=network) as lab:
        assert await ask(lab) == [lab.address("web")]  # one server: one record, as in stage 1
        await lab.command({"action": "add", "like": "web"})
        first, second = await ask(lab), await ask(lab)
        assert sorted(first) == sorted([lab.address("web"), lab.address("web-2")])
        assert first[0] != second[0]  # the order rotates: each resolver starts somewhere else
        # Both clients resolve again after the 1 s TTL and land on different servers: both serve.
        await lab.command({"action": "traffic", "rate": 40})
        deadline = time.monotonic() + 8
        served = {}
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            served = {n: lab.nodes[n].served for n in ("web", "web-2")}
            if min(served.values()) >= 10:
                break
        assert min(served.values()) >= 10, served
        # DNS knows nothing of health: a dead copy stays in the answer.
        await lab.command({"action": "kill", "node": "web-2"})
        assert lab.address("web-2") in await ask(lab)
