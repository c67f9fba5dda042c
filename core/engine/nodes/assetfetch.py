"""A client's asset fetches: after a page that references static assets (``core.engine.assets``),
fetch each one as a browser does, by its URL's own name.

A mixin of ``ClientNode`` (``nodes/client.py``). Each asset is a Trace of its own with op
``static`` (``telemetry.STATIC_OP``), counted apart from the pages: the client's ``rate`` stays its
page views a second and ``totals.rps`` and ``p95_ms`` keep their meaning. The name is resolved by
real DNS (``resolve(name)``, cached per name for its TTL): the static name answers the origin, or
a CNAME to the CDN whose edges answer. At most ``PARALLEL`` fetches of a page run at once (as a
browser limits its connections to a host). A fetch that fails at an edge (refused: a killed edge;
reset; a timeout after half the client's ``timeout_s``; a 5xx) falls back to the page's fallback
URL, the same path on the site's own host (the origin), recorded as a second hop: slower, working.

Every page view is a new visitor with an empty browser cache: the client stands for many users.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp

from core.engine import assets
from core.engine.telemetry import HOPS_HEADER, STATIC_OP, Hop, Trace, hops_from_header

PARALLEL = 4  # a page's asset fetches under way at once
_ids = itertools.count(1)


def page_refs(content_type: str, body: bytes) -> list[assets.AssetRef]:
    """The assets a page reply references: an HTML page's tags, or a JSON reply's ``assets``."""
    if b"/static/" not in body:
        return []
    if content_type.startswith("text/html"):
        return assets.references(body.decode("utf-8", "replace"))
    if content_type.startswith("application/json"):
        try:
            data = json.loads(body)
        except ValueError:
            return []
        return assets.refs_from_json(data.get("assets")) if isinstance(data, dict) else []
    return []


class AssetFetcher:
    """What a ClientNode adds; ``self`` is the ClientNode (id, ctx, params, _session, resolve)."""

    id: str
    ctx: Any
    params: dict[str, Any]
    _session: aiohttp.ClientSession | None

    @property
    def fetches_assets(self) -> bool:
        """Whether this lab's pages can reference assets at all (else no reply is looked into)."""
        return bool(assets.origins(self.ctx.topology))

    async def fetch_assets(self, refs: list[assets.AssetRef], page_id: str) -> None:
        """Fetch a page's assets, at most PARALLEL at once; each recorded as a ``static`` Trace."""
        gate = asyncio.Semaphore(PARALLEL)

        async def one(i: int, ref: assets.AssetRef) -> None:
            async with gate:
                await self.fetch_asset(ref, f"{page_id}.s{i}")

        await asyncio.gather(*(one(i, r) for i, r in enumerate(refs)))

    async def fetch_asset(self, ref: assets.AssetRef, trace_id: str | None = None) -> Trace:
        """One asset by its URL (resolve its name, GET it), falling back to the site's own host
        when that fails; recorded and returned."""
        trace = Trace(id=trace_id or f"s-{next(_ids):x}", client=self.id, t=time.time(), op=STATIC_OP)
        start = time.monotonic()
        timeout = float(self.params["timeout_s"])
        ok = False
        try:
            address, dns_hop = await self.resolve(ref.name)  # type: ignore[attr-defined]
            if dns_hop is not None:
                trace.hops.append(dns_hop)
        except Exception as exc:  # ResolveError: (why, hop)
            hop = exc.args[1] if len(exc.args) > 1 else None
            if isinstance(hop, Hop):
                trace.hops.append(hop)
            trace.error = f"could not resolve {ref.name}: {exc.args[0] if exc.args else exc}"
            address = None
        if address is not None:
            ok = await self._get_asset(trace, start, address, ref.host, ref.path, timeout / 2)
        if not ok:  # the page's fallback URL: the same object from the site itself
            try:
                site, dns_hop = await self.resolve(self.ctx.domain)  # type: ignore[attr-defined]
                if dns_hop is not None:
                    trace.hops.append(dns_hop)
            except Exception as exc:
                trace.error = f"could not resolve {self.ctx.domain}: {exc.args[0] if exc.args else exc}"
            else:
                if site != address:  # falling back to the very server that failed helps nobody
                    port = ref.host.rpartition(":")[2] or "8080"
                    ok = await self._get_asset(trace, start, site, f"{self.ctx.domain}:{port}", ref.fallback,
                                               max(0.1, timeout - (time.monotonic() - start)), fallback=True)
        trace.ok = ok
        trace.ms = (time.monotonic() - start) * 1000
        self.ctx.record(trace)
        return trace

    async def _get_asset(self, trace: Trace, start: float, address: str, host: str, path: str, timeout: float,
                         *, fallback: bool = False) -> bool:
        """GET one asset from ``address``; appends the hop (and the server's own hops); whether it came."""
        target = self.ctx.node_at(address) or address
        port = host.rpartition(":")[2] or "8080"
        op = f"GET {path}" + (" (fallback)" if fallback else "")
        began = time.monotonic()
        at_ms = (began - start) * 1000
        downstream: str | None = None
        if self._session is None:
            status, ok = "client stopped", False
        else:
            try:
                async with self._session.get(f"http://{address}:{port}{path}", headers={"Host": host},
                                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    await resp.read()
                    ok = resp.status == 200
                    cache = resp.headers.get("X-Cache")
                    status = f"{resp.status} {cache}" if cache else str(resp.status)
                    downstream = resp.headers.get(HOPS_HEADER)
            except TimeoutError:
                status, ok = "timeout", False
            except aiohttp.ClientConnectorError as exc:
                refused = isinstance(exc.os_error, ConnectionRefusedError)
                status, ok = ("connection refused" if refused else "unreachable"), False
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                status, ok = "connection reset", False
            except aiohttp.ClientError as exc:
                status, ok = type(exc).__name__, False
        trace.hops.append(Hop(self.id, target, "http", op, ok, status, (time.monotonic() - began) * 1000, at_ms))
        trace.hops.extend(hops_from_header(downstream, at_ms))
        return ok
