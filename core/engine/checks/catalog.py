"""The metrics a check may read: every node's request statistics, each kind's declared gauges
(``Kind.gauges``), the totals, edges and replication tables; and why a name cannot exist."""

from __future__ import annotations

from typing import Any

from core.engine.kinds import KINDS

# Metric keys a check may read. Every node has the request statistics; each kind adds the numeric
# gauges it declares (``Kind.gauges`` in core.engine.kinds). Edges carry only rates; totals add ok_rps.
NODE_KEYS = ("rps", "err_rps", "p50_ms", "p95_ms", "up")
# `slow_ms` (the "slow" fault, every server kind) is in a frame only while the node is slowed:
# null otherwise, so write `metric(web-3.slow_ms) > 0`, never `== 0`.
KIND_GAUGES: dict[str, tuple[str, ...]] = {name: kind.gauges for name, kind in KINDS.items()}
# writes_rps/stale_rps cover the window like rps; writes_total/stale_total count since the lab started;
# failover_s is the last outage any client's users saw (telemetry.Outages), null before one ended.
TOTALS_KEYS = (
    "rps", "ok_rps", "err_rps", "p50_ms", "p95_ms", "writes_rps", "stale_rps", "writes_total", "stale_total",
    "failover_s",
    # A page's asset fetches (only in a lab whose pages reference static assets; null otherwise).
    "static_rps", "static_err_rps", "static_p50_ms", "static_p95_ms",
    "logouts_rps", "logouts_total",  # logged-in users answered as anonymous (core.engine.sessions)
)
EDGE_KEYS = ("rps", "err_rps")
# metric(replication.KEY): the lab's database cluster (core.engine.replication.frame_fields).
REPLICATION_KEYS = ("promotions", "lost_writes", "primary_lost", "failover_in_s")
# Tables a kind's nodes add to the frame (Kind.tables): {table: (its keys, the kinds that add it)}.
KIND_TABLES: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {}
for _kind in KINDS.values():
    for _table, _keys in _kind.tables.items():
        _known, _kinds = KIND_TABLES.get(_table, ((), frozenset()))
        KIND_TABLES[_table] = (tuple(dict.fromkeys((*_known, *_keys))), _kinds | {_kind.name})
# metric names whose first part is a frame table, not a node
TABLES = ("totals", "replication", *KIND_TABLES)


def metric_problem(name: str, topology: dict[str, Any] | None) -> str | None:
    """Why a metric name cannot exist in this topology (Topology.to_dict()), or None if it can."""
    where, _, key = name.partition(".")
    if where == "totals":
        return None if key in TOTALS_KEYS else f"unknown metric {key!r} for totals (known: {', '.join(TOTALS_KEYS)})"
    if where == "replication":
        if not any(n.get("params", {}).get("replica_of") for n in (topology or {}).get("nodes", [])):
            return "this topology has no replica (no sqldb node with replica_of)"
        known_r = REPLICATION_KEYS
        return None if key in known_r else f"unknown metric {key!r} for replication (known: {', '.join(known_r)})"
    nodes = {n["id"]: n["kind"] for n in (topology or {}).get("nodes", [])}
    if where in KIND_TABLES:
        keys, kinds = KIND_TABLES[where]
        if not kinds & set(nodes.values()):
            return f"this topology has no {' or '.join(sorted(kinds))} node, so no {where} table"
        return None if key in keys else f"unknown metric {key!r} for {where} (known: {', '.join(keys)})"
    if ">" in where:
        a, b = where.split(">", 1)
        missing = [x for x in (a, b) if x not in nodes]
        if missing:
            return f"no node with id {missing[0]!r}"
        if [a, b] not in [list(e) for e in (topology or {}).get("edges", [])]:
            return f"no edge {a}>{b} in the topology"
        return None if key in EDGE_KEYS else f"unknown metric {key!r} for an edge (known: {', '.join(EDGE_KEYS)})"
    if where not in nodes:
        return f"no node with id {where!r}"
    known = NODE_KEYS + KIND_GAUGES.get(nodes[where], ())
    return (
        None
        if key in known
        else f"unknown metric {key!r} for {nodes[where]} node {where!r} (known: {', '.join(known)})"
    )
