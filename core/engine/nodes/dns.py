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

A site with static assets (a ``web`` node with ``assets: on``, or a ``cdn`` node) has two more
names (``core.engine.assets``): the static name the pages put on their assets' URLs, and the CDN's
name, answered with the edges. The ``cdn`` parameter (and command) says where the static name
points: ``off``, straight at the origin; ``on``, a CNAME to the CDN's name, the way a site hands its
assets to a CDN. Which nodes a name may answer with is ``records()``; their order is ``order()``'s
(GeoDNS's nearest when ``geo: nearest``, for the CDN's edges too).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from dnslib import CNAME, QTYPE, RCODE, RR, TXT, A, DNSRecord

from core.engine import assets, geodns
from core.engine.commands import CommandError
from core.engine.lifecycle import Alive
from core.engine.nodes.base import Node
from core.engine.nodes.http import close_session, close_session_now, health_check


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
        self.cdn = self.params["cdn"] == "on"  # the static name: a CNAME to the CDN (on) or the origin
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

    # Names -------------------------------------------------------------------------------------
    @property
    def serves_static(self) -> bool:
        """The site has static assets to name: a web server serving them, or CDN edges."""
        return bool(assets.edges(self.ctx.topology) or assets.origins(self.ctx.topology))

    def edges(self) -> list[str]:
        """The CDN's edges, in topology order."""
        return assets.edges(self.ctx.topology)

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
        """The nodes whose addresses may answer ``qname`` (unordered: ``order`` orders them), or
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

    def checked(self) -> list[str]:
        """Every node a name may answer with: what the health checks watch."""
        ids = self.targets()
        if self.serves_static:
            ids += [n for n in (*self.edges(), *self.origin()) if n not in ids]
        return ids

    def order(self, qname: str, node_ids: list[str], source: str) -> tuple[list[str], str]:
        """The answer's nodes in order, and why ("" when there is nothing to say). Without GeoDNS,
        the CDN's name lists the edges the asking node has a topology edge to first (its nearest,
        as the topology draws it); everything else is ``arrange``'s."""
        caller = self.ctx.node_at(source) if source else None
        if self.params["geo"] != "nearest" and qname == assets.cdn_name(self.ctx.domain) and caller is not None:
            mine = set(self.ctx.peers(caller, "cdn"))
            if mine:
                return [n for n in node_ids if n in mine] + [n for n in node_ids if n not in mine], ""
        return self.arrange(node_ids, source)

    def answer(self, request: DNSRecord, source: str = "") -> DNSRecord:
        """Authoritative answer for the lab's names (``records``); NXDOMAIN for any other name.
        ``source`` is the query's source address: where the client is, for GeoDNS."""
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
        targets, why = self.order(qname, node_ids, source)
        for node_id in targets:
            reply.add_answer(RR(owner, QTYPE.A, rdata=A(self.ctx.address(node_id)), ttl=ttl))
        if why:
            reply.add_ar(RR(owner, QTYPE.TXT, rdata=TXT(why[:200]), ttl=0))
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
            ids = self.checked()  # targets come and go: read them every round
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
        return await health_check(self._session, self.ctx.peer(target), timeout)

    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        if self.params["health_interval_s"] > 0:
            snap["healthy"] = sum(1 for t in self.targets() if self.health.is_up(t))
        if self.serves_static:
            snap.update({"static": True, "cdn": "on" if self.cdn else "off"})
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
