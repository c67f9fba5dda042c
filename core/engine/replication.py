"""Database replication for a lab: which ``sqldb`` node is the primary, failover and promotion.

A *cluster* is a primary (a ``sqldb`` node with no ``replica_of``) and the nodes that name it in
``replica_of``. The nodes do the replicating (``core.engine.nodes.sqldb``); this module decides
who is primary, which is what a tool such as Orchestrator or Patroni does beside a real database:

- **Detection.** Every replica already notices when it cannot pull from its primary
  (``primary_down_since``). When *every* running replica has lost the primary for
  ``failover_after_s`` (the primary's parameter; 0 turns automatic failover off), the primary is
  declared dead. Asking the replicas, not a watcher of its own, means a primary cut off only from
  the web tier is not failed over, as with a real quorum of observers.
- **Promotion** of the replica that *received* the most of the log (ties: the first in the
  topology). It applies everything it received, then takes writes; the others, and the old
  primary when it comes back, follow it from its head. A replica that already applied more than
  the new primary has is rebuilt (re-seeded and the log replayed).
- **Lost writes** are counted exactly: the entries in the old primary's own change log (its file
  survives the crash) past the new primary's head, which no replica ever received.

The web tier's data-access layer (``core.engine.dal``) asks ``primary_for`` where writes go.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.engine.commands import CommandError
from core.engine.failover import Detector, choose_promotion, lost_writes
from core.engine.lifecycle import Alive, Background

if TYPE_CHECKING:
    from core.engine.lab import Lab
    from core.engine.nodes.sqldb import SqlDbNode

log = logging.getLogger(__name__)
WATCH_S = 0.1  # how often the replicas' view of the primary is looked at
CATCH_UP_S = 3.0  # a planned switchover waits this long for the replica to receive everything
RETRY_FAILOVER_S = 0.5  # after a failed automatic failover, before the next try
QUIET_S = 0.5  # after the lab starts, before a lost primary counts


@dataclass
class Cluster:
    root: str  # the primary named in the topology: the cluster's name, whoever is primary now
    primary: str
    failover_after_s: float
    promotions: int = 0
    lost_writes: int = 0
    promoting: bool = False
    detector: Detector = field(init=False)

    def __post_init__(self) -> None:
        self.detector = Detector(self.failover_after_s)

    @property
    def lost_since(self) -> float | None:
        """When every replica had lost the primary (None while one still reaches it)."""
        return self.detector.lost_since


class Replication:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.clusters: dict[str, Cluster] = {
            n.id: Cluster(root=n.id, primary=n.id, failover_after_s=float(n.params["failover_after_s"]))
            for n in lab.topology.nodes
            if n.kind == "sqldb" and not n.params.get("replica_of")
        }
        self._background = Background(f"replication of lab {lab.network}")
        self._quiet_until = 0.0

    # Who is who ------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Whether the lab has any replica at all (otherwise frames carry nothing about it)."""
        return any(n.kind == "sqldb" and n.params.get("replica_of") for n in self.lab.topology.nodes)

    def _root(self, node_id: str) -> str | None:
        try:
            spec = self.lab.topology.node(node_id)
        except KeyError:
            return None
        return spec.params.get("replica_of") or node_id if spec.kind == "sqldb" else None

    def cluster_of(self, node_id: str) -> Cluster | None:
        root = self._root(node_id)
        return self.clusters.get(root) if root else None

    def primary_for(self, node_id: str) -> str | None:
        """The current primary of the cluster this database belongs to."""
        cluster = self.cluster_of(node_id)
        return cluster.primary if cluster else None

    @property
    def primary_id(self) -> str | None:
        """The first cluster's primary (a lab with one cluster: its primary)."""
        return next(iter(self.clusters.values())).primary if self.clusters else None

    def members(self, cluster: Cluster) -> list[str]:
        return [n.id for n in self.lab.topology.nodes if n.kind == "sqldb" and self._root(n.id) == cluster.root]

    def _db(self, node_id: str) -> SqlDbNode | None:
        return self.lab.nodes.get(node_id)  # type: ignore[return-value]

    def _following(self, cluster: Cluster) -> list[SqlDbNode]:
        """The running replicas that follow the cluster's primary."""
        out = []
        for m in self.members(cluster):
            node = self._db(m)
            if node is not None and m != cluster.primary and node.up and node.following == cluster.primary:
                out.append(node)
        return out

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """After every node has started: begin watching the primaries (failover)."""
        if self.enabled and not self._background.running:
            # The replicas may have tried their primary before it listened: give them a moment.
            self._quiet_until = time.monotonic() + QUIET_S
            self._background.start(self._watch, "watch")

    async def stop(self) -> None:
        """Before the nodes stop: end the watcher (bounded: a failover under way is abandoned)."""
        await self._background.stop()

    async def _watch(self, alive: Alive) -> None:
        while alive():
            await asyncio.sleep(WATCH_S)
            if time.monotonic() < self._quiet_until:
                continue
            for cluster in self.clusters.values():
                if cluster.promoting:
                    continue
                replicas = self._following(cluster)
                newly_lost, due = cluster.detector.observe(time.monotonic(), [r.primary_down_since for r in replicas])
                if newly_lost:
                    self.lab.telemetry.event(
                        time.time(), "primary_lost", node=cluster.primary, after_s=cluster.failover_after_s
                    )
                if due:
                    try:
                        await self.failover(cluster, reason="auto")
                    except Exception as exc:  # e.g. the replicas went down meanwhile: try again next round
                        if not isinstance(exc, CommandError):
                            log.exception("failover of %s failed", cluster.primary)
                        self.lab.telemetry.event(time.time(), "failover_failed", node=cluster.primary, reason=str(exc))
                        await asyncio.sleep(RETRY_FAILOVER_S)

    # Failover --------------------------------------------------------------------------------
    async def failover(self, cluster: Cluster, *, target: str | None = None, reason: str) -> dict[str, Any]:
        """Promote ``target`` (or the most advanced replica) and re-point the rest; what happened."""
        old_id = cluster.primary
        old = self._db(old_id)
        replicas = self._following(cluster)
        if target is None:
            if not replicas:
                raise CommandError(f"no running replica of {old_id} to promote")
            best = choose_promotion([(r.id, r.received) for r in replicas], self.members(cluster))
            chosen = next(r for r in replicas if r.id == best)
        else:
            chosen = next((r for r in replicas if r.id == target), None)  # type: ignore[assignment]
            if chosen is None:
                raise CommandError(f"promote: {target} is not a running replica of the primary {old_id}")
        cluster.promoting = True
        try:
            if old is not None and old.up:
                # Fence the old primary: it takes no more writes. Planned (a promote command while
                # it runs): let the chosen replica receive everything first, so nothing is lost.
                # Automatic: the replicas cannot reach it, so waiting would only add downtime.
                old.role = "replica"
                deadline = time.monotonic() + (CATCH_UP_S if reason == "manual" else 0.0)
                while chosen.received < old.lsn and time.monotonic() < deadline and chosen.up:
                    await asyncio.sleep(0.02)
            head = await chosen.promote()
            cluster.primary = chosen.id
            cluster.promotions += 1
            cluster.detector.reset()
            lost = await self._count_after(old, head) if old is not None else 0
            if old is not None:
                old.lost_writes += lost
            cluster.lost_writes += lost
            rebuilt = []
            for m in self.members(cluster):
                node = self._db(m)
                if node is None or m == chosen.id:
                    continue
                if await node.follow(chosen.id, upto=head):
                    rebuilt.append(m)
            result = {"node": chosen.id, "old": old_id, "lsn": head, "lost": lost, "reason": reason}
            self.lab.telemetry.event(time.time(), "promoted", **result, rebuilt=rebuilt)
            return result
        finally:
            cluster.promoting = False

    @staticmethod
    async def _count_after(old: SqlDbNode, head: int) -> int:
        """Writes in the old primary's change log past ``head``: accepted, never shipped."""
        if old.up:
            return lost_writes(old.lsn, head)
        path = old.path
        if path is None:
            return 0

        def count() -> int:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return int(conn.execute("SELECT COUNT(*) FROM changelog WHERE lsn > ?", (head,)).fetchone()[0])
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(count)
        except sqlite3.Error:
            return lost_writes(old.lsn, head)  # the file could not be read: the last position it reported

    # Commands --------------------------------------------------------------------------------
    async def command(self, cmd: dict[str, Any]) -> None:
        """``promote`` {node} and ``delay`` {node, ms}; raises CommandError."""
        node_id = cmd["node"]
        node = self._db(node_id)
        cluster = self.cluster_of(node_id)
        if node is None or cluster is None:
            raise CommandError(f"{cmd['action']}: {node_id} is not a SQL database")
        if cmd["action"] == "promote":
            if cluster.primary == node_id:
                raise CommandError(f"promote: {node_id} is already the primary")
            if cluster.promoting:
                raise CommandError("promote: a promotion is already under way")
            await self.failover(cluster, target=node_id, reason="manual")
        elif cmd["action"] == "delay":
            if node.role != "replica":
                raise CommandError(f"delay: {node_id} is the primary; set the delay on a replica")
            node.delay_ms = float(cmd["ms"])
            self.lab.telemetry.event(time.time(), "delay_set", node=node_id, ms=node.delay_ms)
        else:
            raise CommandError(f"{cmd['action']}: not a replication command")

    def frame_fields(self) -> dict[str, Any] | None:
        """What a frame's ``replication`` key holds, or None without replication."""
        if not self.enabled:
            return None

        def fields(c: Cluster) -> dict[str, Any]:
            out: dict[str, Any] = {
                "primary": c.primary,
                "promotions": c.promotions,
                "lost_writes": c.lost_writes,
                "failover_after_s": c.failover_after_s,
                "auto_failover": c.failover_after_s > 0,
                "primary_lost": c.lost_since is not None,
            }
            if c.lost_since is not None and c.failover_after_s > 0:
                out["failover_in_s"] = round(max(0.0, c.failover_after_s - (time.monotonic() - c.lost_since)), 1)
            return out

        clusters = [fields(c) for c in self.clusters.values()]
        first = dict(clusters[0])
        if len(clusters) > 1:  # several clusters (shards with replicas): the lab's totals, and each one
            first.update(promotions=sum(c["promotions"] for c in clusters),
                         lost_writes=sum(c["lost_writes"] for c in clusters),
                         primary_lost=any(c["primary_lost"] for c in clusters), clusters=clusters)
            due = [c["failover_in_s"] for c in clusters if "failover_in_s" in c]
            first.pop("failover_in_s", None)
            if due:
                first["failover_in_s"] = min(due)
        return first
