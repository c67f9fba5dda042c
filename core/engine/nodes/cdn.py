"""A CDN edge: a real HTTP cache in front of an origin (``cdn`` kind).

An aiohttp listener (``nodes/http.py``, so kill, partitions and the modelled distance apply as to
every HTTP node) on the edge's address, port 8080. ``GET /static/<name>``: a fresh copy in the
edge's memory is a hit, answered at once (``X-Cache: HIT``, ``Age``); otherwise a miss fetches the
object from the ``origin`` node (one ClientSession bound to the edge's address, bounded by
``ORIGIN_TIMEOUT_S``), keeps it for the origin's ``Cache-Control: max-age`` (``default_ttl_s`` when
it says nothing) in an LRU bounded by ``max_mb`` (``core.engine.edgecache``), and answers
``X-Cache: MISS`` with the edge → origin hop in ``X-Hops``, so a clicked request reads client →
edge → origin. Concurrent misses of one object share one origin fetch (request collapsing, as
CDNs do). A crash empties the cache; the counters (and what the bytes cost) run for the lab's life.

``purge`` removes an object (every version of it) or everything from every edge, as a CDN's purge
API does; ``memory`` bounds the cache live. The modelled cost of the bytes sent (the edges' at the
CDN's price, the origin's static bytes at its egress price) is the ``cdn`` frame table, which the
first edge of the topology adds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import aiohttp
from aiohttp import web

from core.engine import assets
from core.engine.edgecache import EdgeCache, Entry, cost_usd, max_age
from core.engine.nodes.base import Node
from core.engine.nodes.cache import HitWindow
from core.engine.nodes.http import HttpListener, close_session, close_session_now
from core.engine.telemetry import HOPS_HEADER, Hop, hops_from_header, hops_to_header

ORIGIN_TIMEOUT_S = 5.0  # an origin silent for this long: the edge answers 504
COST_WINDOW_S = 10.0  # usd_per_hour: the spending rate over about this much of the recent past
MB = 2**20


class CdnNode(Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_mb = float(self.params["max_mb"])  # the memory command changes it; a restart keeps it
        self.store = EdgeCache(int(self.max_mb * MB))
        self._http = HttpListener(self.handle)
        self._session: aiohttp.ClientSession | None = None
        self._fetching: dict[str, asyncio.Future[tuple[Entry | None, int, list[Hop]]]] = {}
        self.bytes_out = 0  # bytes of objects sent to clients, since the lab started
        self.fetched_bytes = 0  # bytes fetched from the origin on misses
        self._window = HitWindow(time.monotonic())
        self._spend: deque[tuple[float, float]] = deque()  # (time, total cost): the table's rate

    # Serving ---------------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received = time.monotonic()
        await self.slowdown()
        headers = {"X-Served-By": self.id}
        if request.path == "/health":
            return web.Response(text="ok", headers=headers)
        if request.method not in ("GET", "HEAD") or assets.lookup(request.path) is None:
            return web.Response(status=404, text="not found", headers=headers)
        path = request.path
        entry = self.store.get(path, time.monotonic())
        hops: list[Hop] = []
        if entry is not None:
            headers.update({"X-Cache": "HIT", "Age": str(entry.age(time.monotonic()))})
        else:
            entry, status, hops = await self._fetch(path, received)
            headers["X-Cache"] = "MISS"
            if hops:
                headers[HOPS_HEADER] = hops_to_header(hops)
            if entry is None:
                text = "gateway timeout: the origin did not answer" if status == 504 else "bad gateway"
                return web.Response(status=status, text=text, headers=headers)
        headers["Content-Type"] = entry.content_type
        if request.method == "HEAD":
            return web.Response(headers=headers)
        self.bytes_out += entry.size
        return web.Response(body=entry.body, headers=headers)

    async def _fetch(self, path: str, received: float) -> tuple[Entry | None, int, list[Hop]]:
        """A miss: the origin's copy (shared by concurrent misses of ``path``), its HTTP status
        (200, or the one to answer with) and the hops it took, ``at_ms`` from ``received``."""
        pending = self._fetching.get(path)
        if pending is not None:  # collapsed into the fetch already under way: no hop of its own
            entry, status, _ = await asyncio.shield(pending)
            return entry, status, []
        future: asyncio.Future[tuple[Entry | None, int, list[Hop]]] = asyncio.get_running_loop().create_future()
        self._fetching[path] = future
        try:
            result = await self._from_origin(path, received)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters may be gone
            raise
        finally:
            self._fetching.pop(path, None)

    async def _from_origin(self, path: str, received: float) -> tuple[Entry | None, int, list[Hop]]:
        origin_id = self.params["origin"]
        origin = self.ctx.peer(origin_id)
        start = time.monotonic()
        at_ms = (start - received) * 1000
        op = f"GET {path}"

        def hop(ok: bool, status: str) -> Hop:
            return Hop(self.id, origin_id, "http", op, ok, status, (time.monotonic() - start) * 1000, at_ms)

        if origin is None or self._session is None:
            return None, 502, [hop(False, "no origin")]
        url = f"http://{origin.address}:{origin.port}{path}"
        headers = {"Host": f"{assets.static_name(self.ctx.domain)}:{self.port}", "Via": f"1.1 {self.id}"}
        try:
            async with asyncio.timeout(ORIGIN_TIMEOUT_S):
                async with self._session.get(url, headers=headers) as resp:
                    body = await resp.read()
                    downstream = hops_from_header(resp.headers.get(HOPS_HEADER), at_ms)
                    status, cache_control = resp.status, resp.headers.get("Cache-Control")
                    content_type = resp.headers.get("Content-Type", "application/octet-stream")
        except TimeoutError:
            return None, 504, [hop(False, "timeout")]
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            return None, 502, [hop(False, "connection refused" if refused else "unreachable")]
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            return None, 502, [hop(False, "connection reset")]
        except aiohttp.ClientError as exc:
            return None, 502, [hop(False, type(exc).__name__)]
        hops = [hop(status == 200, str(status)), *downstream]
        if status != 200:
            return None, (404 if status == 404 else 502), hops
        self.fetched_bytes += len(body)
        now = time.monotonic()
        ttl = max_age(cache_control, float(self.params["default_ttl_s"]))
        self.store.put(path, body, content_type, ttl, now)  # too big, or max-age 0: served, not kept
        return Entry(body, content_type, now, now + ttl), 200, hops

    # Commands ----------------------------------------------------------------------------------
    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        if action == "memory":
            self.max_mb = float(cmd["mb"])
            self.store.resize(int(self.max_mb * MB))
            self.ctx.event("edge_memory_set", node=self.id, mb=self.max_mb)
            return
        # purge: every edge of the CDN, as a CDN's purge API does; a down edge holds nothing anyway
        what = cmd["what"]
        match = None if what == "all" else (lambda path: assets.key_of(path) == what)
        removed = 0
        for node_id in self.edge_ids():
            edge = self.ctx.peer(node_id)
            if isinstance(edge, CdnNode):
                removed += edge.store.purge(match)
        self.ctx.event("purged", node=self.id, what=what, objects=removed)

    def edge_ids(self) -> list[str]:
        return assets.edges(self.ctx.topology)

    # Lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(local_addr=(self.address, 0), limit=0, use_dns_cache=False)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=ORIGIN_TIMEOUT_S), auto_decompress=False
        )
        self._http = HttpListener(self.handle)
        try:
            await self._http.start(self.address, self.port or 8080)
        except OSError:
            await self._session.close()
            self._session = None
            raise
        self.up = True

    async def stop(self) -> None:
        """Crash-like: stop listening, reset every connection, and lose what the memory held."""
        self.up = False
        self._http.crash()
        self.store.clear()
        session, self._session = self._session, None
        await close_session(session)

    def force(self) -> None:
        super().force()
        self._http.crash()
        self.store.clear()
        session, self._session = self._session, None
        close_session_now(session)

    # Telemetry -----------------------------------------------------------------------------------
    def cost(self) -> float:
        return cost_usd(self.bytes_out, float(self.params["price_per_gb"]))

    def snapshot(self) -> dict[str, Any]:
        store = self.store
        return {
            "up": self.up,
            "hit_ratio": self._window.add(time.monotonic(), store.hits, store.misses),
            "hits": store.hits,
            "misses": store.misses,
            "evictions": store.evictions,
            "bytes_out": self.bytes_out,
            "objects": len(store),
            "used_mb": round(store.used_bytes / MB, 3),
            "max_mb": self.max_mb,
            "out_mb": round(self.bytes_out / MB, 1),
            "fetched_mb": round(self.fetched_bytes / MB, 1),
            "cost_usd": round(self.cost(), 6),
        }

    def tables(self) -> dict[str, dict[str, Any]]:
        """The ``cdn`` table, from the topology's first edge only: every edge's bytes and hits, the
        origin's static bytes, and their modelled cost (``cost_usd`` since the lab started,
        ``usd_per_hour`` at the rate of the last ~10 s)."""
        ids = self.edge_ids()
        if not ids or ids[0] != self.id:
            return {}
        edges = [e for e in (self.ctx.peer(i) for i in ids) if isinstance(e, CdnNode)]
        edge_bytes = sum(e.bytes_out for e in edges)
        edge_cost = sum(e.cost() for e in edges)
        origin = self.ctx.peer(self.params["origin"])
        origin_bytes = int(getattr(origin, "static_bytes", 0))
        origin_cost = cost_usd(origin_bytes, float(self.params["origin_price_per_gb"]))
        hits, lookups = sum(e.store.hits for e in edges), sum(e.store.hits + e.store.misses for e in edges)
        total = edge_cost + origin_cost
        now = time.monotonic()
        self._spend.append((now, total))
        while len(self._spend) > 2 and self._spend[1][0] <= now - COST_WINDOW_S:
            self._spend.popleft()
        t0, cost0 = self._spend[0]
        per_hour = (total - cost0) / (now - t0) * 3600 if now - t0 >= 1.0 else None
        return {"cdn": {
            "hit_ratio": round(hits / lookups, 4) if lookups else None,
            "edge_bytes": edge_bytes,
            "origin_bytes": origin_bytes,
            "edge_cost_usd": round(edge_cost, 6),
            "origin_cost_usd": round(origin_cost, 6),
            "cost_usd": round(total, 6),
            "usd_per_hour": round(per_hour, 4) if per_hour is not None else None,
        }}

