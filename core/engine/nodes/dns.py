"""A real UDP DNS server: answers A queries for the lab's domain with the target node's address.

With ``geo: nearest`` it is GeoDNS: each client gets the one target nearest its own region (the
query's source address says where it is) among those passing the server's health checks
(``health_interval_s``), and a TXT record in the reply's additional section says why, so the
clicked request can show it (core.engine.geodns decides).

When servers have been added like the target (``add``: same kind, same callers), the answer lists
every one of them and rotates the order on each query: DNS round robin, the way to scale out
before there is a load balancer. A resolver takes the first record and caches it for the TTL, so
the split is coarse, and a dead server keeps its share until the answers expire: DNS knows
nothing of health. That is the point stage 3 leaves for stage 4.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord

from core.engine import geodns
from core.engine.lifecycle import Alive
from core.engine.nodes.base import Node
from core.engine.nodes.http import close_session, close_session_now


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, node: DnsNode) -> None:
        self.node = node
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.node.cut_off(addr[0]):  # the "partition" fault: the datagram is lost
            self.node.dropped += 1
            return
        try:
            request = DNSRecord.parse(data)
        except Exception:  # garbage on the wire must not kill the server
            self.node.malformed += 1
            return
        if self.transport is None:
            return
        reply = self.node.answer(request, addr[0]).pack()
        # The "slow" fault, and the modelled distance to a client in another region: answer late.
        late_ms = self.node.slow_ms + self.node.distance_ms(addr[0])
        if late_ms > 0:
            asyncio.get_running_loop().call_later(late_ms / 1000.0, self._send, reply, addr)
        else:
            self.transport.sendto(reply, addr)

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class DnsNode(Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0
        self.malformed = 0
        self.dropped = 0  # datagrams lost to a partition
        self._turn = 0  # round robin: where the next answer's list starts
        self.health = geodns.Health(rise=self.params["rise"], fall=self.params["fall"])
        self._session: aiohttp.ClientSession | None = None

    def targets(self) -> list[str]:
        """The target and every server added like it (same kind, same callers), in topology order."""
        topo = self.ctx.topology
        target = topo.node(self.params["target"])
        callers = {a for a, b in topo.edges if b == target.id}
        return [
            n.id
            for n in topo.nodes
            if n.id == target.id or (n.kind == target.kind and {a for a, b in topo.edges if b == n.id} == callers)
        ]

    def answer(self, request: DNSRecord, source: str = "") -> DNSRecord:
        """Authoritative answer for the lab's domain; NXDOMAIN for any other name. ``source`` is the
        query's source address: where the client is, for GeoDNS."""
        self.queries += 1
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        if qname == self.ctx.domain and request.q.qtype == QTYPE.A:
            targets, why = self.arrange(self.targets(), source)
            for node_id in targets:
                rdata = A(self.ctx.address(node_id))
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=rdata, ttl=self.params["ttl"]))
            if why:
                reply.add_ar(RR(request.q.qname, QTYPE.TXT, rdata=TXT(why[:200]), ttl=0))
        elif qname != self.ctx.domain:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    def arrange(self, candidates: list[str], source: str) -> tuple[list[str], str]:
        """The answer's targets in order, and why ("" for plain round robin)."""
        checked = self.params["health_interval_s"] > 0
        if self.params["geo"] == "nearest":
            choice = geodns.nearest(
                candidates, client_region=self.ctx.region_of_address(source), region_of=self.ctx.region,
                rtt_ms=self._rtt, healthy=self._healthy,
            )
            return choice.targets, choice.why
        up = [c for c in candidates if self._healthy(c)] if checked else candidates
        up = up or candidates  # none healthy: every one, as GeoDNS fails open
        k = self._turn % len(up)
        self._turn += 1
        return up[k:] + up[:k], ""

    def _rtt(self, a: str, b: str) -> float:
        return self.ctx.topology.rtt_ms(a, b)

    def _healthy(self, target: str) -> bool:
        return self.params["health_interval_s"] <= 0 or self.health.is_up(target)

    # Health checks --------------------------------------------------------------------------
    async def _health_loop(self, alive: Alive) -> None:
        interval = self.params["health_interval_s"]
        timeout = aiohttp.ClientTimeout(total=min(interval, 2.0))
        while alive():
            await asyncio.sleep(interval)
            ids = self.targets()  # targets come and go: read them every round
            self.health.forget(ids)
            results = await asyncio.gather(*(self._check(t, timeout) for t in ids), return_exceptions=True)
            for target, ok in zip(ids, results, strict=True):
                passed = ok is True
                changed = self.health.check(target, passed)
                if changed is not None:
                    reason = f"{'passed' if passed else 'failed'} {self.params['rise' if passed else 'fall']}" \
                        " health checks in a row"
                    if changed == geodns.UP:
                        self.ctx.event("dns_target_up", node=self.id, target=target, reason=reason)
                    else:
                        self.ctx.event("dns_target_down", node=self.id, target=target, reason=reason)

    async def _check(self, target: str, timeout: aiohttp.ClientTimeout) -> bool:
        node = self.ctx.peer(target)
        if node is None or self._session is None or node.port is None:
            return False
        url = f"http://{node.address}:{node.port}/health"
        try:
            async with self._session.get(url, timeout=timeout, headers={"Connection": "close"}) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        if self.params["health_interval_s"] > 0:
            snap["healthy"] = sum(1 for t in self.targets() if self.health.is_up(t))
        return snap

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.address, self.port)
        )
        self.transport = transport
        if self.params["health_interval_s"] > 0:
            connector = aiohttp.TCPConnector(local_addr=(self.address, 0), limit=0, use_dns_cache=False)
            self._session = aiohttp.ClientSession(connector=connector)
            self.background.start(self._health_loop, "health")
        self.up = True

    async def stop(self) -> None:
        self.up = False
        await self.background.stop()
        session, self._session = self._session, None
        await close_session(session)
        self.force()

    def force(self) -> None:
        super().force()
        session, self._session = self._session, None
        close_session_now(session)
        if self.transport is not None:
            self.transport.close()
            self.transport = None
