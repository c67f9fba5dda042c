"""An HTTP listener that can crash and be partitioned: what web servers and load balancers share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from core.engine.lifecycle import detach

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
CutOff = Callable[[str], bool]
RECHECK_S = 0.5  # a held request looks again this often whether its caller has given up


class HttpListener:
    def __init__(self, handler: Handler, *, cut_off: CutOff | None = None) -> None:
        """``cut_off(peer_address)`` says whether a partition separates us from the caller; by
        default the handler's node's (``handler`` is a bound method of a Node), so every HTTP
        node enforces the "partition" fault here, the same way."""
        self.handler = handler
        owner = getattr(handler, "__self__", None)
        self.cut_off = cut_off or getattr(owner, "cut_off", None)
        # The modelled distance to a caller in another region (Node.travel), for every HTTP node.
        self.travel = getattr(owner, "travel", None)
        self._server: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None

    async def start(self, address: str, port: int) -> None:
        """Listen on address:port (aiohttp's low-level server); raises OSError if it cannot bind."""
        server = web.Server(self._handle, access_log=None)
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(server, address, port, reuse_address=True)
        self._server = server

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.cut_off is not None and request.remote and self.cut_off(request.remote):
            # A partition loses packets: never answer, so the caller times out. Once healed, the
            # request goes through, as TCP's retransmission would deliver it.
            while self.cut_off(request.remote):
                transport = request.transport
                if transport is None or transport.is_closing():  # the caller gave up, or we crashed
                    return web.Response(status=408)  # written nowhere: the connection is gone
                await asyncio.sleep(RECHECK_S)
        if self.travel is not None and request.remote and await self.travel(request.remote):
            transport = request.transport
            if transport is None or transport.is_closing():  # the caller gave up on the way
                return web.Response(status=408)  # written nowhere: the connection is gone
        try:
            return await self.handler(request)
        except ConnectionResetError:  # the caller hung up while its body was read: no one to answer
            return web.Response(status=408)

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


async def close_session(session: aiohttp.ClientSession | None, *, timeout: float = 1.0) -> None:
    """Close an aiohttp client session on stop: orderly within ``timeout``, else at once."""
    if session is None:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await session.close()
    close_session_now(session)  # a no-op once closed; closes what is left if the bound ran out


def close_session_now(session: aiohttp.ClientSession | None) -> None:
    """Close an aiohttp client session's connections at once (for ``Node.force``): the connector
    closes its transports synchronously; what is left to await runs as a task of its own."""
    if session is None or session.closed or session.connector is None:
        return
    detach(session.connector.close())


async def health_check(session: aiohttp.ClientSession | None, node: object | None,
                       timeout: aiohttp.ClientTimeout) -> bool:
    """One active health check, as a balancer or a DNS server makes it: GET /health on the node's
    own address and port, a fresh connection each time, passed only by a 200 within ``timeout``."""
    address, port = getattr(node, "address", None), getattr(node, "port", None)
    if session is None or address is None or port is None:
        return False
    try:
        async with session.get(f"http://{address}:{port}/health", timeout=timeout,
                               headers={"Connection": "close"}) as resp:
            await resp.read()
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
