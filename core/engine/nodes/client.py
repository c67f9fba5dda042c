"""A client: resolves the site's name with real UDP DNS, caches the answer for its TTL, and sends
real HTTP requests from its own source address at a Poisson rate (open loop, so an overloaded
server sees its queue grow, as with real users). What each request is (feed, profile, login, post;
which user) comes from ``core.engine.workload``; replies' ``X-Data-Lsn`` reveal stale reads."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from core.engine.kinds import KINDS
from core.engine.lifecycle import Alive, wait_ended
from core.engine.nodes.assetfetch import AssetFetcher, page_refs
from core.engine.nodes.base import Node
from core.engine.nodes.http import close_session, close_session_now
from core.engine.sessions import STATE_HEADER, UserSessions, cookie_header, parse_set_cookie
from core.engine.telemetry import HOPS_HEADER, Hop, Trace, hops_from_header
from core.engine.workload import DEFAULT_USERS, LastWrites, Request, Workload, is_stale_read

MAX_IN_FLIGHT = 1000  # per client; arrivals beyond this are dropped and counted
SITE_PORT = KINDS["web"].port  # the port in the site's URL, http://<domain>:8080/
# The change-log position of the data a reply came from (a read) or of the write it made.
LSN_HEADER = "X-Data-Lsn"
_ids = itertools.count(1)


class ResolveError(Exception):
    pass


class ClientNode(AssetFetcher, Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rate = float(self.params["rate"])
        self.workload = Workload(
            users=self.params["users"] or self._database_users(),
            flavor=self.params["flavor"],
            write_ratio=self.params["write_ratio"],
            zipf_s=self.params["zipf_s"],
            store=self.params["store"],
        )
        self.last_writes = LastWrites()
        self.user_sessions = UserSessions()  # each user's cookies, as their browser keeps them
        self.timeout = aiohttp.ClientTimeout(total=self.params["timeout_s"])
        resolvers = self.ctx.peers(self.id, "dns")
        self.resolver = resolvers[0] if resolvers else None
        # Per name (the site's, and the static assets' when pages reference them): (address,
        # expires at, monotonic), and the query under way that concurrent callers share.
        self._cache: dict[str, tuple[str, float]] = {}
        self._resolving: dict[str, asyncio.Future[tuple[str, Hop | None]]] = {}
        self._assets = self.fetches_assets  # whether page replies are looked into for assets
        self._session: aiohttp.ClientSession | None = None
        self._requests: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.sent = 0
        self.stale = 0

    def _database_users(self) -> int:
        """Spread requests over the users the data tier has: the first SQL database's ``users``."""
        for node in self.ctx.topology.nodes:
            if node.kind == "sqldb":
                return int(node.params["users"])
        return DEFAULT_USERS

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(local_addr=(self.address, 0), limit=MAX_IN_FLIGHT, use_dns_cache=False)
        # No shared cookie jar: every simulated user carries their own cookies (self.user_sessions).
        self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                              cookie_jar=aiohttp.DummyCookieJar())
        self.background.start(self._arrivals, "arrivals")
        self.up = True

    async def stop(self) -> None:
        self.up = False
        await self.background.stop()
        # Requests in flight: each ends by its own timeout at the latest; wait a little for them.
        await wait_ended(list(self._requests), who=self.who, what="its requests in flight")
        self._requests.clear()
        session, self._session = self._session, None
        await close_session(session)
        self._cache.clear()

    def force(self) -> None:
        super().force()
        for task in self._requests:
            task.cancel()
        self._requests.clear()
        session, self._session = self._session, None
        close_session_now(session)

    def set_rate(self, rate: float) -> None:
        self.rate = max(0.0, float(rate))

    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        # mix: this client's workload (the lab sets every client's when no node is named)
        self.set_mix(**{k: cmd[k] for k in ("write_ratio", "zipf_s") if k in cmd})
        w = self.workload
        self.ctx.event("mix_set", node=self.id, write_ratio=w.write_ratio, zipf_s=w.zipf_s)

    def set_mix(self, write_ratio: float | None = None, zipf_s: float | None = None) -> None:
        """Change the fraction of writes and/or the popularity skew; the next request uses them."""
        self.workload.set_mix(write_ratio=write_ratio, zipf_s=zipf_s)

    def snapshot(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "rate": self.rate,
            "in_flight": len(self._requests),
            "dropped": self.dropped,
            "write_ratio": self.workload.write_ratio,
            "zipf_s": self.workload.zipf_s,
        }

    async def _arrivals(self, alive: Alive) -> None:
        rng = self.ctx.rng
        next_at = time.monotonic()
        while alive():
            if self.rate <= 0:
                await asyncio.sleep(0.1)
                next_at = time.monotonic()
                continue
            next_at += rng.expovariate(self.rate)
            delay = next_at - time.monotonic()
            if delay > 0.25:
                # Re-read the rate at least 4 times a second, so a change takes effect at once.
                await asyncio.sleep(0.25)
                next_at = time.monotonic()
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            if len(self._requests) >= MAX_IN_FLIGHT:
                self.dropped += 1
                continue
            task = asyncio.create_task(self.request())
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def resolve(self, name: str | None = None) -> tuple[str, Hop | None]:
        """A name's address (the site's by default), from the cache while its TTL lasts, else by a
        real DNS query.

        Concurrent callers share one query per name. Returns the hop when a query was made.
        """
        name = name or self.ctx.domain
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and cached[1] > now:
            return cached[0], None
        pending = self._resolving.get(name)
        if pending is None:
            fut = self._resolving[name] = asyncio.get_running_loop().create_future()
            try:
                fut.set_result(await self._query(name))
            except Exception as exc:  # handed to every waiter
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: waiters may be gone
            finally:
                self._resolving.pop(name, None)
            return fut.result()
        try:
            address, _ = await asyncio.shield(pending)
        except ResolveError as exc:
            raise ResolveError(exc.args[0], None) from None  # the query's hop is the first caller's
        return address, None

    async def _query(self, domain: str) -> tuple[str, Hop]:
        op = f"A {domain}"
        if self.resolver is None:
            raise ResolveError("no DNS server to ask", None)
        dns_node = self.ctx.peer(self.resolver)
        start = time.monotonic()

        def hop(ok: bool, status: str) -> Hop:
            return Hop(self.id, self.resolver, "dns", op, ok, status, (time.monotonic() - start) * 1000, 0.0)

        query = dns.message.make_query(domain, dns.rdatatype.A)
        try:
            reply = await dns.asyncquery.udp(
                query, dns_node.address, port=dns_node.port, timeout=1.0, source=self.address
            )
        except dns.exception.Timeout:
            raise ResolveError("DNS timeout", hop(False, "timeout")) from None
        except OSError as exc:
            raise ResolveError("DNS unreachable", hop(False, _os_error(exc))) from None
        # A CNAME (the static name handed to a CDN) comes first: say it in the hop.
        alias = next((str(r.target).rstrip(".") for rrset in reply.answer for r in rrset
                      if r.rdtype == dns.rdatatype.CNAME), None)
        via = f" CNAME {alias}" if alias else ""
        for rrset in reply.answer:
            for rdata in rrset:
                if rdata.rdtype == dns.rdatatype.A:  # the first record: round robin rotates the order
                    self._cache[domain] = (rdata.address, time.monotonic() + rrset.ttl)
                    more = f" (1 of {len(rrset)})" if len(rrset) > 1 else ""
                    status = f"{dns.rcode.to_text(reply.rcode())}{via} {rdata.address}{more} ttl={rrset.ttl}"
                    why = _why(reply)  # GeoDNS says how it chose
                    if why:
                        status += f" ({why})"
                    return rdata.address, hop(True, status)
        raise ResolveError("no answer", hop(False, dns.rcode.to_text(reply.rcode())))

    async def request(self, req: Request | None = None) -> None:
        """One user request (``req``, else the workload's next): resolve, then HTTP; recorded as one
        Trace."""
        self.sent += 1
        if req is None:
            req = self.workload.next_request(self.ctx.rng)
        trace = Trace(id=f"r-{next(_ids):x}", client=self.id, t=time.time(), op=req.op, write=req.is_write)
        start = time.monotonic()
        try:
            address, dns_hop = await self.resolve()
            if dns_hop is not None:
                trace.hops.append(dns_hop)
        except ResolveError as exc:
            if exc.args[1] is not None:
                trace.hops.append(exc.args[1])
            trace.ok = False
            trace.error = f"could not resolve {self.ctx.domain}: {exc.args[0]}"
            trace.ms = (time.monotonic() - start) * 1000
            self.ctx.record(trace)
            return
        target = self.ctx.node_at(address) or address
        # Read-your-writes is judged against the writes acknowledged before this read was sent: a
        # write that completes while the read is in flight may rightly be missing from it.
        floor = None if req.is_write else self.last_writes.get(req.user)
        http_start = time.monotonic()
        refs: list[Any] | None = [] if self._assets and not req.is_write else None
        reply: dict[str, Any] = {"cookies": self.user_sessions.cookies(req.user)}
        status, ok, downstream, lsn = await self._http(address, trace.id, req, refs, reply)
        # A user who sent their session and is answered as anonymous has been logged out.
        trace.logout = self.user_sessions.answered(req.user, reply["cookies"], reply.get("state"), reply.get("set", {}))
        at_ms = (http_start - start) * 1000
        trace.hops.append(
            Hop(self.id, target, "http", req.label, ok, status, (time.monotonic() - http_start) * 1000, at_ms)
        )
        if ok and lsn is not None:
            if req.is_write:
                self.last_writes.record(req.user, lsn)
            elif floor is not None and is_stale_read(lsn, floor):
                trace.stale = True
                self.stale += 1
                self.ctx.stale_read(
                    node=self.id, user=req.user, read_lsn=lsn, write_lsn=floor
                )
        # The calls the server made on our behalf (a balancer's hop to a backend, ...), in order.
        trace.hops.extend(hops_from_header(downstream, at_ms))
        trace.ok = ok
        trace.ms = (time.monotonic() - start) * 1000
        self.ctx.record(trace)
        if refs:  # the page's images, CSS and JS, each a static request of its own (nodes/assetfetch.py)
            await self.fetch_assets(refs, trace.id)

    async def _http(
        self, address: str, request_id: str, req: Request, refs: list[Any] | None = None,
        reply: dict[str, Any] | None = None,
    ) -> tuple[str, bool, str | None, int | None]:
        """(status, ok, the server's HOPS_HEADER if it sent one, its LSN_HEADER if an integer); the
        assets a page reply references go into ``refs`` when given. ``reply``: the user's
        ``cookies`` to send; the answer's session ``state`` and ``set`` cookies go in."""
        if self._session is None:  # the client stopped while this request waited for DNS
            return "client stopped", False, None, None
        url = f"http://{address}:{SITE_PORT}{req.target}"
        headers = {"Host": f"{self.ctx.domain}:{SITE_PORT}", "X-Request-Id": request_id}
        cookie = cookie_header(reply["cookies"]) if reply else None
        if cookie:
            headers["Cookie"] = cookie
        try:
            async with self._session.request(req.method, url, json=req.body, headers=headers) as resp:
                body = await resp.read()
                if refs is not None and resp.status == 200:
                    refs.extend(page_refs(resp.headers.get("Content-Type", ""), body))
                if reply is not None:
                    reply["state"] = resp.headers.get(STATE_HEADER)
                    reply["set"] = parse_set_cookie(resp.headers.getall("Set-Cookie", []))
                # Only a 2xx reply's LSN means data were read or a write was acknowledged.
                lsn = _lsn(resp.headers.get(LSN_HEADER)) if 200 <= resp.status < 300 else None
                return str(resp.status), resp.status < 400, resp.headers.get(HOPS_HEADER), lsn
        except TimeoutError:
            return "timeout", False, None, None
        except aiohttp.ClientConnectorError as exc:
            return _os_error(exc.os_error), False, None, None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            return "connection reset", False, None, None
        except aiohttp.ClientError as exc:
            return type(exc).__name__, False, None, None


def _why(reply: dns.message.Message) -> str:
    """The TXT record a GeoDNS server adds to its answer saying how it chose ("" if none)."""
    for rrset in reply.additional:
        if rrset.rdtype == dns.rdatatype.TXT:
            for rdata in rrset:
                return b"".join(rdata.strings).decode("utf-8", "replace")
    return ""


def _lsn(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # a malformed header says nothing about freshness


def _os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return exc.strerror or type(exc).__name__
