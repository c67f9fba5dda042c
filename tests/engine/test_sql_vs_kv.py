"""The same pages from a SQL database and from a key-value store, side by side (stage 2)."""

from __future__ import annotations

import json

import aiohttp

from core.engine.lab import Lab
from core.engine.spec import parse_topology


def both_stores():
    return parse_topology(
        {
            "nodes": [
                {"id": "web", "kind": "web", "host": 80, "params": {"workers": 8, "service_ms": 1}},
                {"id": "db", "kind": "sqldb", "host": 90, "params": {"users": 300, "posts": 3000}},
                {"id": "kv", "kind": "kvdb", "host": 91, "params": {"users": 300, "posts": 3000}},
            ],
            "edges": [["web", "db"], ["web", "kv"]],
        }
    )


async def fetch(session, url, **kw):
    method = "POST" if "json" in kw else "GET"
    async with session.request(method, url, **kw) as r:
        hops = json.loads(r.headers.get("X-Hops", "[]"))
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, [(h[1], h[2], h[3]) for h in hops], r.headers.get("X-Data-Lsn")


async def test_a_page_comes_from_whichever_store_the_request_asks_for_with_the_same_data(network):
    async with Lab(both_stores(), network=network) as lab, aiohttp.ClientSession() as s:
        base = f"http://{lab.address('web')}:8080"
        status, sql_page, sql_hops, _ = await fetch(s, f"{base}/api/feed?user=42")
        assert status == 200 and [h[0] for h in sql_hops] == ["db", "db"]  # profile, then the join
        assert "JOIN" in sql_hops[1][2]
        status, kv_page, kv_hops, _ = await fetch(s, f"{base}/api/feed?user=42&store=kv")
        assert status == 200 and [h[:2] for h in kv_hops] == [("kv", "kv")]  # one round trip, no join
        assert kv_page["user"]["name"] == sql_page["user"]["name"] == "user42"
        assert [i["id"] for i in kv_page["items"]] == [i["id"] for i in sql_page["items"]]
        # A write through the key-value store shows on the writer's profile there, with its position.
        status, body, hops, lsn = await fetch(s, f"{base}/api/posts?store=kv", json={"user": 42, "caption": "kv!"})
        assert status == 201 and hops[0][0] == "kv" and body["lsn"] == int(lsn) == 1
        status, profile, _, _ = await fetch(s, f"{base}/api/users/42?store=kv")
        assert profile["items"][0]["caption"] == "kv!"
        frame = lab.frame()
        assert frame["nodes"]["kv"]["up"] and frame["nodes"]["db"]["up"]


async def test_killing_the_key_value_store_fails_only_its_requests(network):
    async with Lab(both_stores(), network=network) as lab, aiohttp.ClientSession() as s:
        base = f"http://{lab.address('web')}:8080"
        await lab.command({"action": "kill", "node": "kv"})
        async with s.get(f"{base}/api/feed?user=1&store=kv") as r:
            assert r.status == 503
        async with s.get(f"{base}/api/feed?user=1") as r:
            assert r.status == 200


async def test_a_partition_between_the_web_server_and_the_key_value_store_times_its_requests_out(network):
    from core.engine import dal

    async with Lab(both_stores(), network=network) as lab, aiohttp.ClientSession() as s:
        base = f"http://{lab.address('web')}:8080"
        old, dal.KV_TIMEOUT_S = dal.KV_TIMEOUT_S, 0.5
        try:
            await lab.command({"action": "partition", "node": "web", "peer": "kv"})
            status, _, hops, _ = await fetch(s, f"{base}/api/feed?user=1&store=kv")
            assert status == 503 and hops == [("kv", "kv", "home")]
            async with s.get(f"{base}/api/feed?user=1") as r:  # SQL is not cut off
                assert r.status == 200
            await lab.command({"action": "heal", "node": "web", "peer": "kv"})
            status, _, _, _ = await fetch(s, f"{base}/api/feed?user=1&store=kv")
            assert status == 200
        finally:
            dal.KV_TIMEOUT_S = old
