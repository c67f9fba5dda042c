"""A real client sending the realistic workload over real DNS and HTTP to a stand-in site.

The stand-in is a tiny aiohttp app on the web node's address (the real web node is not started):
it serves the web tier's HTTP contract minimally. Writes bump a global change-log position (LSN);
reads answer with the current LSN, except that user 1 is always read from a "replica" stuck at 0,
so every read of user 1 after user 1 wrote is stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.engine.lab import Lab
from core.engine.spec import Topology, parse_topology
from core.engine.workload import DEFAULT_USERS, Zipf
from tests.engine.topologies import stage2

LAGGING_USER = 1


def topology(**client: Any) -> Topology:
    return parse_topology(
        {
            "domain": "www.scalelab.test",
            "nodes": [
                {"id": "dns", "kind": "dns", "host": 53, "params": {"ttl": 60}},
                {"id": "web", "kind": "web", "host": 80},
                {"id": "browser", "kind": "client", "params": {"rate": 0, **client}},
            ],
            "edges": [["browser", "dns"], ["browser", "web"]],
        }
    )


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    user: int
    request_id: str | None
    remote: str | None


@dataclass
class Site:
    """The stand-in web tier: what it received, in order, and its LSN."""

    seen: list[Seen] = field(default_factory=list)
    lsn: int = 0
    stale_expected: int = 0  # reads of LAGGING_USER answered after that user's first write
    lagging_wrote: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        path = request.path
        if path.startswith("/api/users/"):
            user = int(path.rsplit("/", 1)[1])
        elif request.method == "POST":
            user = int(body["user"])
        else:
            user = int(request.query["user"])
        request_id = request.headers.get("X-Request-Id")
        self.seen.append(Seen(request.method, path, dict(request.query), body, user, request_id, request.remote))
        headers = {"X-Request-Id": request.headers.get("X-Request-Id", "")}
        if request.method == "POST" and path == "/api/posts":
            self.lsn += 1
            self.lagging_wrote |= user == LAGGING_USER
            headers["X-Data-Lsn"] = str(self.lsn)
            return web.json_response({"post": self.lsn, "lsn": self.lsn}, status=201, headers=headers)
        if user == LAGGING_USER:
            self.stale_expected += self.lagging_wrote
            headers["X-Data-Lsn"] = "0"
        else:
            headers["X-Data-Lsn"] = str(self.lsn)
        return web.json_response({"user": user}, headers=headers)


@contextlib.asynccontextmanager
async def running(topo: Topology, network: str) -> AsyncIterator[tuple[Lab, Site]]:
    """The lab's DNS and client nodes, with the stand-in site where the web node would be."""
    lab = Lab(topo, network=network, seed=7)
    site = Site()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", site.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    started = []
    try:
        await web.TCPSite(runner, lab.address("web"), 8080).start()
        for node_id in ("dns", "browser"):
            await lab.nodes[node_id].start()
            started.append(lab.nodes[node_id])
        yield lab, site
    finally:
        for node in reversed(started):
            await node.stop()
        await runner.cleanup()


def frame(lab: Lab) -> dict[str, Any]:
    return lab.telemetry.frame(time.time(), [n.id for n in lab.topology.nodes], list(lab.topology.edges))


async def test_it_sends_the_mix_with_zipf_skewed_users_and_flags_stale_reads(network):
    topo = topology(flavor="web", write_ratio=0.25, zipf_s=1.2, users=200)
    async with running(topo, network) as (lab, site):
        browser = lab.nodes["browser"]
        lab.telemetry.frame(time.time(), [], [])
        for _ in range(400):  # one at a time, so "after the write" is well defined
            await browser.request()
        f = frame(lab)

    assert len(site.seen) == 400
    posts = [s for s in site.seen if s.method == "POST" and s.path == "/api/posts"]
    assert 0.18 <= len(posts) / 400 <= 0.32
    assert all(set(p.body) == {"user", "caption"} and p.body["caption"] for p in posts)
    logins = [s for s in site.seen if s.path == "/api/login"]
    assert logins and all(s.body == {"user": s.user} for s in logins)
    assert any(s.path.startswith("/api/users/") for s in site.seen)

    homes = [s for s in site.seen if s.path == "/"]
    users = Counter(int(s.query["user"]) for s in homes)
    expected = Zipf(200, 1.2).share(2)  # the top 1 % of 200 users: about 40 % of requests
    assert abs((users[1] + users[2]) / len(homes) - expected) < 0.12
    assert users.most_common(1)[0][0] == 1

    ids = [s.request_id for s in site.seen]
    assert all(i and re.fullmatch(r"r-[0-9a-f]+", i) for i in ids) and len(set(ids)) == 400
    assert {s.remote for s in site.seen} == {lab.address("browser")}

    assert site.stale_expected > 0
    assert browser.stale == site.stale_expected
    totals = f["totals"]
    assert totals["stale_total"] == site.stale_expected and totals["stale_rps"] > 0
    assert totals["writes_total"] == len(posts) and totals["writes_rps"] > 0
    [event] = [e for e in f["events"] if e["kind"] == "stale_read"]  # once per frame, however many
    assert (event["node"], event["user"], event["read_lsn"]) == ("browser", LAGGING_USER, 0)
    assert event["write_lsn"] >= 1


async def test_kv_store_rides_in_every_query_string_and_hops_name_the_request(network):
    topo = topology(flavor="mobile", write_ratio=0.3, store="kv", users=50)
    async with running(topo, network) as (lab, site):
        lab.telemetry.frame(time.time(), [], [])
        for _ in range(30):
            await lab.nodes["browser"].request()
        f = frame(lab)
    assert len(site.seen) == 30 and all(s.query.get("store") == "kv" for s in site.seen)
    assert any(s.path == "/api/feed" for s in site.seen)
    ops = [h["op"] for s in f["samples"] for h in s["hops"] if h["proto"] == "http"]
    shape = r"(GET /api/feed\?user=\d+&|GET /api/users/\d+\?|POST /api/(posts|login)\?)store=kv"
    assert ops and all(re.fullmatch(shape, op) for op in ops)
    assert all(s["op"] in ("feed", "profile", "login", "post") for s in f["samples"])


async def test_set_mix_takes_effect_on_the_running_arrivals(network):
    async with running(topology(write_ratio=0.0, users=100), network) as (lab, site):
        browser = lab.nodes["browser"]
        browser.set_mix(write_ratio=1.0, zipf_s=0.0)
        assert browser.snapshot()["write_ratio"] == 1.0 and browser.snapshot()["zipf_s"] == 0.0
        browser.set_rate(100)
        deadline = time.monotonic() + 20
        while len(site.seen) < 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        browser.set_rate(0)
        assert len(site.seen) >= 30
        assert all(s.method == "POST" and s.path == "/api/posts" for s in site.seen)


def test_users_default_to_what_the_database_holds(network):
    assert Lab(stage2(users=300), network=network).nodes["browser"].workload.users == 300
    assert Lab(topology(), network=network).nodes["browser"].workload.users == DEFAULT_USERS
    assert Lab(topology(users=42), network=network).nodes["browser"].workload.users == 42
