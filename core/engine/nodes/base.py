"""What every node has: an address, a lifecycle, and a snapshot for the frame."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from core.engine.lifecycle import Background
from core.engine.spec import NodeSpec, Topology

if TYPE_CHECKING:
    from core.engine.context import NodeContext


class Node:
    def __init__(self, spec: NodeSpec, ctx: NodeContext) -> None:
        self.spec = spec
        self.ctx = ctx  # the lab as a node may see it (core.engine.context)
        self.id = spec.id
        self.params = spec.params
        self.address = ctx.address(spec.id)
        self.port = spec.kind_info.port
        self.up = False
        self.who = f"{spec.id} ({self.address})"  # how the log names this node
        # Loops a node runs beside serving (health checks, a gauge refresher): they end when the
        # node stops even if a cancellation is lost (see core.engine.lifecycle).
        self.background = Background(self.who)
        # The "slow" fault: milliseconds added to every request this node serves (0: none). One
        # mechanism for every kind: a server awaits slowdown() (or adds slow_ms to its modelled
        # work) where it does its work. It survives restarts: it models the machine, not the process.
        self.slow_ms = 0.0

    async def slowdown(self) -> None:
        """Spend the added latency of the "slow" fault, if any."""
        if self.slow_ms > 0:
            await asyncio.sleep(self.slow_ms / 1000.0)

    def cut_off(self, peer_address: str) -> bool:
        """True when a partition separates this node from the node at ``peer_address``.

        The "partition" fault, one mechanism for every kind: a node drops (or holds unanswered)
        whatever arrives from a cut-off peer, as a real partition loses packets silently, so the
        caller sees a timeout, never a refusal. Unknown addresses are never cut off.
        """
        peer = self.ctx.node_at(peer_address)
        return peer is not None and self.ctx.partitioned(self.id, peer)

    def distance_ms(self, peer_address: str) -> float:
        """The modelled round trip between this node and the node at ``peer_address`` (0 within a
        region or for an address that is no node's)."""
        if not self.ctx.topology.regions:  # most labs: every request passes here, so ask nothing more
            return 0.0
        peer = self.ctx.node_at(peer_address)
        return self.ctx.rtt_ms(self.id, peer) if peer is not None else 0.0

    async def travel(self, peer_address: str) -> float:
        """Spend the modelled distance to a caller: one round trip, before the request is served.

        One mechanism for every kind: each server the lab runs (HttpListener, the DNS and SQL
        servers) awaits it for what arrives from another region, so a request and its answer cost
        what the two regions' distance would. Returns the milliseconds spent."""
        ms = self.distance_ms(peer_address)
        if ms > 0:
            await asyncio.sleep(ms / 1000.0)
        return ms

    @classmethod
    def clone_params(cls, base: NodeSpec, topology: Topology) -> dict[str, Any]:
        """The parameters a copy of ``base`` (the ``add`` command) gets other than base's own."""
        return {}

    def removal_problem(self) -> str | None:
        """Why this node cannot be removed now (said after its id), or None."""
        return None

    def peers_changed(self) -> None:
        """The lab's topology changed (a node was added or removed): update whatever this node
        derived from its edges. Called on every running node after the change."""

    def in_flight_to(self, peer_id: str) -> int:
        """Requests this node has sent to ``peer_id`` and not yet finished (the lab waits for 0
        before it stops a removed node: a graceful drain)."""
        return 0

    async def start(self) -> None:
        """Bind and serve; raise OSError if the address cannot be bound."""
        self.up = True

    async def stop(self) -> None:
        """Release every socket and task; safe to call twice."""
        self.up = False

    async def discard(self) -> None:
        """The lab is over (called after stop): free what outlives a crash, such as files on disk."""

    def force(self) -> None:
        """The lab's stop ran out of time for this node: release everything it holds now,
        synchronously (listeners, connections, child processes, files), whatever its tasks are
        doing; they find everything closed and end. Safe to call at any time, and twice."""
        self.up = False
        self.background.force()

    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        """One of the kind's own commands (``Kind.commands``), validated by the lab; raise
        CommandError (changing nothing) when it cannot be done now."""
        raise NotImplementedError(f"{self.spec.kind} declares {action} but its runtime does not handle it")

    async def kill(self) -> None:
        """Crash: like stop, but abrupt (connections reset, in-flight work lost)."""
        await self.stop()

    def tables(self) -> dict[str, dict[str, Any]]:
        """Frame tables this node adds (metric(TABLE.KEY) in checks; declared in Kind.tables)."""
        return {}

    def snapshot(self) -> dict[str, Any]:
        """Live gauges merged into this node's entry of each frame."""
        return {"up": self.up}
