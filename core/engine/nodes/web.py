"""A real HTTP server: an HTML page for browsers, a JSON API for mobile apps, on a modelled CPU.

With an edge to a ``sqldb`` node it serves the photo-sharing application from that database: each
page or API call runs real SQL queries (``core.engine.sqlwire.PAGE_QUERIES``: the user's profile,
then their feed through a join) over the database's protocol, while holding its worker (a
thread-per-request application server waits for its database). Each query becomes a web → db hop
with its SQL in ``op``, reported to the caller in the ``X-Hops`` header. A database that cannot be
reached gives 503, a failed query 500. Without a database edge it answers as in stage 1.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from aiohttp import web

from core.engine import sqlwire
from core.engine.capacity import Capacity, Overloaded
from core.engine.kinds import SIZES, size_of
from core.engine.nodes.base import Node
from core.engine.nodes.http import HttpListener
from core.engine.nodes.sqldb import DbError, DbPool
from core.engine.telemetry import HOPS_HEADER, Hop, hops_to_header

PAGE = """<!doctype html><html><head><title>Scale Lab site</title></head>
<body><h1>Hello from {node}</h1><p>Served by {address}:{port}</p></body></html>"""


class WebNode(Node):
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
        topo = self.lab.topology
        dbs = [p for p in topo.peers(self.id) if topo.node(p).kind == "sqldb"]
        self.db_id: str | None = dbs[0] if dbs else None
        self._db: DbPool | None = None

    def _new_capacity(self) -> Capacity:
        return Capacity(
            workers=self.workers,
            service_ms=self.service_ms,
            queue_limit=self.params["queue_limit"],
            rng=self.lab.rng,
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

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received = time.monotonic()
        headers = {"X-Served-By": self.id}
        request_id = request.headers.get("X-Request-Id")
        if request_id:
            headers["X-Request-Id"] = request_id
        if request.path == "/health":
            return web.Response(text="ok", headers=headers)
        if request.path != "/" and not request.path.startswith("/api/"):
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
            if self._db is not None:
                try:
                    data = await self._query_page(request, request_id or "", received, hops)
                except DbError as exc:
                    headers[HOPS_HEADER] = hops_to_header(hops)
                    if exc.unavailable:
                        return web.Response(status=503, text=f"database unavailable: {exc.status}", headers=headers)
                    return web.Response(status=500, text=f"database error: {exc.status}", headers=headers)
            cpu_ms = await capacity.work(extra_ms=self.slow_ms)
        finally:
            capacity.release()
        self.served += 1
        headers["X-Cpu-Ms"] = f"{cpu_ms:.1f}"
        if data is not None:
            headers[HOPS_HEADER] = hops_to_header(hops)
            if request.path == "/":
                return web.Response(text=_render_page(self, data), content_type="text/html", headers=headers)
            body = {"server": self.id, "path": request.path, **data}
            return web.Response(text=json.dumps(body), content_type="application/json", headers=headers)
        if request.path == "/":
            return web.Response(
                text=PAGE.format(node=self.id, address=self.address, port=self.port),
                content_type="text/html",
                headers=headers,
            )
        body = {
            "server": self.id,
            "path": request.path,
            "items": [{"id": i, "text": f"post {i}"} for i in range(3)],
        }
        return web.Response(text=json.dumps(body), content_type="application/json", headers=headers)

    async def _query_page(
        self, request: web.BaseRequest, request_id: str, received: float, hops: list[Hop]
    ) -> dict[str, Any]:
        """Run the page's queries against the database, one hop each; raises DbError."""
        assert self._db is not None and self.db_id is not None
        users = int(self.lab.topology.node(self.db_id).params["users"])
        try:
            user_id = int(request.query.get("user", ""))
        except ValueError:
            user_id = self.lab.rng.randint(1, users)
        results = []
        for i, sql in enumerate(sqlwire.PAGE_QUERIES):
            start = time.monotonic()
            op = sqlwire.op_text(sql)
            try:
                rows, _ = await self._db.query(f"{request_id}.{i}", sql, [user_id])
            except DbError as exc:
                ms = (time.monotonic() - start) * 1000
                hops.append(Hop(self.id, self.db_id, "sql", op, False, exc.status, ms, (start - received) * 1000))
                raise
            ms = (time.monotonic() - start) * 1000
            status = f"{len(rows)} row" + ("" if len(rows) == 1 else "s")
            hops.append(Hop(self.id, self.db_id, "sql", op, True, status, ms, (start - received) * 1000))
            results.append(rows)
        profile, feed = results
        user = {"id": user_id, "name": profile[0][1], "bio": profile[0][2]} if profile else {"id": user_id}
        items = [{"id": r[0], "by": r[1], "caption": r[2], "photo": r[3], "created_at": r[4]} for r in feed]
        return {"user": user, "items": items}

    async def start(self) -> None:
        self.capacity = self._new_capacity()
        if self.db_id is not None:
            db = self.lab.nodes[self.db_id]
            self._db = DbPool(db.address, db.port or sqlwire.PORT, source=self.address)
        # The handler is looked up at start, so a test may wrap it before a restart.
        self._http = HttpListener(self.handle)
        await self._http.start(self.address, self.port)
        self.up = True

    async def stop(self) -> None:
        """Crash-like: stop listening and reset every open connection at once."""
        self.up = False
        self._http.crash()
        if self._db is not None:
            self._db.close()
            self._db = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "in_flight": self.capacity.busy,
            "queued": self.capacity.queued,
            "util": round(self.capacity.utilisation(), 3),
            "size": self.size,
            "workers": self.workers,
            "service_ms": self.service_ms,
        }


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
