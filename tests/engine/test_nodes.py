"""The stage-1 nodes on real loopback sockets."""

import asyncio
import ipaddress
import os
import socket

import aiohttp
import dns.asyncquery
import dns.message
import dns.rdatatype
import psutil
import pytest

from core.engine.lab import Lab, LabStartError
from tests.engine.topologies import stage1


async def ask_dns(lab: Lab, name: str = "www.scalelab.test") -> dns.message.Message:
    query = dns.message.make_query(name, dns.rdatatype.A)
    return await dns.asyncquery.udp(query, lab.address("dns"), port=8053, timeout=1.0)


async def get(lab: Lab, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://{lab.address('web')}:8080{path}") as r:
        return r.status, r.content_type, await r.text()


async def test_dns_answers_the_site_name_with_the_web_servers_address_and_ttl(network):
    async with Lab(stage1(ttl=7), network=network) as lab:
        reply = await ask_dns(lab)
        [rrset] = reply.answer
        assert rrset.ttl == 7
        assert [r.address for r in rrset] == [f"{network}.80"]
        assert dns.rcode.to_text((await ask_dns(lab, "elsewhere.test")).rcode()) == "NXDOMAIN"


async def test_web_serves_html_to_browsers_and_json_to_apps(network):
    async with Lab(stage1(service_ms=1), network=network) as lab:
        status, ctype, body = await get(lab, "/")
        assert (status, ctype) == (200, "text/html") and "Hello from web" in body
        status, ctype, body = await get(lab, "/api/feed")
        assert (status, ctype) == (200, "application/json") and '"server": "web"' in body


async def test_killing_a_node_refuses_connections_and_restart_restores_it(network):
    async with Lab(stage1(service_ms=1), network=network) as lab:
        await lab.command({"action": "kill", "node": "web"})
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(lab, "/")
        await lab.command({"action": "restart", "node": "web"})
        assert (await get(lab, "/"))[0] == 200


async def test_the_modelled_cpu_queues_then_rejects(network):
    topo = stage1(workers=1, service_ms=300, queue_limit=1)
    async with Lab(topo, network=network) as lab:
        results = await asyncio.gather(*(get(lab, "/") for _ in range(3)))
        assert sorted(r[0] for r in results) == [200, 200, 503]
        web = lab.nodes["web"]
        assert (web.served, web.rejected) == (2, 1)


async def test_clients_resolve_once_per_ttl_and_fail_once_dns_is_gone(network):
    async with Lab(stage1(ttl=1, service_ms=1), network=network) as lab:
        browser = lab.nodes["browser"]
        await browser.request()
        await browser.request()
        frame = lab.frame()
        hops = [h for s in frame["samples"] for h in s["hops"] if h["proto"] == "dns"]
        assert len(hops) == 1 and "ttl=1" in hops[0]["status"]  # second request used the cache
        assert lab.nodes["dns"].queries == 1
        await lab.command({"action": "kill", "node": "dns"})
        await browser.request()  # cached answer still valid: works without DNS
        assert lab.frame()["totals"]["err_rps"] == 0
        await asyncio.sleep(1.1)  # TTL runs out
        await browser.request()
        failed = lab.frame()["samples"][-1]
        assert not failed["ok"] and failed["hops"][0]["dst"] == "dns"


async def test_clients_call_from_their_own_address(network):
    async with Lab(stage1(service_ms=1), network=network) as lab:
        seen: list[str] = []
        web = lab.nodes["web"]
        original = web.handle

        async def spy(request):
            seen.append(request.remote)
            return await original(request)

        web.handle = spy  # the server object calls the bound attribute per request
        await web.stop()
        await web.start()
        await lab.nodes["phone"].request()
        assert seen == [lab.address("phone")]


async def test_every_listening_socket_is_on_loopback_and_freed_on_stop(network):
    me = psutil.Process(os.getpid())

    def lab_sockets():
        return [c for c in me.net_connections(kind="inet") if c.laddr and c.laddr.ip.startswith(network + ".")]

    async with Lab(stage1(rate=20, service_ms=1), network=network) as lab:
        await asyncio.sleep(0.5)
        listening = [
            c for c in me.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN or c.type == socket.SOCK_DGRAM
        ]
        ours = [c for c in listening if c.laddr.ip.startswith(network + ".")]
        assert {(c.laddr.ip, c.laddr.port) for c in ours} == {
            (lab.address("dns"), 8053),
            (lab.address("web"), 8080),
        }
        assert all(ipaddress.ip_address(c.laddr.ip).is_loopback for c in listening)
    await asyncio.sleep(0.1)
    assert [c for c in lab_sockets() if c.status != psutil.CONN_TIME_WAIT] == []


async def test_a_lab_that_cannot_bind_fails_with_a_clear_error_and_leaks_nothing(network):
    blocker = socket.socket()
    blocker.bind((f"{network}.80", 8080))
    blocker.listen()
    try:
        lab = Lab(stage1(), network=network)
        with pytest.raises(LabStartError, match="web"):
            await lab.start()
        assert lab.state == "failed"
        assert not lab.nodes["dns"].up  # the node that did start was stopped again
    finally:
        blocker.close()
