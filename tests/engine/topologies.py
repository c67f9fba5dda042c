"""Topologies the engine tests start."""

from __future__ import annotations

from core.engine.spec import Topology, parse_topology


def stage1(
    *, ttl: int = 5, rate: float = 0.0, workers: int = 4, service_ms: float = 25.0, queue_limit: int = 64
) -> Topology:
    return parse_topology(
        {
            "domain": "www.scalelab.test",
            "nodes": [
                {"id": "dns", "kind": "dns", "host": 53, "params": {"ttl": ttl}},
                {
                    "id": "web",
                    "kind": "web",
                    "host": 80,
                    "params": {"workers": workers, "service_ms": service_ms, "queue_limit": queue_limit},
                },
                {"id": "browser", "kind": "client", "params": {"flavor": "web", "rate": rate}},
                {"id": "phone", "kind": "client", "params": {"flavor": "mobile", "rate": rate}},
            ],
            "edges": [["browser", "dns"], ["phone", "dns"], ["browser", "web"], ["phone", "web"]],
        }
    )
