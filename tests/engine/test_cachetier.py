"""Cache-aside in the web tier, on real sockets: a web server, one or two real redis-server caches, SQLite."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest

from core.engine import ring
from core.engine.cachetier import key_for
from core.engine.lab import Lab
from core.engine.spec import Topology, parse_topology
from tests.engine.test_replication import until


def cached(*, caches: int = 1, **cache: Any) -> Topology:
    nodes: list[dict[str, Any]] = [
        {"id": "web", "kind": "web", "host": 80, "params": {"workers": 16, "service_ms": 1}},
        {"id": "db", "kind": "sqldb", "host": 90, "params": {"users": 200, "posts": 1000, "service_ms": 1}},
    ]
    edges = [["web", "db"]]
    for i in range(1, caches + 1):
        nodes.append({"id": f"cache-{i}", "kind": "cache", "host": 70 + i, "params": cache})
        edges.append(["web", f"cache-{i}"])
    return parse_topology({"nodes": nodes, "edges": edges})


class Site:
    def __init__(self, lab: Lab) -> None:
        self.base = f"http://{lab.address('web')}:8080"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def profile(self, user: int) -> tuple[int, dict[str, Any], list[list[Any]]]:
        async with self.session.get(f"{self.base}/api/users/{user}") as r:
            body = await r.json() if r.status == 200 else {}
            return r.status, body, json.loads(r.headers.get("X-Hops", "[]"))

    async def post(self, user: int, caption: str) -> list[list[Any]]:
        async with self.session.post(f"{self.base}/api/posts", json={"user": user, "caption": caption}) as r:
            assert r.status == 201
            return json.loads(r.headers.get("X-Hops", "[]"))

    async def close(self) -> None:
        await self.session.close()


def calls(hops: list[list[Any]]) -> list[str]:
    """Each hop as ``dst proto status`` (cache hops say hit, miss, stored, ...)."""
    return [f"{h[1]} {h[2]} {h[5]}" for h in hops]


async def test_a_miss_reads_the_database_and_stores_the_page_and_the_next_read_hits(network):
    async with Lab(cached(), network=network) as lab:
        site = Site(lab)
        try:
            status, body, hops = await site.profile(7)
            assert status == 200 and body["user"]["name"] == "user7"
            assert calls(hops)[0] == "cache-1 cache miss" and calls(hops)[-1] == "cache-1 cache stored"
            assert [h for h in calls(hops) if " sql " in h]  # the page came from SQLite
            status, again, hops = await site.profile(7)
            assert calls(hops) == ["cache-1 cache hit"]  # no database hop at all
            assert again["items"] == body["items"]
            await until(lambda: (lab.frame()["nodes"]["cache-1"].get("hits") or 0) >= 1, what="the hit counted")
            entry = lab.frame()["nodes"]["cache-1"]
            assert entry["misses"] >= 1 and entry["keys"] >= 1
        finally:
            await site.close()


@pytest.mark.parametrize(("policy", "after_write", "fresh"), [
    ("invalidate", "cache-1 cache deleted", True),
    ("update", "cache-1 cache deleted", True),  # the profile updated, then the other pages dropped
    ("none", None, False),
])
async def test_the_write_policy_decides_whether_a_read_sees_the_new_post(network, policy, after_write, fresh):
    async with Lab(cached(write_policy=policy, ttl_s=60), network=network) as lab:
        site = Site(lab)
        try:
            await site.profile(9)  # cached now
            hops = await site.post(9, f"new with {policy}")
            if after_write:
                assert calls(hops)[-1] == after_write
                assert ("cache-1 cache updated" in calls(hops)) is (policy == "update")
            else:
                assert not [h for h in calls(hops) if " cache " in h]
            _, body, hops = await site.profile(9)
            newest = body["items"][0]["caption"]
            assert (newest == f"new with {policy}") is fresh  # none: stale until the TTL runs out
        finally:
            await site.close()


async def test_a_ttl_of_zero_caches_nothing(network):
    async with Lab(cached(ttl_s=0), network=network) as lab:
        site = Site(lab)
        try:
            for _ in range(3):
                _, _, hops = await site.profile(3)
                assert calls(hops)[0] == "cache-1 cache miss" and "stored" not in " ".join(calls(hops))
        finally:
            await site.close()


async def test_a_killed_cache_costs_speed_not_pages_and_the_database_takes_every_read(network):
    async with Lab(cached(), network=network) as lab:
        site = Site(lab)
        try:
            for user in range(1, 21):
                await site.profile(user)
            lab.frame()
            for user in range(1, 21):
                _, _, hops = await site.profile(user)
                assert calls(hops) == ["cache-1 cache hit"]
            await lab.command({"action": "kill", "node": "cache-1"})
            queries = lab.nodes["db"].queries  # type: ignore[attr-defined]
            for user in range(1, 21):
                status, body, hops = await site.profile(user)
                assert status == 200 and body["user"]["id"] == user
                assert hops[0][1] == "cache-1" and hops[0][4] is False  # refused (or reset: a pooled one)
            assert lab.nodes["db"].queries - queries == 40  # type: ignore[attr-defined]  # every read, 2 queries each
        finally:
            await site.close()


async def test_two_caches_split_the_keys_by_the_ring_and_losing_one_loses_only_its_share(network):
    async with Lab(cached(caches=2), network=network) as lab:
        site = Site(lab)
        try:
            placement = ring.HashRing(["cache-1", "cache-2"])
            owners = {u: placement.owner(key_for("profile", u)) for u in range(1, 41)}
            assert set(owners.values()) == {"cache-1", "cache-2"}
            for user in owners:
                _, _, hops = await site.profile(user)
                assert hops[0][1] == owners[user]
            await lab.command({"action": "kill", "node": "cache-2"})
            for user, owner in owners.items():
                _, _, hops = await site.profile(user)
                assert calls(hops)[0].endswith("hit") == (owner == "cache-1")
        finally:
            await site.close()


async def test_coalescing_turns_a_stampede_of_misses_on_one_key_into_one_database_load(network):
    async with Lab(cached(coalesce="on"), network=network) as lab:
        site = Site(lab)
        try:
            await lab.command({"action": "slow", "node": "db", "ms": 200})  # the load takes a while
            queries = lab.nodes["db"].queries  # type: ignore[attr-defined]
            results = await asyncio.gather(*(site.profile(11) for _ in range(20)))
            assert all(status == 200 for status, _, _ in results)
            assert lab.nodes["db"].queries - queries == 2  # type: ignore[attr-defined]  # one load: profile + posts
            hits = sum(calls(hops)[0] == "cache-1 cache hit" for _, _, hops in results)  # came after the store
            assert lab.frame()["nodes"]["web"]["coalesced"] + hits == 19 and hits < 19
        finally:
            await site.close()


async def test_the_lab_emits_its_servers_passwords_nowhere(network, caplog):
    """A lab's redis-servers take a password known only to the lab: not in the topology the browser
    draws, a status, a frame, an event or a log line, whatever the lab goes through."""
    spec = {
        "nodes": [
            {"id": "web", "kind": "web", "host": 80, "params": {"workers": 16, "service_ms": 1}},
            {"id": "db", "kind": "sqldb", "host": 90, "params": {"users": 200, "posts": 1000, "service_ms": 1}},
            {"id": "cache-1", "kind": "cache", "host": 71, "params": {}},
            {"id": "kv", "kind": "kvdb", "host": 60, "params": {"users": 200, "posts": 1000}},
        ],
        "edges": [["web", "db"], ["web", "cache-1"], ["web", "kv"]],
    }
    emitted: list[dict[str, Any]] = []
    caplog.set_level(logging.DEBUG)
    lab = Lab(parse_topology(spec), network=network, emit=emitted.append)
    async with lab:
        site = Site(lab)
        try:
            assert (await site.profile(7))[0] == 200 and (await site.profile(7))[0] == 200
            await site.post(7, "hello")
            async with site.session.get(f"{site.base}/api/users/7?store=kv") as r:
                assert r.status == 200  # the key-value store's page: the web tier has the password
        finally:
            await site.close()
        await lab.command({"action": "memory", "node": "cache-1", "mb": 8})
        await lab.command({"action": "kill", "node": "kv"})
        await lab.command({"action": "restart", "node": "kv"})
        added = await lab._add("cache-1")
        said = [json.dumps(m) for m in emitted]
        said += [json.dumps(lab.frame()), json.dumps(lab.status()), json.dumps(lab.topology_dict())]
        passwords = [lab.server_password(n) for n in ("cache-1", "kv", added)]
    assert len(set(passwords)) == 3  # one per server
    assert any('"topology"' in m for m in said) and any('"events"' in m for m in said)
    for password in passwords:
        assert all(password not in m for m in said)
        assert password not in caplog.text
