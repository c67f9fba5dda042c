"""What a node sees of its lab: a narrow view, so a node's module reads on its own.

A node never holds the ``Lab``: it gets this context, which answers where its peers are, records its
requests and events, lends the lab's random source, says which pairs a partition cuts off and
hands out the passwords of the lab's own servers.
Everything else about the lab (its lifecycle, commands, frames) is none of a node's business.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from core.engine import sharding
from core.engine.spec import NodeSpec, Topology
from core.engine.telemetry import Trace

if TYPE_CHECKING:
    from core.engine.lab import Lab
    from core.engine.nodes.base import Node


class NodeContext:
    def __init__(self, lab: Lab) -> None:
        self._lab = lab

    @property
    def rng(self) -> random.Random:
        """The lab's random source: one seed makes a lab's modelled randomness repeatable."""
        return self._lab.rng

    @property
    def topology(self) -> Topology:
        """The live topology (nodes come and go): read it each time, never keep it."""
        return self._lab.topology

    @property
    def domain(self) -> str:
        return self._lab.topology.domain

    def spec(self, node_id: str) -> NodeSpec:
        return self._lab.topology.node(node_id)

    def peers(self, node_id: str, kind: str | None = None) -> list[str]:
        """The nodes ``node_id`` has an edge to (calls), of one kind if given, in topology order."""
        topo = self._lab.topology
        return [p for p in topo.peers(node_id) if kind is None or topo.node(p).kind == kind]

    def address(self, node_id: str) -> str:
        return self._lab.address(node_id)

    def node_at(self, address: str) -> str | None:
        return self._lab.node_at(address)

    def peer(self, node_id: str) -> Node | None:
        """A running peer node (its address, port, up), or None once it has been removed."""
        return self._lab.nodes.get(node_id)

    def partitioned(self, a: str, b: str) -> bool:
        return self._lab.partitioned(a, b)

    # Regions: where a node is, and the modelled distance between two --------------------------
    def region(self, node_id: str) -> str:
        """The node's region ("" when it has none, or is gone)."""
        try:
            return self._lab.topology.node(node_id).region
        except KeyError:
            return ""

    def region_of_address(self, address: str) -> str:
        """The region of the node at ``address`` ("" for an address that is no node's)."""
        node_id = self._lab.node_at(address)
        return self.region(node_id) if node_id else ""

    def rtt_ms(self, a: str, b: str) -> float:
        """The modelled round trip between nodes ``a`` and ``b`` (0 in one region): a distance one
        machine cannot have, so the lab adds it (see ``Node.travel``)."""
        return self._lab.topology.rtt_ms(self.region(a), self.region(b))

    def server_password(self, node_id: str) -> str:
        """The password of a node's own server (a ``kvdb`` or ``cache`` redis-server): random, made
        for this lab, given to the node that runs the server and to its callers in the lab, and to
        nobody else (never put it in an event, a snapshot or a log line)."""
        return self._lab.server_password(node_id)

    def record(self, trace: Trace) -> None:
        self._lab.telemetry.record(trace)

    def event(self, kind: str, **fields: Any) -> None:
        """An event for the log (its kind must be declared: core.engine.kinds)."""
        self._lab.telemetry.event(time.time(), kind, **fields)

    def stale_read(self, **fields: Any) -> None:
        self._lab.telemetry.stale_read(time.time(), **fields)

    def share_of_rows(self, node_id: str) -> float | None:
        """A shard's fraction of all the rows its router's shards hold (None: not a shard)."""
        router_id = sharding.router_of(self._lab.topology, node_id)
        if router_id is None or self._lab.topology.node(node_id).params.get("replica_of"):
            return None
        rows = [getattr(self._lab.nodes.get(s), "rows", 0) for s in sharding.shards_of(self._lab.topology, router_id)]
        total = sum(rows)
        return round(getattr(self._lab.nodes.get(node_id), "rows", 0) / total, 4) if total else 0.0

    # Replication: which database of a cluster takes the writes -------------------------------
    def primary_for(self, node_id: str) -> str | None:
        return self._lab.replication.primary_for(node_id)

    @property
    def replicated(self) -> bool:
        return self._lab.replication.enabled

    async def replication_command(self, cmd: dict[str, Any]) -> None:
        await self._lab.replication.command(cmd)

    # Horizontal scaling on a node's behalf (an autoscaler) -------------------------------------
    async def scale(self, action: str, node_id: str) -> str:
        """The lab's own ``add`` (a copy of ``node_id``; the new id) or ``remove`` (drained first);
        CommandError when the lab refuses."""
        return await self._lab.scale(action, node_id)
