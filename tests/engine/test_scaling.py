"""Horizontal scaling on real sockets: servers added and removed live, under load."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from core.engine.commands import CommandError
from core.engine.lab import Lab
from core.engine.telemetry import HOPS_HEADER, hops_from_header
from tests.engine.topologies import stage1, stage2, stage4


class Load:
    """Open-loop GETs on the balancer from one source address, in the background."""

    def __init__(self, lab: Lab, *, rate: float, source_host: int = 200) -> None:
        self.lab, self.rate, self.source_host = lab, rate, source_host
        self.statuses: Counter[str] = Counter()
        self.upstreams: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Load:
        connector = aiohttp.TCPConnector(local_addr=(f"{self.lab.network}.{self.source_host}", 0), limit=0)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._arrivals())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._requests)  # let every request finish: none is abandoned
        await self.session.close()

    async def _arrivals(self) -> None:
        while True:
            task = asyncio.create_task(self._one())
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
            await asyncio.sleep(1 / self.rate)

    async def _one(self) -> None:
        url = f"http://{self.lab.address('lb')}:8080/"
        try:
            async with self.session.get(url) as r:
                await r.read()
                self.statuses[str(r.status)] += 1
                for hop in hops_from_header(r.headers.get(HOPS_HEADER)):
                    if hop.src == "lb":
                        self.upstreams[hop.dst] += 1
        except TimeoutError:
            self.statuses["timeout"] += 1
        except aiohttp.ClientError as exc:
            self.statuses[type(exc).__name__] += 1


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def refused(address: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(address, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_it_adds_a_server_like_another_and_the_balancer_sends_it_traffic(network):
    messages: list[dict[str, Any]] = []
    async with Lab(stage4(backends=2), network=network, emit=messages.append) as lab:
        async with Load(lab, rate=40) as load:
            await lab.command({"action": "add", "like": "web-1"})
            new = lab.nodes["web-3"]
            assert new.up and new.address == f"{network}.23"
            assert new.params == lab.topology.node("web-1").params
            assert ("lb", "web-3") in lab.topology.edges
            await until(lambda: load.upstreams["web-3"] >= 5)
        assert set(load.statuses) == {"200"}
        assert lab.nodes["web-3"].served >= 5
        frame = lab.frame()
        assert frame["nodes"]["web-3"]["up"] is True
        assert frame["nodes"]["lb"]["backends"]["web-3"] == "up"
        assert {"kind": "node_added", "node": "web-3", "like": "web-1"}.items() <= frame["events"][-1].items()
        [topo] = [m["topology"] for m in messages if m["type"] == "topology"]
        assert "web-3" in [n["id"] for n in topo["nodes"]] and ["lb", "web-3"] in topo["edges"]
        assert lab.status()["topology"] == topo


async def test_it_removes_a_backend_under_load_without_failing_a_request(network):
    # Slow backends, so requests are in flight on the removed one when it goes.
    async with Lab(stage4(backends=3, service_ms=150.0, workers=8), network=network) as lab:
        lb = lab.nodes["lb"]
        web3 = lab.nodes["web-3"]
        async with Load(lab, rate=40) as load:
            await until(lambda: lb.in_flight_to("web-3") > 0)
            await lab.command({"action": "remove", "node": "web-3"})
            assert lb.in_flight_to("web-3") == 0  # drained before it stopped
            served_before = load.upstreams["web-3"]
            await asyncio.sleep(0.5)
        assert sum(load.statuses.values()) >= 20
        assert set(load.statuses) == {"200"}, load.statuses
        assert load.upstreams["web-3"] == served_before  # nothing was sent there after
        assert "web-3" not in lab.nodes and "web-3" not in lb.balancer.backends
        assert not web3.up and await refused(web3.address, 8080)
        frame = lab.frame()
        assert "web-3" not in frame["nodes"]
        assert any(e["kind"] == "node_removed" and e["node"] == "web-3" for e in frame["events"])


@pytest.mark.parametrize(
    "command, says",
    [
        ({"action": "add", "like": "dns"}, "only web, sqldb and cache nodes"),
        ({"action": "add", "like": "ghost"}, "unknown node 'ghost'"),
        ({"action": "remove", "node": "dns"}, "only web, sqldb and cache nodes"),
        ({"action": "remove", "node": "browser"}, "only web, sqldb and cache nodes"),
        ({"action": "remove", "node": "web"}, "last web"),
        ({"action": "add"}, "missing like"),
    ],
)
async def test_it_refuses_bad_adds_and_removes_and_keeps_running(network, command, says):
    async with Lab(stage1(), network=network) as lab:
        with pytest.raises(CommandError, match=says):
            await lab.command(command)
        assert lab.state == "running" and list(lab.nodes) == ["dns", "web", "browser", "phone"]
        await lab.nodes["browser"].request()
        assert lab.frame()["totals"]["ok_rps"] > 0


async def test_it_refuses_to_remove_the_last_backend_others_depend_on(network):
    async with Lab(stage4(backends=2), network=network) as lab:
        await lab.command({"action": "remove", "node": "web-2"})
        with pytest.raises(CommandError, match="last web"):
            await lab.command({"action": "remove", "node": "web-1"})
        # A freed name is taken again by the next copy.
        await lab.command({"action": "add", "like": "web-1"})
        assert lab.nodes["web-2"].up


async def test_it_refuses_to_remove_a_node_another_refers_to(network):
    async with Lab(stage1(), network=network) as lab:
        await lab.command({"action": "add", "like": "web"})
        with pytest.raises(CommandError, match="dns refers to web"):
            await lab.command({"action": "remove", "node": "web"})
        await lab.command({"action": "remove", "node": "web-2"})


async def test_a_copy_of_the_database_is_a_replica_and_the_primary_cannot_be_removed(network):
    async with Lab(stage2(users=50, posts=200), network=network) as lab:
        await lab.command({"action": "add", "like": "db"})
        assert lab.topology.node("db-2").params["replica_of"] == "db"
        assert ("web", "db-2") in lab.topology.edges
        with pytest.raises(CommandError, match="primary"):
            await lab.command({"action": "remove", "node": "db"})
        await lab.command({"action": "remove", "node": "db-2"})
        assert list(lab.nodes) == ["dns", "web", "db", "browser", "phone"]
