"""Database sharding on real sockets: a router places users on shards, moves them online, scatters feeds."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import aiohttp
import pytest

from core.engine import ring, sqlwire
from core.engine.lab import Lab
from core.engine.spec import Topology, parse_topology, topology_from_dict

USERS = 300


def sharded(*, shards: int = 3, algorithm: str = "modulo", vnodes: int = 64, replicas: bool = False) -> Topology:
    """A web server, a shard router and its shards (no clients: the tests are the users)."""
    nodes: list[dict[str, Any]] = [
        {"id": "web", "kind": "web", "host": 80, "params": {"workers": 16, "service_ms": 1}},
        {"id": "router", "kind": "router", "host": 85, "params": {"algorithm": algorithm, "vnodes": vnodes}},
    ]
    edges = [["web", "router"]]
    for i in range(1, shards + 1):
        nodes.append({"id": f"db-{i}", "kind": "sqldb", "host": 90 + i,
                      "params": {"users": USERS, "posts": 3000, "service_ms": 0.2}})
        edges.append(["router", f"db-{i}"])
    if replicas:
        nodes.append({"id": "db-1r", "kind": "sqldb", "host": 110,
                      "params": {"users": USERS, "posts": 3000, "service_ms": 0.2, "replica_of": "db-1",
                                 "failover_after_s": 0.5}})
    return parse_topology({"nodes": nodes, "edges": edges})


def shard_users(lab: Lab, db_id: str) -> set[int]:
    conn = sqlite3.connect(f"file:{lab.nodes[db_id].path}?mode=ro", uri=True)  # type: ignore[attr-defined]
    try:
        return {r[0] for r in conn.execute("SELECT id FROM users")}
    finally:
        conn.close()


def post_owners(lab: Lab, db_id: str) -> set[int]:
    conn = sqlite3.connect(f"file:{lab.nodes[db_id].path}?mode=ro", uri=True)  # type: ignore[attr-defined]
    try:
        return {r[0] for r in conn.execute("SELECT DISTINCT user_id FROM posts")}
    finally:
        conn.close()


async def get(session: aiohttp.ClientSession, lab: Lab, path: str) -> tuple[int, list[list[Any]], dict[str, Any]]:
    async with session.get(f"http://{lab.address('web')}:8080{path}") as r:
        body = await r.json() if r.status == 200 else {}
        return r.status, json.loads(r.headers.get("X-Hops", "[]")), body


async def test_each_shard_holds_exactly_the_users_the_placement_gives_it(network):
    async with Lab(sharded(shards=3), network=network) as lab:
        placement = ring.make_router("modulo", ["db-1", "db-2", "db-3"])
        for db in ("db-1", "db-2", "db-3"):
            want = {u for u in range(1, USERS + 1) if placement.owner(u) == db}
            assert shard_users(lab, db) == want
            assert post_owners(lab, db) <= want  # a user's posts live with the user
        shares = [lab.frame()["nodes"][db]["share"] for db in ("db-1", "db-2", "db-3")]
        assert sum(shares) == pytest.approx(1.0, abs=0.01)


async def test_a_users_queries_land_on_the_users_shard_and_the_feed_on_every_shard(network):
    async with Lab(sharded(shards=3), network=network) as lab, aiohttp.ClientSession() as s:
        placement = ring.make_router("modulo", ["db-1", "db-2", "db-3"])
        for user in (1, 2, 3, 17, 250):
            status, hops, body = await get(s, lab, f"/api/users/{user}")
            assert status == 200 and body["user"]["name"] == f"user{user}"
            shard_hops = [h[1] for h in hops if h[0] == "router"]
            assert shard_hops == [placement.owner(user), placement.owner(user)]  # profile, own posts
        status, hops, body = await get(s, lab, "/api/feed?user=5")
        assert status == 200 and body["items"]
        calls = [h for h in hops if h[0] == "router"]
        assert [h[1] for h in calls[:2]] == [placement.owner(5)] * 2  # the profile, whom 5 follows: 5's shard
        assert sorted(h[1] for h in calls[2:]) == ["db-1", "db-2", "db-3"]  # then every shard at once


async def test_the_router_runs_only_the_applications_statements_and_hangs_up_on_http(network, tmp_path):
    async with Lab(sharded(shards=2), network=network) as lab:
        address = lab.address("router")
        reader, writer = await asyncio.open_connection(address, sqlwire.PORT)
        writer.write(sqlwire.encode_request("v", f"VACUUM INTO '{tmp_path}/copy.db'", [1]))
        writer.write(sqlwire.encode_request("p", sqlwire.PROFILE_SQL, [7]))
        vacuum = sqlwire.decode_reply(await reader.readline())
        profile = sqlwire.decode_reply(await reader.readline())
        writer.close()
        assert "application's own statements" in vacuum["error"] and profile["rows"][0][1] == "user7"
        # A browser's POST made by a web page: closed at its first line, the body never routed.
        body = sqlwire.encode_request("evil", sqlwire.POST_SQL, [7, "from a web page", "/x.jpg", 1])
        reader, writer = await asyncio.open_connection(address, sqlwire.PORT)
        writer.write(b"POST / HTTP/1.1\r\nContent-Type: text/plain\r\n\r\n" + body)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert lab.nodes["router"].queries == 1 and all(lab.nodes[d].lsn == 0 for d in ("db-1", "db-2"))
    assert list(tmp_path.iterdir()) == []


async def test_a_post_goes_to_its_authors_shard_and_is_read_back(network):
    async with Lab(sharded(shards=3), network=network) as lab, aiohttp.ClientSession() as s:
        placement = ring.make_router("modulo", ["db-1", "db-2", "db-3"])
        url = f"http://{lab.address('web')}:8080/api/posts"
        async with s.post(url, json={"user": 42, "caption": "on my shard"}) as r:
            assert r.status == 201
            hops = json.loads(r.headers["X-Hops"])
        calls = [(h[1], h[3].split()[0]) for h in hops if h[0] == "router"]
        assert calls[0] == (placement.owner(42), "INSERT")  # the post, on its author's shard
        # then its fan-out: whom to copy it to, asked of every shard, and the copies into their feeds
        selects = [db for db, verb in calls if verb == "SELECT"]  # the author's name, then each shard's followers
        assert len(selects) == 4 and set(selects) == {"db-1", "db-2", "db-3"}
        assert any(verb == "INSERT" for _, verb in calls[1:])
        _, _, body = await get(s, lab, "/api/users/42")
        assert body["items"][0]["caption"] == "on my shard"


async def test_a_precomputed_feed_is_one_hop_on_the_readers_shard_and_has_the_new_post(network):
    async with Lab(sharded(shards=3), network=network) as lab, aiohttp.ClientSession() as s:
        placement = ring.make_router("modulo", ["db-1", "db-2", "db-3"])
        _, _, gathered = await get(s, lab, "/api/feed?user=5")
        await lab.command({"action": "feed", "node": "router", "value": "precomputed"})
        status, hops, body = await get(s, lab, "/api/feed?user=5")
        assert status == 200
        assert [h[1] for h in hops if h[0] == "router"] == [placement.owner(5)] * 2  # profile, then the feed
        assert [i["id"] for i in body["items"]] == [i["id"] for i in gathered["items"]]  # the same posts
        # A post by someone user 5 follows is copied into 5's feed.
        db = placement.owner(5)
        conn = sqlite3.connect(f"file:{lab.nodes[db].path}?mode=ro", uri=True)  # type: ignore[attr-defined]
        author = conn.execute("SELECT followee_id FROM follows WHERE follower_id = 5 LIMIT 1").fetchone()[0]
        conn.close()
        async with s.post(f"http://{lab.address('web')}:8080/api/posts", json={"user": author, "caption": "fan"}) as r:
            assert r.status == 201
        _, hops, body = await get(s, lab, "/api/feed?user=5")
        assert body["items"][0]["caption"] == "fan"
        assert lab.frame()["nodes"]["router"]["precomputed"] >= 2


async def test_killing_one_shard_fails_its_users_and_every_feed_but_not_the_others(network):
    async with Lab(sharded(shards=3), network=network) as lab, aiohttp.ClientSession() as s:
        placement = ring.make_router("modulo", ["db-1", "db-2", "db-3"])
        await lab.command({"action": "kill", "node": "db-2"})
        on_2 = next(u for u in range(1, USERS) if placement.owner(u) == "db-2")
        on_1 = next(u for u in range(1, USERS) if placement.owner(u) == "db-1")
        assert (await get(s, lab, f"/api/users/{on_1}"))[0] == 200
        assert (await get(s, lab, f"/api/users/{on_2}"))[0] == 503
        assert (await get(s, lab, f"/api/feed?user={on_1}"))[0] == 503  # the scatter needs every shard


@pytest.mark.parametrize(("algorithm", "low", "high"), [("modulo", 0.6, 0.9), ("consistent", 0.1, 0.4)])
async def test_adding_a_shard_under_traffic_moves_the_changed_users_and_fails_no_request(network, algorithm, low, high):
    async with Lab(sharded(shards=3, algorithm=algorithm), network=network) as lab, aiohttp.ClientSession() as s:
        failures: list[tuple[int, int]] = []
        stop = asyncio.Event()

        async def reader(k: int) -> None:
            user = k
            while not stop.is_set():
                user = user % USERS + 1
                status, _, body = await get(s, lab, f"/api/users/{user}")
                if status != 200 or body["user"].get("name") != f"user{user}":
                    failures.append((user, status))

        readers = [asyncio.create_task(reader(k * 37)) for k in range(8)]
        await asyncio.sleep(0.3)
        before = {db: shard_users(lab, db) for db in ("db-1", "db-2", "db-3")}
        await lab.command({"action": "add", "like": "db-1"})
        router = lab.nodes["router"]
        for _ in range(200):
            if router.placement.nodes == ("db-1", "db-2", "db-3", "db-4") and not router.moving:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*readers)
        assert failures == []
        new = ring.make_router(algorithm, ["db-1", "db-2", "db-3", "db-4"])
        for db in ("db-1", "db-2", "db-3", "db-4"):
            assert shard_users(lab, db) == {u for u in range(1, USERS + 1) if new.owner(u) == db}
        moved_users = sum(len(before[db] - shard_users(lab, db)) for db in before)
        assert moved_users == len(ring.moved(range(1, USERS + 1), ring.make_router(algorithm, list(before)), new))
        table = lab.frame()["sharding"]
        assert low < table["moved_fraction"] < high
        assert table["moved_rows"] > 0 and table["rows"] > 0


async def test_switching_to_consistent_hashing_live_moves_the_rows_to_the_ring(network):
    async with Lab(sharded(shards=3), network=network) as lab:
        await lab.command({"action": "algorithm", "node": "router", "value": "consistent"})
        router = lab.nodes["router"]
        for _ in range(200):
            if router.placement.algorithm == "consistent" and not router.moving:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        new = ring.make_router("consistent", ["db-1", "db-2", "db-3"], 64)
        assert shard_users(lab, "db-3") == {u for u in range(1, USERS + 1) if new.owner(u) == "db-3"}
        assert lab.frame()["nodes"]["router"]["arcs"]
        with pytest.raises(Exception, match="only a shard router"):
            await lab.command({"action": "vnodes", "node": "web", "n": 8})


async def test_a_removed_shard_gives_its_rows_to_the_others_first(network):
    async with Lab(sharded(shards=3, algorithm="consistent"), network=network) as lab:
        await lab.command({"action": "remove", "node": "db-3"})
        assert "db-3" not in lab.nodes
        union = shard_users(lab, "db-1") | shard_users(lab, "db-2")
        assert union == set(range(1, USERS + 1))


async def test_a_shards_replica_seeds_its_shards_rows_and_fails_over_per_shard(network):
    async with Lab(sharded(shards=2, replicas=True), network=network) as lab, aiohttp.ClientSession() as s:
        assert shard_users(lab, "db-1r") == shard_users(lab, "db-1")
        await lab.command({"action": "kill", "node": "db-1"})
        for _ in range(100):
            if lab.replication.primary_for("db-1") == "db-1r":
                break
            await asyncio.sleep(0.05)
        assert lab.replication.primary_for("db-1") == "db-1r"
        user = next(u for u in range(1, USERS) if ring.make_router("modulo", ["db-1", "db-2"]).owner(u) == "db-1")
        status, hops, _ = await get(s, lab, f"/api/users/{user}")
        assert status == 200 and next(h[1] for h in hops if h[0] == "router") == "db-1r"


async def test_a_celebrity_saturates_the_shard_that_holds_them_while_the_others_idle(network):
    spec = sharded(shards=3).to_dict()
    for node in spec["nodes"]:
        if node["kind"] == "sqldb":
            node["params"].update(workers=2, service_ms=10, queue_limit=64)
    spec["nodes"] += [{"id": "dns", "kind": "dns", "host": 53, "params": {"target": "web"}},
                      {"id": "fan", "kind": "client", "params": {"rate": 120, "zipf_s": 3.0, "users": USERS}}]
    spec["edges"] += [["fan", "dns"], ["fan", "web"]]
    async with Lab(topology_from_dict(spec), network=network) as lab:
        hot = ring.make_router("modulo", ["db-1", "db-2", "db-3"]).owner(1)  # rank 1 draws ~83 % at s=3
        utils: dict[str, list[float]] = {db: [] for db in ("db-1", "db-2", "db-3")}
        await asyncio.sleep(3)
        for _ in range(12):
            await asyncio.sleep(0.25)
            frame = lab.frame()
            for db in utils:
                utils[db].append(frame["nodes"][db].get("util") or 0.0)
        mean = {db: sum(v) / len(v) for db, v in utils.items()}
        assert mean[hot] >= 0.8, mean
        assert all(mean[db] < 0.5 for db in mean if db != hot), mean
        assert frame["nodes"][hot]["p95_ms"] > max(frame["nodes"][db]["p95_ms"] for db in mean if db != hot)
