"""A cache: a redis-server of the node's own that keeps nothing on disk (``CacheClient``, the web
tier's client, is in ``core.engine.nodes.clients``; what cache-aside sends, in ``core.engine.cacheaside``).

The process is ``core.engine.nodes.redisproc``'s, as for the key-value database, but run as a cache:
``--maxmemory`` with a ``--maxmemory-policy``, no RDB, no AOF. So a restarted cache starts empty,
and its counters (hits, misses, evictions: Redis's own, from ``INFO stats``) start from zero with it.

Settings: ``memory`` and ``policy`` are the server's (``CONFIG SET``, live, no restart); ``ttl``,
``writes`` and ``coalesce`` are how the web tier uses the cache, so they are attributes here that
it reads (``ttl_s``, ``write_policy``, ``coalesce``). All of them outlive a restart: the node
starts its server with the current ones.

redis-server cannot be slowed down, so the "slow" fault lives in the client, as for the key-value
database: ``CacheClient`` awaits the node's ``slowdown()`` before each round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

from core.engine.commands import CommandError
from core.engine.kvwire import PORT
from core.engine.lifecycle import Alive
from core.engine.nodes.redisnode import RedisServerNode
from core.engine.nodes.redisproc import RedisProcess

REFRESH_S = 1.0  # the counters are sampled once a second
WINDOW_S = 10.0  # hit_ratio covers about this much of the recent past
CONFIG_TIMEOUT_S = 1.0  # a CONFIG SET on our own loopback server answers in well under a millisecond


class HitWindow:
    """The hit ratio over the last ``window_s`` from cumulative hit and miss counters (sans-I/O)."""

    def __init__(self, now: float, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int, int]] = deque([(now, 0, 0)])  # counters start at 0

    def add(self, now: float, hits: int, misses: int) -> float | None:
        """The ratio since the newest sample at least ``window_s`` old; None without lookups."""
        self._samples.append((now, hits, misses))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        _, hits0, misses0 = self._samples[0]
        lookups = (hits - hits0) + (misses - misses0)
        return round((hits - hits0) / lookups, 4) if lookups > 0 else None


def _bytes(mb: float) -> int:
    return int(mb * 2**20)


class CacheNode(RedisServerNode):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis = RedisProcess(
            self.address, self.port or PORT, who=self.who, password=self.ctx.server_password(self.id)
        )
        # The settings, from the params until a command changes them; a restart keeps them.
        self.maxmemory_mb = float(self.params["maxmemory_mb"])
        self.policy = str(self.params["policy"])
        self.ttl_s = float(self.params["ttl_s"])  # the web tier's: 0 = do not cache
        self.write_policy = str(self.params["write_policy"])  # cacheaside.WRITE_POLICIES
        self.coalesce = self.params["coalesce"] == "on"  # the web tier's single flight
        self._zero()

    def _zero(self) -> None:
        """The gauges of a fresh redis-server: it starts empty and counts from 0."""
        self.hits = self.misses = self.evictions = self.keys = 0
        self.used_memory_mb = 0.0
        self.hit_ratio: float | None = None
        self._window = HitWindow(time.monotonic())

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn redis-server as a cache with the current settings; it answers PING when this returns."""
        first = await self.redis.make_dir(self.id)
        try:
            await self.redis.start(
                *("--maxmemory", str(_bytes(self.maxmemory_mb)), "--maxmemory-policy", self.policy),
                *("--save", "", "--appendonly", "no"),  # a cache keeps nothing on disk
            )
        except BaseException:
            if first:
                await self.redis.discard()
            raise
        self._zero()
        self.background.start(self._refresh, "refresh")
        self.up = True

    def snapshot(self) -> dict[str, Any]:
        return {
            "up": self.up, "hit_ratio": self.hit_ratio, "hits": self.hits, "misses": self.misses,
            "evictions": self.evictions, "keys": self.keys, "used_memory_mb": self.used_memory_mb,
            "maxmemory_mb": self.maxmemory_mb, "ttl_s": self.ttl_s,
            "policy": self.policy, "write_policy": self.write_policy, "coalesce": "on" if self.coalesce else "off",
        }

    # Commands --------------------------------------------------------------------------------
    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        if action == "memory":
            await self._config_set("maxmemory", str(_bytes(cmd["mb"])))
            self.maxmemory_mb = cmd["mb"]
            self.ctx.event("cache_memory_set", node=self.id, mb=self.maxmemory_mb, policy=self.policy)
        elif action == "policy":
            await self._config_set("maxmemory-policy", cmd["value"])
            self.policy = cmd["value"]
            self.ctx.event("cache_policy_set", node=self.id, value=self.policy)
        elif action == "ttl":
            self.ttl_s = cmd["s"]
            self.ctx.event("cache_ttl_set", node=self.id, s=self.ttl_s)
        elif action == "writes":
            self.write_policy = cmd["value"]
            self.ctx.event("cache_writes_set", node=self.id, value=self.write_policy)
        else:  # coalesce
            self.coalesce = cmd["value"] == "on"
            self.ctx.event("cache_coalesce_set", node=self.id, value=cmd["value"], on=self.coalesce)

    async def _config_set(self, name: str, value: str) -> None:
        """Change the running server's setting (a server that is down gets it when it starts)."""
        if not self.up:
            return
        client = self.redis.client(CONFIG_TIMEOUT_S)
        try:
            async with asyncio.timeout(CONFIG_TIMEOUT_S):
                await client.config_set(name, value)
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            raise CommandError(f"{self.id} did not take {name} {value}: {exc or 'timeout'}") from None
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CONFIG_TIMEOUT_S):
                    await client.aclose()

    # Gauges ----------------------------------------------------------------------------------
    async def _refresh(self, alive: Alive) -> None:
        await self.redis.poll(alive, self._sample, REFRESH_S)

    async def _sample(self, client: aioredis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.info("stats")
        pipe.info("memory")
        pipe.dbsize()
        stats, memory, keys = await pipe.execute()
        self.hits, self.misses = int(stats["keyspace_hits"]), int(stats["keyspace_misses"])
        self.evictions = int(stats["evicted_keys"])
        self.keys = int(keys)
        self.used_memory_mb = round(int(memory["used_memory"]) / 2**20, 2)
        self.hit_ratio = self._window.add(time.monotonic(), self.hits, self.misses)
