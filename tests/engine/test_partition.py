"""The partition fault on real sockets: one mechanism (Node.cut_off) for every node kind."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from core.engine.commands import CommandError
from core.engine.lab import Lab
from core.engine.nodes.client import ResolveError
from tests.engine.topologies import stage1, stage4


async def get(lab: Lab, source: str, target: str, timeout: float = 1.0) -> str:
    """GET / on ``target`` from ``source``'s address: the status, or "timeout"."""
    connector = aiohttp.TCPConnector(local_addr=(lab.address(source), 0))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        try:
            async with s.get(f"http://{lab.address(target)}:8080/") as r:
                await r.read()
                return str(r.status)
        except TimeoutError:
            return "timeout"


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("node, peer", [("browser", "lb"), ("lb", "web-1")])
async def test_a_partition_holds_requests_between_the_pair_unanswered_and_no_other(network, node, peer):
    # The same listener code serves the balancer and the web servers.
    async with Lab(stage4(backends=2, health_interval_s=5.0), network=network) as lab:
        await lab.command({"action": "partition", "node": node, "peer": peer})
        assert await get(lab, node, peer) == "timeout"
        assert await get(lab, "phone", peer) == "200"
        frame = lab.frame()
        assert frame["partitions"] == [sorted([node, peer])]
        assert {"kind": "partitioned", "node": node, "peer": peer}.items() <= frame["events"][-1].items()
        await lab.command({"action": "heal", "node": peer, "peer": node})
        assert await get(lab, node, peer) == "200"
        assert lab.frame()["partitions"] == []


async def test_a_held_request_goes_through_once_healed(network):
    async with Lab(stage4(backends=2), network=network) as lab:
        await lab.command({"action": "partition", "node": "browser", "peer": "lb"})
        pending = asyncio.create_task(get(lab, "browser", "lb", timeout=8.0))
        await asyncio.sleep(0.5)
        assert not pending.done()
        await lab.command({"action": "heal", "node": "browser"})  # every partition of browser
        assert await pending == "200"


async def test_the_balancer_marks_a_partitioned_backend_down_and_back_up_when_healed(network):
    async with Lab(stage4(backends=2, health_interval_s=0.3, fall=2, rise=2), network=network) as lab:
        lb = lab.nodes["lb"]
        await lab.command({"action": "partition", "node": "lb", "peer": "web-1"})
        await until(lambda: lb.balancer.states()["web-1"] == "down")
        assert lb.balancer.states()["web-2"] == "up"
        assert await get(lab, "phone", "lb") == "200"  # served by web-2
        await lab.command({"action": "heal", "node": "web-1", "peer": "lb"})
        await until(lambda: lb.balancer.states()["web-1"] == "up")
        kinds = [e["kind"] for e in lab.frame()["events"]]
        assert kinds.index("backend_down") < kinds.index("healed") < kinds.index("backend_up")


async def test_a_client_cut_off_from_dns_gets_a_dns_timeout(network):
    async with Lab(stage1(), network=network) as lab:
        await lab.command({"action": "partition", "node": "dns", "peer": "browser"})
        with pytest.raises(ResolveError, match="DNS timeout"):
            await lab.nodes["browser"].resolve()
        address, _ = await lab.nodes["phone"].resolve()
        assert address == lab.address("web")
        assert lab.nodes["dns"].dropped >= 1
        await lab.command({"action": "heal", "node": "browser", "peer": "dns"})
        address, _ = await lab.nodes["browser"].resolve()
        assert address == lab.address("web")


@pytest.mark.parametrize(
    "command, says",
    [
        ({"action": "partition", "node": "web", "peer": "web"}, "itself"),
        ({"action": "partition", "node": "web", "peer": "ghost"}, "unknown node 'ghost'"),
        ({"action": "heal", "node": "web"}, "no partition"),
    ],
)
async def test_it_refuses_bad_partitions(network, command, says):
    async with Lab(stage1(), network=network) as lab:
        with pytest.raises(CommandError, match=says):
            await lab.command(command)


async def test_a_partition_twice_is_refused_and_a_heal_names_the_pair(network):
    async with Lab(stage1(), network=network) as lab:
        await lab.command({"action": "partition", "node": "web", "peer": "phone"})
        with pytest.raises(CommandError, match="already"):
            await lab.command({"action": "partition", "node": "phone", "peer": "web"})
        with pytest.raises(CommandError, match="no partition between web and browser"):
            await lab.command({"action": "heal", "node": "web", "peer": "browser"})
        await lab.command({"action": "heal", "node": "web", "peer": "phone"})
        assert lab.partitions == set()
