"""A real HTTP reverse proxy: one public address in front of backends on private addresses.

Backends are the nodes this node has edges to. The choice of backend and the health bookkeeping
are sans-I/O (``core.engine.balancing``); this module does the sockets: an aiohttp server on the
balancer's address, one ClientSession bound to the same address as its source (so backends see
the balancer calling, not the client), an active health-check loop (GET /health every
``health_interval_s``), passive detection (a refused or reset connection counts as a failure) and
retries of idempotent requests on another backend.

What it did for a request travels back to the client in the response's ``X-Hops`` header (see
``core.engine.telemetry.HOPS_HEADER``): one hop per attempt, balancer → backend, plus whatever
hops the backend itself reported. The client appends them to its trace, so the lb → web hops
show on the diagram and in the per-node and per-edge numbers with no second telemetry path.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from core.engine.balancing import Balancer
from core.engine.lifecycle import Alive
from core.engine.nodes.base import Node
from core.engine.nodes.http import HttpListener, close_session, close_session_now, health_check
from core.engine.sessions import AFFINITY_COOKIE, STATE_HEADER, cookie_value
from core.engine.telemetry import HOPS_HEADER, Hop, hops_from_header, hops_to_header

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
# End-to-end response headers the client needs from the backend (the data's log position, for
# read-your-writes; the echoed request id).
PASSED_BACK = ("X-Data-Lsn", "X-Request-Id", STATE_HEADER)
UPSTREAM_TIMEOUT_S = 10.0  # a backend slower than this answers 504
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
    }
)


class LbNode(Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        weights = self._weights()
        self.backend_ids = [b for b, _ in weights]
        self.balancer = Balancer(
            weights,
            algorithm=self.params["algorithm"],
            rise=self.params["rise"],
            fall=self.params["fall"],
            rng=self.ctx.rng,
        )
        self._http = HttpListener(self.handle)
        self._session: aiohttp.ClientSession | None = None
        self.forwarded = 0
        self.retried = 0
        self.unavailable = 0  # answered 503: no healthy backend
        # Requests forwarded and not yet answered, per backend. Kept apart from the Balancer's
        # count, which forgets a backend the moment it leaves: the lab drains a removed backend
        # on this one.
        self._pending: Counter[str] = Counter()

    def _weights(self) -> list[tuple[str, int]]:
        # Weighted round robin weighs a backend by its (modelled) worker count: a bigger server
        # gets a bigger share.
        topo = self.ctx.topology
        ids = [p for p in topo.peers(self.id) if topo.node(p).kind_info.proto == "tcp"]
        return [(b, int(topo.node(b).params.get("workers", 1))) for b in ids]

    def peers_changed(self) -> None:
        """New backends join the rotation at once; removed ones leave it (their requests in flight
        finish: see in_flight_to)."""
        weights = self._weights()
        wanted = dict(weights)
        for b in list(self.balancer.backends):
            if b not in wanted:
                self.balancer.remove(b)
        for b, weight in weights:
            self.balancer.add(b, weight)
        self.backend_ids = list(wanted)

    def in_flight_to(self, peer_id: str) -> int:
        """Requests forwarded to ``peer_id`` and not yet answered."""
        return self._pending[peer_id]

    # Control --------------------------------------------------------------------------------
    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        self.set_algorithm(cmd["value"])  # algorithm, the only command a balancer has
        self.ctx.event("algorithm_set", node=self.id, value=cmd["value"])

    def set_algorithm(self, algorithm: str) -> None:
        self.balancer.set_algorithm(algorithm)

    @property
    def algorithm(self) -> str:
        return self.balancer.algorithm

    def _transition(self, backend: str, state: str | None, why: str) -> None:
        if state is not None:
            kind = "backend_down" if state == "down" else "backend_up"
            self.ctx.event(kind, node=self.id, backend=backend, reason=why)

    # Proxying -------------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received = time.monotonic()
        await self.slowdown()
        if request.path == "/health":
            return web.Response(text="ok", headers={"X-Served-By": self.id})
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = request.headers.get("Host", self.ctx.domain)
        remote = request.remote or ""
        forwarded_for = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded_for}, {remote}" if forwarded_for else remote
        attempts = 1 + (self.params["retries"] if request.method in IDEMPOTENT else 0)
        tried: list[str] = []
        hops: list[Hop] = []
        op = f"{request.method} {request.path_qs}"
        sticky = self.balancer.algorithm == "sticky"
        affinity = cookie_value(request.headers.get("Cookie"), AFFINITY_COOKIE) if sticky else None
        while len(tried) < attempts:
            backend = self.balancer.pick(remote, exclude=tried, affinity=affinity)
            if backend is None:
                break
            if tried:
                self.retried += 1
            tried.append(backend)
            node = self.ctx.peer(backend)
            url = f"http://{node.address}:{node.port}{request.path_qs}"
            start = time.monotonic()
            at_ms = (start - received) * 1000

            def hop(ok: bool, status: str, backend: str = backend, start: float = start, at_ms: float = at_ms) -> Hop:
                return Hop(self.id, backend, "http", op, ok, status, (time.monotonic() - start) * 1000, at_ms)

            self.balancer.begin(backend)
            self._pending[backend] += 1
            try:
                if self._session is None:  # stopped while this request was under way
                    raise aiohttp.ClientConnectionError("the balancer stopped")
                async with self._session.request(request.method, url, headers=headers, data=body or None) as resp:
                    data = await resp.read()
                    downstream = hops_from_header(resp.headers.get(HOPS_HEADER), at_ms)
                    status, content_type = resp.status, resp.headers.get("Content-Type")
                    served_by = resp.headers.get("X-Served-By", backend)
                    resp_headers = {k: resp.headers[k] for k in PASSED_BACK if k in resp.headers}
                    cookies = resp.headers.getall("Set-Cookie", [])
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # Passive detection: the backend did not take or finish the request.
                reason = _connection_error(exc)
                hops.append(hop(False, reason))
                self._transition(backend, self.balancer.failed(backend), f"passive: {reason}")
                continue
            except TimeoutError:
                hops.append(hop(False, "timeout"))
                return self._answer(504, "gateway timeout: the backend did not answer", hops, received)
            except aiohttp.ClientError as exc:  # e.g. the balancer itself is stopping
                hops.append(hop(False, type(exc).__name__))
                return self._answer(502, f"bad gateway: {type(exc).__name__}", hops, received)
            finally:
                self.balancer.end(backend)
                self._pending[backend] -= 1
                if not self._pending[backend]:
                    del self._pending[backend]
            hops.append(hop(status < 400, str(status)))
            hops.extend(downstream)
            self.forwarded += 1
            out = {HOPS_HEADER: hops_to_header(hops), "X-Upstream": backend, "X-Served-By": served_by}
            for name in PASSED_BACK:
                if name in resp_headers:
                    out[name] = resp_headers[name]
            if content_type:
                out["Content-Type"] = content_type
            reply = web.Response(status=status, body=data, headers=out)
            for cookie in cookies:  # the backend's own (a session), then the balancer's affinity
                reply.headers.add("Set-Cookie", cookie)
            if sticky and affinity != backend:
                reply.headers.add("Set-Cookie", f"{AFFINITY_COOKIE}={backend}; Path=/")
            return reply
        if tried:  # every attempt failed to connect
            return self._answer(502, "bad gateway: no backend could be reached", hops, received)
        self.unavailable += 1
        return self._answer(503, "service unavailable: no healthy backend", hops, received)

    def _answer(self, status: int, text: str, hops: list[Hop], received: float) -> web.Response:
        headers = {"X-Served-By": self.id}
        if hops:
            headers[HOPS_HEADER] = hops_to_header(hops)
        return web.Response(status=status, text=text, headers=headers)

    # Health checks --------------------------------------------------------------------------
    async def _health_loop(self, alive: Alive) -> None:
        interval = self.params["health_interval_s"]
        timeout = aiohttp.ClientTimeout(total=min(interval, 2.0))
        while alive():
            await asyncio.sleep(interval)
            # Backends may come and go, so read the list every round.
            ids = list(self.balancer.backends)
            results = await asyncio.gather(*(self._check(b, timeout) for b in ids), return_exceptions=True)
            for b, ok in zip(ids, results, strict=True):
                passed = ok is True
                why = "health check passed" if passed else "health check failed"
                self._transition(b, self.balancer.check(b, passed), why)

    async def _check(self, backend: str, timeout: aiohttp.ClientTimeout) -> bool:
        return await health_check(self._session, self.ctx.peer(backend), timeout)

    # Lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(local_addr=(self.address, 0), limit=0, use_dns_cache=False)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S), auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # users' cookies pass through; the balancer keeps none
        )
        try:
            await self._http.start(self.address, self.port)
        except OSError:
            await self._session.close()
            self._session = None
            raise
        self.background.start(self._health_loop, "health")
        self.up = True

    async def stop(self) -> None:
        """Crash-like, as for a web node: stop listening and reset every open connection."""
        self.up = False
        await self.background.stop()
        self._http.crash()
        session, self._session = self._session, None
        await close_session(session)

    def force(self) -> None:
        super().force()
        self._http.crash()
        session, self._session = self._session, None
        close_session_now(session)

    def snapshot(self) -> dict[str, Any]:
        backends = self.balancer.backends.values()
        return {
            "up": self.up,
            "algorithm": self.balancer.algorithm,
            "backends": {b.id: b.state for b in backends},
            "conns": {b.id: b.in_flight for b in backends},
            "in_flight": sum(b.in_flight for b in backends),
        }


def _connection_error(exc: Exception) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return exc.os_error.strerror or type(exc.os_error).__name__
    return "connection reset"
