"""The web tier's side of the cache tier: cache-aside in front of the database, on real Redis servers.

A web server with edges to ``cache`` nodes keeps a page's data there. Which cache holds a key is
client-side consistent hashing (``core.engine.ring.HashRing`` over the caches it has an edge to), so
adding or losing a cache moves or loses only its share of the keys. Each cache node carries the
policy the web tier follows (its ``ttl_s``, ``write_policy`` and ``coalesce``: settings of the cache
tier, changed live from the cache's menu).

- Read: GET the key. A hit is the page. A miss loads from the database and SETs the result with the
  TTL (``cacheaside.store_command``; a TTL of 0 caches nothing). With ``coalesce`` on, concurrent
  misses of one key share one database load (``cacheaside.SingleFlight``).
- A cache that cannot be reached (killed, cut off) counts as a miss: the page is served from the
  database, slower, never failed because of the cache.
- Write: after the database write, the author's cached pages get the write policy
  (``cacheaside.after_write``): none (stale until the TTL), invalidate, or update.

Every Redis command is a hop web → cache (proto ``cache``, status hit, miss, stored, deleted or
the error), so a clicked request shows the hit or the miss and what was sent.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from core.engine import cacheaside, ring
from core.engine.nodes.clients import CacheClient, CacheError
from core.engine.telemetry import Hop

if TYPE_CHECKING:
    from core.engine.nodes.base import Node

Loaded = tuple[Any, int | None]  # (the page's data, the log position it reflects)
CACHED_ROUTES = ("home", "profile", "login")


def key_for(route: str, user: int) -> str:
    return f"page:{route}:{user}"


class CacheTier:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.ctx = node.ctx
        self._clients: dict[str, CacheClient] = {}
        self._ring: ring.HashRing | None = None
        self.flight = cacheaside.SingleFlight()
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def caches(self) -> list[str]:
        return self.ctx.peers(self.node.id, "cache")

    @property
    def available(self) -> bool:
        return bool(self.caches())

    def owner(self, key: str) -> str | None:
        ids = self.caches()
        if not ids:
            return None
        if self._ring is None or list(self._ring.nodes) != ids:  # caches come and go
            self._ring = ring.HashRing(ids)
        return self._ring.owner(key)

    def _client(self, cache_id: str) -> CacheClient | None:
        client = self._clients.get(cache_id)
        if client is None:
            node = self.ctx.peer(cache_id)
            if node is None:
                return None
            client = self._clients[cache_id] = CacheClient(
                node.address, node.port or 6379, source=self.node.address, node=node,  # its "slow" fault
                password=self.ctx.server_password(cache_id),
            )
        return client

    def _settings(self, cache_id: str) -> tuple[float, str, bool]:
        node = self.ctx.peer(cache_id)
        return (float(getattr(node, "ttl_s", 0.0)), str(getattr(node, "write_policy", "invalidate")),
                bool(getattr(node, "coalesce", False)))

    async def _send(
        self, cache_id: str, op: str, call: Callable[[CacheClient], Awaitable[Any]], hops: list[Hop], received: float,
        status: Callable[[Any], str],
    ) -> Any:
        """One Redis command as a hop; raises CacheError (a partition looks like a timeout)."""
        start = time.monotonic()
        at_ms = (start - received) * 1000
        client = self._client(cache_id)
        node = self.ctx.peer(cache_id)
        try:
            if client is None or node is None:
                raise CacheError("no such cache")
            if self.ctx.partitioned(self.node.id, cache_id):  # redis-server is not ours: cut at the caller
                raise CacheError("timeout")
            result = await call(client)
        except CacheError as exc:
            self.errors += 1
            hops.append(Hop(self.node.id, cache_id, "cache", op, False, exc.status,
                            (time.monotonic() - start) * 1000, at_ms))
            raise
        hops.append(Hop(self.node.id, cache_id, "cache", op, True, status(result), (time.monotonic() - start) * 1000,
                        at_ms))
        return result

    async def read(
        self, route: str, user: int, load: Callable[[], Awaitable[Loaded]], hops: list[Hop], received: float
    ) -> Loaded:
        """The page's data through the cache: a hit, or a load from the database (then stored)."""
        key = key_for(route, user)
        cache_id = self.owner(key)
        if cache_id is None:
            return await load()
        ttl_s, _, coalesce = self._settings(cache_id)
        try:
            raw = await self._send(cache_id, f"GET {key}", lambda c: c.get(key), hops, received,
                                   lambda v: "hit" if v is not None else "miss")
        except CacheError:
            raw = None
            reachable = False
        else:
            reachable = True
        if raw is not None:
            self.hits += 1
            value = json.loads(raw)
            return value["data"], value.get("lsn")
        self.misses += 1
        if coalesce:
            (data, lsn), joined = await self.flight.do(key, load)
            if joined:  # another request is loading it: this one waited and shares its answer
                return data, lsn
        else:
            data, lsn = await load()
        if reachable and ttl_s > 0:
            value = json.dumps({"data": data, "lsn": lsn}, separators=(",", ":"))
            with contextlib.suppress(CacheError):  # not stored: the next read misses again
                await self._send(cache_id, f"SET {key} PX {round(ttl_s * 1000)}", lambda c: c.set(key, value, ttl_s),
                                 hops, received, lambda _: "stored")
        return data, lsn

    async def wrote(
        self, user: int, fresh: Callable[[], Awaitable[Loaded]] | None, hops: list[Hop], received: float
    ) -> None:
        """After a write by ``user``: their cached pages get the cache's write policy. ``update`` writes
        the fresh profile (the page the post shows on) and drops the others, which it cannot rebuild
        without loading them too."""
        for route in CACHED_ROUTES:
            key = key_for(route, user)
            cache_id = self.owner(key)
            if cache_id is None:
                return
            ttl_s, policy, _ = self._settings(cache_id)
            value = None
            if policy == "update":
                if route == "profile" and fresh is not None and ttl_s > 0:
                    data, lsn = await fresh()
                    value = json.dumps({"data": data, "lsn": lsn}, separators=(",", ":"))
                else:
                    policy = "invalidate"
            try:
                for cmd in cacheaside.after_write(policy, key, value, ttl_s):
                    if cmd[0] == "DEL":
                        await self._send(cache_id, f"DEL {key}", lambda c, k=key: c.delete(k), hops, received,
                                         lambda _: "deleted")
                    else:
                        await self._send(cache_id, f"SET {key} PX {cmd[4]}",
                                         lambda c, k=key, v=str(cmd[2]), t=ttl_s: c.set(k, v, t), hops, received,
                                         lambda _: "updated")
            except CacheError:
                pass  # the copy stays until its TTL: the price of a cache unreachable at the write

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    def drop(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close_now()
