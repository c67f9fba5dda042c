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


def stage4(
    *,
    algorithm: str = "round_robin",
    backends: int = 3,
    health_interval_s: float = 0.5,
    rise: int = 2,
    fall: int = 2,
    retries: int = 1,
    workers: int = 4,
    service_ms: float = 5.0,
    rate: float = 0.0,
) -> Topology:
    """DNS names the balancer; the balancer on host 100 fronts web-1..web-N."""
    webs = [f"web-{i}" for i in range(1, backends + 1)]
    return parse_topology(
        {
            "domain": "www.scalelab.test",
            "nodes": [
                {"id": "dns", "kind": "dns", "host": 53, "params": {"target": "lb"}},
                {
                    "id": "lb",
                    "kind": "lb",
                    "host": 100,
                    "params": {
                        "algorithm": algorithm,
                        "health_interval_s": health_interval_s,
                        "rise": rise,
                        "fall": fall,
                        "retries": retries,
                    },
                },
                *(
                    {"id": w, "kind": "web", "host": 20 + i, "params": {"workers": workers, "service_ms": service_ms}}
                    for i, w in enumerate(webs, 1)
                ),
                {"id": "browser", "kind": "client", "params": {"flavor": "web", "rate": rate}},
                {"id": "phone", "kind": "client", "params": {"flavor": "mobile", "rate": rate}},
            ],
            "edges": [
                ["browser", "dns"],
                ["phone", "dns"],
                ["browser", "lb"],
                ["phone", "lb"],
                *(["lb", w] for w in webs),
            ],
        }
    )


def stage2(
    *,
    rate: float = 0.0,
    workers: int = 4,
    service_ms: float = 2.0,
    db_workers: int = 8,
    db_service_ms: float = 1.0,
    users: int = 2000,
    posts: int = 20000,
) -> Topology:
    """Stage 1 plus a SQL database behind the web server."""
    return parse_topology(
        {
            "domain": "www.scalelab.test",
            "nodes": [
                {"id": "dns", "kind": "dns", "host": 53, "params": {"ttl": 5}},
                {"id": "web", "kind": "web", "host": 80, "params": {"workers": workers, "service_ms": service_ms}},
                {
                    "id": "db",
                    "kind": "sqldb",
                    "host": 90,
                    "params": {"workers": db_workers, "service_ms": db_service_ms, "users": users, "posts": posts},
                },
                {"id": "browser", "kind": "client", "params": {"flavor": "web", "rate": rate}},
                {"id": "phone", "kind": "client", "params": {"flavor": "mobile", "rate": rate}},
            ],
            "edges": [["browser", "dns"], ["phone", "dns"], ["browser", "web"], ["phone", "web"], ["web", "db"]],
        }
    )


def stage10(*, ttl: int = 2, health_interval_s: float = 0.5, fall: int = 2, rtt_ms: float = 90.0,
            rate: float = 0.0, write_ratio: float = 0.0, failover_after_s: float = 2.0) -> Topology:
    """Two data centres (eu, us), each a balancer, a web server and a database (us's a replica of
    eu's), behind one GeoDNS server; users in each region."""
    nodes: list[dict] = [
        {"id": "dns", "kind": "dns", "params": {"target": "lb-eu", "geo": "nearest", "ttl": ttl,
                                                 "health_interval_s": health_interval_s, "fall": fall, "rise": 2}},
    ]
    edges: list[list[str]] = []
    for region in ("eu", "us"):
        nodes += [
            {"id": f"lb-{region}", "kind": "lb", "region": region, "params": {"health_interval_s": 0.5}},
            {"id": f"web-{region}", "kind": "web", "region": region, "params": {"workers": 8, "service_ms": 2}},
            {"id": f"db-{region}", "kind": "sqldb", "region": region,
             "params": {"users": 200, "posts": 1000, "service_ms": 1, "failover_after_s": failover_after_s,
                        **({"replica_of": "db-eu"} if region == "us" else {})}},
            {"id": f"users-{region}", "kind": "client", "region": region,
             "params": {"rate": rate, "users": 200, "write_ratio": write_ratio, "timeout_s": 1.0}},
        ]
        edges += [[f"lb-{region}", f"web-{region}"], [f"web-{region}", "db-eu"], [f"web-{region}", "db-us"]]
    for users in ("users-eu", "users-us"):
        edges += [[users, "dns"], [users, "lb-eu"], [users, "lb-us"]]
    return parse_topology({"regions": {"eu": "Europe", "us": "North America"}, "latency_ms": {"eu-us": rtt_ms},
                           "nodes": nodes, "edges": edges})


def stage9(
    *,
    algorithm: str = "sticky",
    backends: int = 2,
    sessions: str = "memory",
    store: bool = True,
    autoscaler: dict | None = None,
    workers: int = 4,
    service_ms: float = 5.0,
    rate: float = 0.0,
) -> Topology:
    """Stage 4's balancer over web-1..web-N, each with an edge to the session store (host 70) unless
    ``store`` is false; with ``autoscaler`` (its params) an autoscaler watching the balancer too."""
    webs = [f"web-{i}" for i in range(1, backends + 1)]
    nodes: list[dict] = [
        {"id": "dns", "kind": "dns", "host": 53, "params": {"target": "lb"}},
        {"id": "lb", "kind": "lb", "host": 100,
         "params": {"algorithm": algorithm, "health_interval_s": 0.5, "retries": 1}},
        *({"id": w, "kind": "web", "host": 20 + i, "params": {"workers": workers, "service_ms": service_ms}}
          for i, w in enumerate(webs, 1)),
        {"id": "browser", "kind": "client", "params": {"flavor": "web", "rate": rate, "users": 50, "zipf_s": 0}},
    ]
    edges = [["browser", "dns"], ["browser", "lb"], *(["lb", w] for w in webs)]
    if store:
        nodes.append({"id": "store", "kind": "sessions", "host": 70, "params": {"sessions": sessions}})
        edges += [[w, "store"] for w in webs]
    if autoscaler is not None:
        nodes.append({"id": "scaler", "kind": "autoscaler", "params": autoscaler})
        edges.append(["scaler", "lb"])
    return parse_topology({"domain": "www.scalelab.test", "nodes": nodes, "edges": edges})
