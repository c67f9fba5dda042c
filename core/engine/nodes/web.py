"""A real HTTP server: an HTML page for browsers, a JSON API for mobile apps, on a modelled CPU.

With an edge to a ``sqldb`` node it serves the photo-sharing application from that database: each
page or API call runs real SQL queries (``core.engine.sqlwire.PAGE_QUERIES``: the user's profile,
then their feed through a join) over the database's protocol, while holding its worker (a
thread-per-request application server waits for its database). Each query becomes a web → db hop
with its SQL in ``op``, reported to the caller in the ``X-Hops`` header. A database that cannot be
reached gives 503, a failed query 500. Without a database edge it answers as in stage 1.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
from typing import Any

from aiohttp import web

from core.engine import sqlwire
from core.engine.cachetier import CACHED_ROUTES, CacheTier
from core.engine.capacity import Capacity, Overloaded
from core.engine.commands import CommandError
from core.engine.dal import DataAccess
from core.engine.kinds import SIZES, size_of
from core.engine.nodes.base import Node
from core.engine.nodes.clients import DbError
from core.engine.nodes.http import HttpListener
from core.engine.nodes.origin import StaticOrigin
from core.engine.sessions import ANONYMOUS, KNOWN, SESSION_COOKIE, STATE_HEADER, cookie_value
from core.engine.sessiontier import SessionStoreError, SessionTier
from core.engine.telemetry import HOPS_HEADER, Hop, hops_to_header

log = logging.getLogger(__name__)
STOP_S = 1.0  # closing the connections to the data tier on stop
LSN_HEADER = "X-Data-Lsn"  # the change-log position the data in a response reflects
PAGE = """<!doctype html><html><head><title>Scale Lab site</title></head>
<body><h1>Hello from {node}</h1><p>Served by {address}:{port}</p></body></html>"""


class WebNode(StaticOrigin, Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The modelled CPU: the topology's, until a resize changes it. Like slow_ms it models the
        # machine, so it survives restarts.
        self.workers = int(self.params["workers"])
        self.service_ms = float(self.params["service_ms"])
        self.capacity = self._new_capacity()
        self._http = HttpListener(self.handle)
        self.served = 0
        self.rejected = 0
        self.dal = DataAccess(self)
        self.cache = CacheTier(self)
        self._init_static()  # static assets, when the topology turns them on (nodes/origin.py)
        self.sessions = SessionTier(self)  # log-ins: in this server's memory or the shared store

    @property
    def db_id(self) -> str | None:
        """The database writes go to (None without a data tier)."""
        return self.dal.primary() if self.dal.available else None

    def _new_capacity(self) -> Capacity:
        return Capacity(
            workers=self.workers,
            service_ms=self.service_ms,
            queue_limit=self.params["queue_limit"],
            rng=self.ctx.rng,
        )

    @property
    def size(self) -> str | None:
        """The current size's name (kinds.SIZES), or None for a custom modelled CPU."""
        return size_of(self.workers, self.service_ms)

    def resize(self, size: str) -> None:
        """Vertical scaling: the new modelled CPU applies at once; requests in flight carry on."""
        new = SIZES[size]
        self.workers, self.service_ms = new.workers, new.service_ms
        self.capacity.resize(workers=new.workers, service_ms=new.service_ms)

    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        if action == "version":  # a new logo: the versioned URL (nodes/origin.py)
            if not self.assets_on:
                raise CommandError(f"{self.id} serves no static assets (its assets parameter is off)")
            self.bump_version()
            return
        # resize, vertical scaling: the modelled CPU, live
        size = target_size(self.id, self.size, cmd["size"])
        self.resize(size)
        self.ctx.event("node_resized", node=self.id, size=size, workers=self.workers, service_ms=self.service_ms)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received = time.monotonic()
        headers = {"X-Served-By": self.id}
        request_id = request.headers.get("X-Request-Id")
        if request_id:
            headers["X-Request-Id"] = request_id
        if request.path == "/health":
            return web.Response(text="ok", headers=headers)
        if self.assets_on and request.path.startswith("/static/"):
            return await self.serve_static(request, headers)
        route = _route(request.method, request.path)
        if route is None:
            return web.Response(status=404, text="not found", headers=headers)
        capacity = self.capacity  # a restart swaps it; a request finishes on the one it began
        try:
            await capacity.acquire()
        except Overloaded:
            self.rejected += 1
            return web.Response(status=503, text="overloaded: queue full", headers=headers)
        hops: list[Hop] = []
        data: dict[str, Any] | None = None
        try:
            refused = await self._session(request, route, headers, hops, received)
            if refused is not None:
                return refused
            if self.dal.available:
                try:
                    data = await self._serve_data(request, route, request_id or "", received, hops)
                except DbError as exc:
                    headers[HOPS_HEADER] = hops_to_header(hops)
                    if exc.unavailable:
                        return web.Response(status=503, text=f"database unavailable: {exc.status}", headers=headers)
                    return web.Response(status=500, text=f"database error: {exc.status}", headers=headers)
                except _BadRequest as exc:
                    return web.Response(status=400, text=str(exc), headers=headers)
            cpu_ms = await capacity.work(extra_ms=self.slow_ms)
        finally:
            capacity.release()
        self.served += 1
        headers["X-Cpu-Ms"] = f"{cpu_ms:.1f}"
        if data is not None:
            headers[HOPS_HEADER] = hops_to_header(hops)
            lsn = data.get("lsn") if route == "post" else data.pop("lsn", None)
            if lsn is not None:
                headers[LSN_HEADER] = str(lsn)
            if route == "home" and request.path == "/":
                page = self.page_with_assets(_render_page(self, data))
                return web.Response(text=page, content_type="text/html", headers=headers)
            status = 201 if route == "post" else 200
            body = {"server": self.id, "path": request.path, **data}
            if route == "home":
                self.api_assets(body)
            return web.json_response(body, status=status, headers=headers)
        if hops:  # the session store's hops, without a data tier
            headers[HOPS_HEADER] = hops_to_header(hops)
        if request.path == "/":
            return web.Response(
                text=self.page_with_assets(PAGE.format(node=self.id, address=self.address, port=self.port)),
                content_type="text/html",
                headers=headers,
            )
        body = {
            "server": self.id,
            "path": request.path,
            "items": [{"id": i, "text": f"post {i}"} for i in range(3)],
        }
        if route == "home":
            self.api_assets(body)
        return web.Response(text=json.dumps(body), content_type="application/json", headers=headers)

    async def _session(
        self, request: web.BaseRequest, route: str, headers: dict[str, str], hops: list[Hop], received: float
    ) -> web.Response | None:
        """A login makes a session (``Set-Cookie``); a request with a session cookie learns whether
        this server knows it (``X-Session``: user or anonymous, core.engine.sessions). None, or the
        503 to answer when the shared session store cannot be reached."""
        token = cookie_value(request.headers.get("Cookie"), SESSION_COOKIE)
        if route != "login" and not token:
            return None
        try:
            if route == "login":
                user, _ = await self._user(request)
                headers["Set-Cookie"] = await self.sessions.login(user, hops, received)
                headers[STATE_HEADER] = KNOWN
            else:
                headers[STATE_HEADER] = KNOWN if await self.sessions.known(token, hops, received) else ANONYMOUS
        except SessionStoreError as exc:
            headers[HOPS_HEADER] = hops_to_header(hops)
            return web.Response(status=503, text=f"session store unavailable: {exc.status}", headers=headers)
        except _BadRequest as exc:
            return web.Response(status=400, text=str(exc), headers=headers)
        return None

    async def _user(self, request: web.BaseRequest) -> tuple[int, dict[str, Any]]:
        """The user a request is about (query, path or JSON body; else a random one) and its body."""
        body: dict[str, Any] = {}
        if request.method == "POST" and request.can_read_body:
            try:
                parsed = await request.json()
            except ValueError:
                raise _BadRequest("the body must be JSON") from None
            except ConnectionError:  # the caller gave up before sending its body: nobody to answer
                raise _BadRequest("the request body never arrived") from None
            body = parsed if isinstance(parsed, dict) else {}
        raw = request.query.get("user") or body.get("user") or request.path.rsplit("/", 1)[-1]
        try:
            user = int(raw)
        except (TypeError, ValueError):
            user = self.ctx.rng.randint(1, max(1, self.dal.users()))
        return user, body

    async def _serve_data(
        self, request: web.BaseRequest, route: str, request_id: str, received: float, hops: list[Hop]
    ) -> dict[str, Any]:
        """The route's queries through the data-access layer; the page's data and ``lsn``."""
        user_id, body = await self._user(request)
        kv_id = self.dal.kv_for(request.query.get("store"))
        if kv_id is not None:
            caption = str(body.get("caption") or "a new photo")[:200]
            result, lsn = await self.dal.kv(kv_id, route, user_id, caption, hops, received)
            if route == "post":
                return {"post": result, "lsn": lsn}
            if route == "login":
                return {"user": {"id": user_id}, "ok": bool(result), "lsn": lsn}
            return {"user": result.get("user") or {"id": user_id}, "items": result.get("items", []), "lsn": lsn}
        if route == "post":
            caption = str(body.get("caption") or "a new photo")[:200]
            params = [user_id, caption, f"/photos/u{user_id}-{request_id or 'x'}.jpg", int(time.time())]
            post_id, lsn = await self.dal.write(request_id, sqlwire.POST_SQL, params, hops, received)
            if self.cache.available:  # the author's cached profile: the cache tier's write policy

                async def fresh() -> tuple[Any, int | None]:
                    reads = [(q, [user_id]) for q in sqlwire.PROFILE_QUERIES]
                    return await self.dal.read(f"{request_id}.u", reads, hops, received)

                await self.cache.wrote(user_id, fresh, hops, received)
            return {"post": post_id, "lsn": lsn}
        queries = {"home": sqlwire.PAGE_QUERIES, "profile": sqlwire.PROFILE_QUERIES, "login": (sqlwire.LOGIN_SQL,)}

        async def load() -> tuple[Any, int | None]:
            return await self.dal.read(request_id, [(q, [user_id]) for q in queries[route]], hops, received)

        if self.cache.available and route in CACHED_ROUTES:  # cache-aside (core.engine.cachetier)
            results, lsn = await self.cache.read(route, user_id, load, hops, received)
        else:
            results, lsn = await load()
        if route == "login":
            return {"user": {"id": user_id}, "ok": bool(results[0]), "lsn": lsn}
        profile, rows = results
        user = {"id": user_id, "name": profile[0][1], "bio": profile[0][2]} if profile else {"id": user_id}
        if route == "home":
            items = [{"id": r[0], "by": r[1], "caption": r[2], "photo": r[3], "created_at": r[4]} for r in rows]
        else:
            by = user.get("name", "")
            items = [{"id": r[0], "by": by, "caption": r[1], "photo": r[2], "created_at": r[3]} for r in rows]
        return {"user": user, "items": items, "lsn": lsn}

    async def start(self) -> None:
        self.capacity = self._new_capacity()
        self.sessions.lost()  # a new process: the sessions the old one kept in memory are gone
        # The handler is looked up at start, so a test may wrap it before a restart.
        self._http = HttpListener(self.handle)
        await self._http.start(self.address, self.port)
        self.up = True

    async def stop(self) -> None:
        """Crash-like: stop listening and reset every open connection at once."""
        self.up = False
        self._http.crash()
        try:
            async with asyncio.timeout(STOP_S):
                await self.dal.close()
                await self.cache.close()
                await self.sessions.close()
        except TimeoutError:
            log.warning("%s: closing its database connections took over %.1f s; dropped them", self.who, STOP_S)
            self.dal.drop()
            self.cache.drop()
            self.sessions.drop()

    def force(self) -> None:
        super().force()
        self._http.crash()
        self.dal.drop()
        self.cache.drop()
        self.sessions.drop()

    def snapshot(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "in_flight": self.capacity.busy,
            "queued": self.capacity.queued,
            "util": round(self.capacity.utilisation(), 3),
            "size": self.size,
            "workers": self.workers,
            "service_ms": self.service_ms,
            "sessions": self.sessions.count,
            **({"coalesced": self.cache.flight.coalesced} if self.cache.available else {}),
            **self.static_snapshot(),
        }


