"""A real key-value database: a redis-server process of the node's own (``KvStore``, its client,
is in ``core.engine.nodes.clients``).

The process (its binary, address, scratch dir, bounded stop and kill, reaping, dying with the
worker) is ``core.engine.nodes.redisproc``'s, shared with the cache. The node seeds it on the
first start with the same photo-sharing data as the SQL node, laid out the NoSQL way
(``core.engine.kvwire``).

Durability (the ``appendonly`` param): with ``everysec`` Redis appends every write to its AOF file
and fsyncs once a second, so a ``kill`` (SIGKILL: the page cache survives) loses at most the
last moment's writes (while an fsync is still running Redis may acknowledge a write before it
writes it out, for up to 2 s) and a restart replays the file: the data comes back, nothing is
re-seeded. With ``no`` the data lives in memory only: a restart starts empty and the node seeds
it again.

Capacity is not modelled: Redis is real and fast. redis-server itself cannot be slowed down, so the
"slow" fault lives in the client: ``KvStore`` awaits the node's ``slowdown()`` before each round
trip, and the time it adds shows in the round trip's ``ms``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from core.engine import kvwire
from core.engine.lifecycle import Alive
from core.engine.nodes.redisnode import RedisServerNode
from core.engine.nodes.redisproc import READY_TIMEOUT_S, RedisProcess

REFRESH_S = 1.0  # snapshot() is read 4x a second; DBSIZE and memory are refreshed at most this often
SEED_TIMEOUT_S = 30.0  # a seeding round trip (a pipeline of SEED_BATCH commands) must answer within this


class KvDbNode(RedisServerNode):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis = RedisProcess(
            self.address, self.port or kvwire.PORT, who=self.who, password=self.ctx.server_password(self.id)
        )
        self.ops = 0  # commands served, counted by KvStore
        self.keys = 0
        self.used_memory_mb = 0.0
        self.seed_ms = 0.0
        self.start_ms = 0.0

    @property
    def proc(self) -> asyncio.subprocess.Process | None:
        return self.redis.proc

    @property
    def dir(self) -> str | None:
        """The data dir, from the first start to discard()."""
        return self.redis.dir

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn redis-server on the node's address, wait for PING, seed it if it starts empty."""
        began = time.monotonic()
        first = await self.redis.make_dir(self.id)
        try:
            await self.redis.start(
                *("--save", ""),  # no RDB snapshots: durability is the AOF's job (or nobody's)
                *("--appendonly", "no" if self.params["appendonly"] == "no" else "yes"),
                *("--appendfsync", "everysec"),
            )
            if first or self.params["appendonly"] == "no":
                await self._seed()
        except BaseException:
            await self.redis.kill()
            if first:
                await self.discard()
            raise
        self.background.start(self._refresh, "refresh")
        self.up = True
        self.start_ms = (time.monotonic() - began) * 1000

    def snapshot(self) -> dict[str, Any]:
        return {"up": self.up, "keys": self.keys, "ops": self.ops, "used_memory_mb": self.used_memory_mb}

    # Seeding and gauges ----------------------------------------------------------------------
    async def _seed(self) -> None:
        began = time.monotonic()
        # Building the plan is ~0.2 s of CPU: off the event loop, as the SQL node seeds in a thread.
        plan = await asyncio.to_thread(list, kvwire.seed_plan(self.params["users"], self.params["posts"]))
        client = aioredis.Redis(
            host=self.address, port=self.port, password=self.redis.password, single_connection_client=True,
            socket_timeout=SEED_TIMEOUT_S, socket_connect_timeout=READY_TIMEOUT_S,
        )
        try:
            for i in range(0, len(plan), kvwire.SEED_BATCH):
                pipe = client.pipeline(transaction=False)
                for cmd in plan[i : i + kvwire.SEED_BATCH]:
                    pipe.execute_command(*cmd)
                await pipe.execute()
        finally:
            await client.aclose()
        self.seed_ms = (time.monotonic() - began) * 1000

    async def _refresh(self, alive: Alive) -> None:
        await self.redis.poll(alive, self._sample, REFRESH_S)

    async def _sample(self, client: aioredis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.dbsize()
        pipe.info("memory")
        keys, memory = await pipe.execute()
        self.keys = int(keys)
        self.used_memory_mb = round(int(memory["used_memory"]) / 2**20, 2)
