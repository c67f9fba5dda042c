"""A real UDP DNS server: answers A queries for the lab's domain with the target node's address.

When servers have been added like the target (``add``: same kind, same callers), the answer lists
every one of them and rotates the order on each query: DNS round robin, the way to scale out
before there is a load balancer. A resolver takes the first record and caches it for the TTL, so
the split is coarse, and a dead server keeps its share until the answers expire: DNS knows
nothing of health. That is the point stage 3 leaves for stage 4.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from core.engine.nodes.base import Node


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
        reply = self.node.answer(request).pack()
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

    def answer(self, request: DNSRecord) -> DNSRecord:
        """Authoritative answer for the lab's domain; NXDOMAIN for any other name."""
        self.queries += 1
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        if qname == self.ctx.domain and request.q.qtype == QTYPE.A:
            targets = self.targets()
            k = self._turn % len(targets)
            self._turn += 1
            for node_id in targets[k:] + targets[:k]:
                rdata = A(self.ctx.address(node_id))
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=rdata, ttl=self.params["ttl"]))
        elif qname != self.ctx.domain:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.address, self.port)
        )
        self.transport = transport
        self.up = True

    async def stop(self) -> None:
        self.force()

    def force(self) -> None:
        super().force()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