def target_size(node_id: str, current: str | None, wanted: str) -> str:
    """The size a resize goes to (``up``/``down`` step from the current one); CommandError if none."""
    names = list(SIZES)
    if wanted in SIZES:
        if wanted == current:
            raise CommandError(f"{node_id} is already {wanted}")
        return wanted
    if current is None:
        raise CommandError(f"{node_id} has a custom size: resize it to one of {', '.join(names)} first")
    i = names.index(current) + (1 if wanted == "up" else -1)
    if i >= len(names):
        raise CommandError(f"{node_id} is already {current}, the largest size there is: the ceiling of scaling up")
    if i < 0:
        raise CommandError(f"{node_id} is already {current}, the smallest size")
    return names[i]


class _BadRequest(Exception):
    pass


def _route(method: str, path: str) -> str | None:
    """The application's routes: home (the HTML page or the mobile feed), profile, login, post."""
    if method == "POST":
        return {"/api/posts": "post", "/api/login": "login"}.get(path)
    if path in ("/", "/api/feed"):
        return "home"
    if path.startswith("/api/users/"):
        return "profile"
    if path.startswith("/api/"):
        return "home"  # any other API read: the feed, as in stage 1
    return None


def _render_page(node: WebNode, data: dict[str, Any]) -> str:
    user = data["user"]
    posts = "".join(
        f'<li><img src="{html.escape(p["photo"])}" alt=""> {html.escape(p["caption"])} '
        f"<small>by {html.escape(p['by'])}</small></li>"
        for p in data["items"]
    )
    return (
        "<!doctype html><html><head><title>Scale Lab photos</title></head><body>"
        f"<h1>{html.escape(str(user.get('name', user['id'])))}</h1><p>{html.escape(str(user.get('bio', '')))}</p>"
        f"<ul>{posts}</ul><p>Served by {node.id} at {node.address}:{node.port}</p></body></html>"
    )
