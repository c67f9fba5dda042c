"""An HTTP listener that can crash: what web servers and load balancers share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class HttpListener:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._server: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None

    async def start(self, address: str, port: int) -> None:
        """Listen on address:port (aiohttp's low-level server); raises OSError if it cannot bind."""
        server = web.Server(self.handler, access_log=None)
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(server, address, port, reuse_address=True)
        self._server = server

    def crash(self) -> None:
        """Stop listening and reset every open connection at once, as a crashed server would."""
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
