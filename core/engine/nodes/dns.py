"""A real UDP DNS server: answers A queries for the lab's domain with the target node's address.

When servers have been added like the target (``add``: same kind, same callers), the answer lists
every one of them and rotates the order on each query: DNS round robin, the way to scale out
before there is a load balancer. A resolver takes the first record and caches it for the TTL, so
the split is coarse, and a dead server keeps its share until the answers expire: DNS knows
nothing of health. That is the point stage 3 leaves for stage 4.

A site with static assets (a ``web`` node with ``assets: on``, or a ``cdn`` node) has two more
names (``core.engine.assets``): the static name the pages put on their assets' URLs, and the CDN's
name, answered with the edges. The ``cdn`` parameter (and command) says where the static name
points: ``off``, straight at the origin; ``on``, a CNAME to the CDN's name, the way a site hands its
assets to a CDN. Which nodes a name may answer with is ``records()``; their order is ``answer()``'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dnslib import CNAME, QTYPE, RCODE, RR, A, DNSRecord

from core.engine import assets
from core.engine.commands import CommandError
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
        reply = self.node.answer(request, self.node.ctx.node_at(addr[0])).pack()
        if self.node.slow_ms > 0:  # the "slow" fault: answer late
            asyncio.get_running_loop().call_later(self.node.slow_ms / 1000.0, self._send, reply, addr)
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
        self.cdn = self.params["cdn"] == "on"  # the static name: a CNAME to the CDN (on) or the origin

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

    # Names -------------------------------------------------------------------------------------
    @property
    def serves_static(self) -> bool:
        """The site has static assets to name: a web server serving them, or CDN edges."""
        return any(n.kind == "cdn" or (n.kind == "web" and n.params.get("assets") == "on")
                   for n in self.ctx.topology.nodes)

    def edges(self) -> list[str]:
        """The CDN's edges, in topology order."""
        return [n.id for n in self.ctx.topology.nodes if n.kind == "cdn"]

    def origin(self) -> list[str]:
        """Where the static name points without the CDN: the edges' origin, else the site itself."""
        for n in self.ctx.topology.nodes:
            if n.kind == "cdn":
                return [n.params["origin"]]
        return self.targets()

    def alias(self, qname: str) -> str | None:
        """The name ``qname`` is a CNAME of, or None: the static name while the CDN is on."""
        domain = self.ctx.domain
        if self.cdn and self.edges() and qname == assets.static_name(domain) != domain:
            return assets.cdn_name(domain)
        return None

    def records(self, qname: str) -> list[str] | None:
        """The nodes whose addresses may answer ``qname`` (unordered: ``answer`` orders them), or
        None for a name this server does not know (NXDOMAIN)."""
        domain = self.ctx.domain
        if qname == domain:
            return self.targets()
        if not self.serves_static:
            return None
        if qname == assets.cdn_name(domain):
            return self.edges() or None
        if qname == assets.static_name(domain):
            alias = self.alias(qname)
            return self.records(alias) if alias else self.origin()
        return None

    def order(self, qname: str, node_ids: list[str], caller: str | None) -> list[str]:
        """The answer's order. The CDN's name: the edges the caller has an edge to first (its
        nearest, as the topology draws it), the rest after; every other name: round robin."""
        if qname == assets.cdn_name(self.ctx.domain) and caller is not None:
            mine = set(self.ctx.peers(caller, "cdn"))
            return [n for n in node_ids if n in mine] + [n for n in node_ids if n not in mine]
        k = self._turn % len(node_ids)
        self._turn += 1
        return node_ids[k:] + node_ids[:k]

    def answer(self, request: DNSRecord, caller: str | None = None) -> DNSRecord:
        """Authoritative answer for the lab's names (``records``); NXDOMAIN for any other name.
        ``caller``: the querying node's id, when the source address is a node's."""
        self.queries += 1
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        node_ids = self.records(qname)
        if node_ids is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype != QTYPE.A:  # the name exists: an empty answer
            return reply
        ttl = self.params["ttl"]
        owner = request.q.qname
        alias = self.alias(qname)
        if alias:
            reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(alias + "."), ttl=ttl))
            owner, qname = alias + ".", alias
        for node_id in self.order(qname, node_ids, caller):
            reply.add_answer(RR(owner, QTYPE.A, rdata=A(self.ctx.address(node_id)), ttl=ttl))
        return reply

    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        # cdn: where the static name points (validated against the kind: off or on)
        if not self.serves_static:
            raise CommandError(f"{self.id}: this site has no static assets to point anywhere")
        on = cmd["value"] == "on"
        if on and not self.edges():
            raise CommandError(f"{self.id}: this topology has no CDN edge (a cdn node) to point at")
        if on == self.cdn:
            raise CommandError(f"{self.id}: the static name already points at the {'CDN' if on else 'origin'}")
        self.cdn = on
        domain = self.ctx.domain
        self.ctx.event("cdn_set", node=self.id, name=assets.static_name(domain), cdn=assets.cdn_name(domain),
                       on=on, value=cmd["value"])

    def snapshot(self) -> dict[str, Any]:
        if not self.serves_static:
            return {"up": self.up}
        return {"up": self.up, "static": True, "cdn": "on" if self.cdn else "off"}

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
