"""A real HTTP server: an HTML page for browsers, a JSON API for mobile apps, on a modelled CPU."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from core.engine.capacity import Capacity, Overloaded
from core.engine.nodes.base import Node

PAGE = """<!doctype html><html><head><title>Scale Lab site</title></head>
<body><h1>Hello from {node}</h1><p>Served by {address}:{port}</p></body></html>"""


class WebNode(Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = self._new_capacity()
        self._server: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None
        self.served = 0
        self.rejected = 0

    def _new_capacity(self) -> Capacity:
        return Capacity(
            workers=self.params["workers"],
            service_ms=self.params["service_ms"],
            queue_limit=self.params["queue_limit"],
            rng=self.lab.rng,
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = {"X-Served-By": self.id}
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
        try:
            cpu_ms = await capacity.work(extra_ms=self.slow_ms)
        finally:
            capacity.release()
        self.served += 1
        headers["X-Cpu-Ms"] = f"{cpu_ms:.1f}"
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

    async def start(self) -> None:
        self.capacity = self._new_capacity()
        self._server = web.Server(self.handle, access_log=None)
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self._server, self.address, self.port, reuse_address=True)
        self.up = True

    async def stop(self) -> None:
        """Crash-like: stop listening and reset every open connection at once."""
        self.up = False
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._server is not None:
            for proto in list(self._server.connections):
                transport = proto.transport
                proto.force_close()
                if transport is not None:
                    transport.abort()
            self._server = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "in_flight": self.capacity.busy,
            "queued": self.capacity.queued,
            "util": round(self.capacity.utilisation(), 3),
        }
