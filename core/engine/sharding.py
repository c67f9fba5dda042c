"""Which databases a shard router spreads the data over, read from the topology (sans-I/O).

A ``router`` node's shards are the ``sqldb`` nodes it has an edge to that are primaries in the
spec (no ``replica_of``): each is a cluster whose primary may change by failover, so a shard is
named by its first primary's id, for good. The sharding key is the user id: a user's row, their
posts and whom they follow live on the user's shard.
"""

from __future__ import annotations

from collections.abc import Callable

from core.engine.ring import Router, make_router
from core.engine.spec import Topology

# The rows of one user, table by table: what a resharding copies and deletes (column order = SCHEMA).
USER_TABLES: tuple[tuple[str, str], ...] = (
    ("users", "id"), ("posts", "user_id"), ("follows", "follower_id"), ("feeds", "reader_id")
)


def shards_of(topology: Topology, router_id: str) -> list[str]:
    """The router's shards, in topology order."""
    out = []
    for peer in topology.peers(router_id):
        spec = topology.node(peer)
        if spec.kind == "sqldb" and not spec.params.get("replica_of"):
            out.append(peer)
    return out


def router_of(topology: Topology, node_id: str) -> str | None:
    """The router whose shard ``node_id`` is (for a replica: its primary's), or None if unsharded."""
    spec = topology.node(node_id)
    root = spec.params.get("replica_of") or node_id
    for other in topology.nodes:
        if other.kind == "router" and root in shards_of(topology, other.id):
            return other.id
    return None


def initial_router(topology: Topology, router_id: str) -> Router:
    """The placement the topology declares (the router's algorithm and vnodes over its shards)."""
    params = topology.node(router_id).params
    return make_router(params["algorithm"], shards_of(topology, router_id), params["vnodes"])


def seed_filter(topology: Topology, node_id: str) -> Callable[[int], bool] | None:
    """Which users a database seeds: a shard (or its replica) only its own; None: all of them."""
    router_id = router_of(topology, node_id)
    if router_id is None:
        return None
    shard = topology.node(node_id).params.get("replica_of") or node_id
    placement = initial_router(topology, router_id)
    return lambda user: placement.owner(user) == shard
