"""The cache node: a real redis-server run as a cache, and CacheClient, the web tier's client of it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from redis import exceptions as rexc

from core.engine.commands import CommandError
from core.engine.kvwire import PORT
from core.engine.lab import Lab
from core.engine.nodes.cache import CacheNode, HitWindow
from core.engine.nodes.clients import CacheClient, CacheError
from core.engine.spec import Topology, parse_topology
from tests.engine.test_kvdb import admin_of, raw, redis_children, refused, stranger, until


def cache_topology(**params: object) -> Topology:
    return parse_topology({"nodes": [{"id": "cache", "kind": "cache", "host": 71, "params": params}], "edges": []})


def client_of(lab: Lab, *, timeout_s: float = 1.0, node: CacheNode | None = None) -> CacheClient:
    return CacheClient(
        lab.address("cache"), PORT, source=f"{lab.network}.80", timeout_s=timeout_s, node=node,
        password=lab.server_password("cache"),
    )


async def config(lab: Lab, name: str) -> str:
    admin = admin_of(lab, "cache", decode_responses=True)
    try:
        return (await admin.config_get(name))[name]
    finally:
        await admin.aclose()


def gauges(lab: Lab) -> dict:
    return lab.frame()["nodes"]["cache"]


# The hit ratio window, without sockets -------------------------------------------------------------


def test_the_hit_ratio_is_over_the_recent_window_only():
    window = HitWindow(0.0, window_s=10)
    assert window.add(1.0, 0, 0) is None  # no lookups: no ratio, not 0
    assert window.add(2.0, 3, 1) == 0.75
    for t in range(3, 13):
        window.add(float(t), 3, 1)  # quiet for 10 s
    assert window.add(13.0, 3, 1) is None
    assert window.add(14.0, 3, 5) == 0.0  # only the misses since are left


# The server ------------------------------------------------------------------------------------------


async def test_it_runs_redis_as_a_cache_that_keeps_nothing_on_disk(network):
    async with Lab(cache_topology(), network=network) as lab:
        node = lab.nodes["cache"]
        assert isinstance(node, CacheNode) and node.redis.proc is not None
        assert await config(lab, "maxmemory") == str(16 * 2**20)
        assert await config(lab, "maxmemory-policy") == "allkeys-lru"
        assert await config(lab, "save") == "" and await config(lab, "appendonly") == "no"
        assert await config(lab, "bind") == lab.address("cache")
        assert await refused(f"{network}.200"), "something listens on another address"
        assert {k: gauges(lab)[k] for k in ("maxmemory_mb", "ttl_s", "policy", "write_policy", "coalesce")} == {
            "maxmemory_mb": 16, "ttl_s": 30, "policy": "allkeys-lru", "write_policy": "invalidate", "coalesce": "off"}


async def test_it_refuses_a_caller_without_the_labs_password(network):
    async with Lab(cache_topology(), network=network) as lab:
        for command in (b"CONFIG GET dir", b"CONFIG SET dir /tmp", b"GET page:1"):
            assert (await raw(lab.address("cache"), command)).startswith(b"-NOAUTH"), command
        client = stranger(lab, "cache")
        try:
            with pytest.raises(rexc.AuthenticationError):
                await client.config_set("maxmemory", "1")
        finally:
            await client.aclose()
        cache = client_of(lab)  # the web tier's client, with the lab's password
        try:
            await cache.set("page:1", "x", 30)
            assert await cache.get("page:1") == "x"
        finally:
            await cache.close()
        await lab.command({"action": "memory", "node": "cache", "mb": 8})  # the node's own CONFIG SET
        assert await config(lab, "maxmemory") == str(8 * 2**20)


async def test_it_counts_hits_and_misses_of_real_lookups(network):
    async with Lab(cache_topology(), network=network) as lab:
        cache = client_of(lab)
        try:
            assert await cache.get("page:1") is None
            await cache.set("page:1", "<html>1</html>", 30)
            for _ in range(3):
                assert await cache.get("page:1") == "<html>1</html>"
            assert await until(lambda: gauges(lab)["hits"] == 3, 3), gauges(lab)
            assert {k: gauges(lab)[k] for k in ("hits", "misses", "hit_ratio", "keys")} == {
                "hits": 3, "misses": 1, "hit_ratio": 0.75, "keys": 1}
        finally:
            await cache.close()


async def test_the_hit_ratio_is_null_before_any_lookup(network):
    async with Lab(cache_topology(), network=network) as lab:
        assert await until(lambda: gauges(lab)["used_memory_mb"] > 0, 3)
        assert gauges(lab)["hit_ratio"] is None and gauges(lab)["hits"] == 0


async def test_a_set_expires_after_its_ttl_and_a_ttl_of_zero_stores_nothing(network):
    async with Lab(cache_topology(), network=network) as lab:
        cache = client_of(lab)
        try:
            await cache.set("a", "1", 0)
            assert await cache.get("a") is None
            await cache.set("b", "2", 0.2)
            assert await cache.get("b") == "2"
            await asyncio.sleep(0.3)
            assert await cache.get("b") is None
            await cache.set("c", "3", 30)
            await cache.delete("c")
            assert await cache.get("c") is None
            await cache.send([("SET", "d", "4", "PX", 30000), ("DEL", "d")])
            assert await cache.get("d") is None
        finally:
            await cache.close()


async def test_a_full_cache_evicts_keys(network):
    # 2 MB, not 1: an empty redis-server uses about 0.9, and at 1 MB its own buffers (the gauges'
    # INFO replies) could push it over with no room for even the newest key, which a GET then evicts.
    async with Lab(cache_topology(maxmemory_mb=2), network=network) as lab:
        cache = client_of(lab)
        try:
            for i in range(400):  # 4 MB into 2
                await cache.set(f"page:{i}", "x" * 10_000, 30)
            assert await until(lambda: gauges(lab)["evictions"] > 0, 3), gauges(lab)
            assert gauges(lab)["keys"] < 200 and gauges(lab)["used_memory_mb"] <= 2.1
            # LRU keeps what was used last. Redis dates a key's last use to the second, so the 400
            # keys written within one second are all equally old and any of them may go, the last
            # one too (it did once, in a full run). One written a second later is newer than all.
            await asyncio.sleep(1.2)
            await cache.set("fresh", "y" * 10_000, 30)
            assert await cache.get("fresh") == "y" * 10_000
        finally:
            await cache.close()


async def test_noeviction_refuses_writes_once_full(network):
    async with Lab(cache_topology(maxmemory_mb=1, policy="noeviction"), network=network) as lab:
        cache = client_of(lab)
        try:
            with pytest.raises(CacheError) as err:
                for i in range(400):
                    await cache.set(f"page:{i}", "x" * 10_000, 30)
            assert err.value.status.startswith("error: OOM")
            assert await cache.get("page:0") == "x" * 10_000  # what it holds it keeps
        finally:
            await cache.close()


# Commands --------------------------------------------------------------------------------------------


async def test_memory_and_policy_change_the_live_server(network):
    async with Lab(cache_topology(), network=network) as lab:
        pid = lab.nodes["cache"].redis.proc.pid
        await lab.command({"action": "memory", "node": "cache", "mb": 4})
        await lab.command({"action": "policy", "node": "cache", "value": "allkeys-lfu"})
        assert await config(lab, "maxmemory") == str(4 * 2**20)
        assert await config(lab, "maxmemory-policy") == "allkeys-lfu"
        assert lab.nodes["cache"].redis.proc.pid == pid  # no restart
        frame = lab.frame()
        assert frame["nodes"]["cache"]["maxmemory_mb"] == 4 and frame["nodes"]["cache"]["policy"] == "allkeys-lfu"
        assert [(e["kind"], e.get("mb"), e.get("value")) for e in frame["events"][-2:]] == [
            ("cache_memory_set", 4, None), ("cache_policy_set", None, "allkeys-lfu")]


async def test_ttl_writes_and_coalesce_set_what_the_web_tier_reads(network):
    async with Lab(cache_topology(), network=network) as lab:
        node = lab.nodes["cache"]
        await lab.command({"action": "ttl", "node": "cache", "s": 5})
        await lab.command({"action": "writes", "node": "cache", "value": "update"})
        await lab.command({"action": "coalesce", "node": "cache", "value": "on"})
        assert (node.ttl_s, node.write_policy, node.coalesce) == (5, "update", True)
        frame = lab.frame()
        assert {k: frame["nodes"]["cache"][k] for k in ("ttl_s", "write_policy", "coalesce")} == {
            "ttl_s": 5, "write_policy": "update", "coalesce": "on"}
        assert [e["kind"] for e in frame["events"][-3:]] == ["cache_ttl_set", "cache_writes_set", "cache_coalesce_set"]


async def test_a_bad_command_is_refused_and_the_lab_goes_on(network):
    async with Lab(cache_topology(), network=network) as lab:
        for bad in ({"action": "policy", "node": "cache", "value": "lru"},
                    {"action": "memory", "node": "cache", "mb": 0},
                    {"action": "ttl", "node": "cache", "s": -1},
                    {"action": "writes", "node": "cache", "value": "write-through"}):
            with pytest.raises(CommandError):
                await lab.command(bad)
        assert lab.state == "running" and gauges(lab)["up"] is True
        assert await config(lab, "maxmemory-policy") == "allkeys-lru"  # nothing changed
        await lab.command({"action": "memory", "node": "cache", "mb": 2})  # it takes good ones still


# Faults and lifecycle --------------------------------------------------------------------------------


async def test_a_killed_cache_fails_fast_and_restarts_empty_with_its_settings(network):
    async with Lab(cache_topology(), network=network) as lab:
        node = lab.nodes["cache"]
        cache = client_of(lab)
        try:
            await cache.set("page:1", "cached", 30)
            assert await cache.get("page:1") == "cached"  # the pool holds a connection now
            for cmd in ({"action": "memory", "mb": 4}, {"action": "policy", "value": "volatile-ttl"},
                        {"action": "ttl", "s": 5}, {"action": "writes", "value": "none"},
                        {"action": "coalesce", "value": "on"}):
                await lab.command({**cmd, "node": "cache"})
            await lab.command({"action": "kill", "node": "cache"})
            began = time.monotonic()
            with pytest.raises(CacheError) as err:
                await cache.get("page:1")
            assert time.monotonic() - began < 0.5 and err.value.status in ("connection refused", "connection reset")
            await lab.command({"action": "restart", "node": "cache"})
            assert await cache.get("page:1") is None  # empty: nothing was kept
            assert await config(lab, "maxmemory") == str(4 * 2**20)
            assert await config(lab, "maxmemory-policy") == "volatile-ttl"
            assert (node.ttl_s, node.write_policy, node.coalesce) == (5, "none", True)
            assert await until(lambda: gauges(lab)["misses"] == 1, 3)
            assert gauges(lab)["hits"] == 0 and gauges(lab)["keys"] == 0  # counters start over with it
        finally:
            await cache.close()


async def test_a_cache_that_does_not_answer_costs_a_call_its_timeout(network):
    async with Lab(cache_topology(), network=network) as lab:
        pid = lab.nodes["cache"].redis.proc.pid
        cache = client_of(lab, timeout_s=0.3)
        try:
            await cache.get("page:1")
            os.kill(pid, signal.SIGSTOP)  # hung: connected, nothing comes back
            began = time.monotonic()
            with pytest.raises(CacheError) as err:
                await cache.get("page:1")
            assert err.value.status == "timeout" and 0.25 < time.monotonic() - began < 0.6
        finally:
            os.kill(pid, signal.SIGCONT)
            await cache.close()


async def test_the_slow_fault_delays_every_call(network):
    async with Lab(cache_topology(), network=network) as lab:
        cache = client_of(lab, node=lab.nodes["cache"])
        try:
            await lab.command({"action": "slow", "node": "cache", "ms": 150})
            began = time.monotonic()
            await cache.get("page:1")
            assert time.monotonic() - began >= 0.15 and gauges(lab)["slow_ms"] == 150
        finally:
            await cache.close()


async def test_the_cache_sees_the_calling_address(network):
    async with Lab(cache_topology(), network=network) as lab:
        cache = client_of(lab)
        admin = admin_of(lab, "cache", decode_responses=True)
        try:
            await cache.get("page:1")
            assert any(c["addr"].startswith(f"{network}.80:") for c in await admin.client_list())
        finally:
            await cache.close()
            await admin.aclose()


async def test_close_now_drops_every_connection_at_once(network):
    async with Lab(cache_topology(), network=network) as lab:
        cache = client_of(lab)
        admin = admin_of(lab, "cache", decode_responses=True)
        try:
            await asyncio.gather(*(cache.get(f"page:{i}") for i in range(3)))  # several pooled connections
            cache.close_now()  # synchronous: nothing to await
            deadline = time.monotonic() + 2
            while any(c["addr"].startswith(f"{network}.80:") for c in await admin.client_list()):
                assert time.monotonic() < deadline, "the cache still has the client's connections"
                await asyncio.sleep(0.02)
        finally:
            await admin.aclose()


async def test_stopping_the_lab_leaves_no_process_and_no_directory(network):
    lab = Lab(cache_topology(), network=network)
    async with lab:
        node = lab.nodes["cache"]
        pid, scratch = node.redis.proc.pid, Path(node.redis.dir)
        assert scratch.exists()
    assert not Path(f"/proc/{pid}").exists() and not scratch.exists()
    assert redis_children(network) == [] and node.redis.proc is None and node.redis.dir is None
    assert await refused(lab.address("cache"))


async def test_a_kill_leaves_no_process_and_the_stop_after_it_no_directory(network):
    lab = Lab(cache_topology(), network=network)
    async with lab:
        node = lab.nodes["cache"]
        pid, scratch = node.redis.proc.pid, Path(node.redis.dir)
        await lab.command({"action": "kill", "node": "cache"})
        assert not Path(f"/proc/{pid}").exists() and redis_children(network) == []
        assert await refused(lab.address("cache"))
    assert not scratch.exists()


async def test_a_forced_cache_leaves_no_process_and_no_directory(network):
    lab = Lab(cache_topology(), network=network)
    await lab.start()
    node = lab.nodes["cache"]
    pid, scratch = node.redis.proc.pid, Path(node.redis.dir)
    try:
        node.force()  # synchronous: whatever its tasks are doing
        assert not Path(f"/proc/{pid}").exists() and not scratch.exists() and redis_children(network) == []
    finally:
        await lab.stop()


async def test_a_cache_is_added_and_removed_live(network):
    async with Lab(cache_topology(), network=network) as lab:
        await lab.command({"action": "add", "like": "cache"})
        copy = lab.nodes["cache-2"]
        assert isinstance(copy, CacheNode) and copy.up and len(redis_children(network)) == 2
        scratch = Path(copy.redis.dir)
        await lab.command({"action": "remove", "node": "cache-2"})
        assert "cache-2" not in lab.nodes and len(redis_children(network)) == 1 and not scratch.exists()
