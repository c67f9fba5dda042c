"""A real shard router: the web tier's SQL goes to it, and it sends each query to the user's shard.

It speaks the SQL node's protocol (``core.engine.sqlwire``) on its own address, as MongoDB's
``mongos`` or Vitess's ``vtgate`` stand in front of their shards, so the web tier talks to it as to
one database. The sharding key is the user id (every statement of the application has it as its
first parameter); ``core.engine.ring`` says which shard owns a user, by ``modulo`` or
``consistent`` hashing (``vnodes`` points a shard), switchable live.

- A user's page, profile or log-in goes to the user's shard only.
- A new post goes to its author's shard, with an id the router gives it (time-ordered and unique
  across shards, so a post keeps its id when its rows move).
- The feed gathers the newest posts of everyone the user follows, and they live on every shard:
  it asks the user's shard whom they follow, then every shard at once (scatter-gather), so it is as
  slow as the slowest shard and fails when any is down. With ``feed: precomputed`` it reads the
  reader's denormalised feed instead (the ``feeds`` table, on the reader's own shard: one hop).
- Every post is fanned out to its author's followers' feeds, whatever the feed setting, so both
  ways read the same posts: the followers are found on every shard (``follows`` is kept by the
  follower), then each shard that has some gets the post's copies. Writes pay for cheap reads.

Each call to a shard is a hop router -> shard in the reply (``hops``), so a clicked request shows it.

What it accepts is narrower than a SQL node: only the application's own statements, by their exact
text (anything else: ``the router routes only the application's own statements``), and it sends
its shards only SQL of its own with the caller's values as bound parameters, so no caller's text
reaches a shard. As a SQL node does, it closes a connection whose first line is not a JSON object.

Resharding: when the placement changes (a shard added or removed, the algorithm or vnodes set),
every user whose owner changes is moved online, a batch at a time: the batch's users are held (a
query for one of them waits, bounded), their rows copied to the new shard, deleted from the old,
and released to the new placement. A query never finds a user half moved, so the move fails no
request and loses no row. ``moved_rows`` and ``moved_fraction`` count the last resharding.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

from core.engine import ring, sharding, sqlwire
from core.engine.commands import CommandError
from core.engine.lifecycle import Alive, wait_ended
from core.engine.nodes.base import Node
from core.engine.nodes.clients import DbError, DbPool
from core.engine.telemetry import Hop, hops_to_header

log = logging.getLogger(__name__)
MOVE_BATCH = 100  # users moved in one step of a resharding
HOLD_S = 5.0  # the longest a query waits for its user's move
STOP_S = 2.0
FOLLOWEES_SQL = "SELECT followee_id FROM follows WHERE follower_id = ?"
FEED_PART_SQL = (
    "SELECT p.id, u.name, p.caption, p.photo_url, p.created_at FROM posts p JOIN users u ON u.id = p.user_id "
    "WHERE p.user_id IN ({marks}) ORDER BY p.created_at DESC LIMIT 10"
)
POST_WITH_ID_SQL = "INSERT INTO posts (id, user_id, caption, photo_url, created_at) VALUES (?, ?, ?, ?, ?)"
SINGLE_SHARD = frozenset({sqlwire.PROFILE_SQL, sqlwire.OWN_POSTS_SQL, sqlwire.LOGIN_SQL})
COLUMNS = {"users": "id, name, bio, joined_at", "posts": "id, user_id, caption, photo_url, created_at",
           "follows": "follower_id, followee_id", "feeds": "reader_id, post_id, author, caption, photo_url, created_at"}
FEED_READ_SQL = (
    "SELECT post_id, author, caption, photo_url, created_at FROM feeds WHERE reader_id = ? "
    "ORDER BY created_at DESC LIMIT 10"
)
FOLLOWERS_SQL = "SELECT follower_id FROM follows WHERE followee_id = ?"
AUTHOR_SQL = "SELECT name FROM users WHERE id = ?"


class RouterNode(Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.placement: ring.Router = sharding.initial_router(self.ctx.topology, self.id)
        self._pools: dict[str, DbPool] = {}
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._held: dict[int, asyncio.Event] = {}  # users being moved right now
        self._wanted: tuple[str, tuple[str, ...], int] | None = None  # a placement to move to
        self._wake = asyncio.Event()
        self._ids = itertools.count()
        self.queries = 0
        self.scattered = 0
        self.precomputed = 0  # feeds read from the reader's own shard
        self.fanned_out = 0  # feed rows written by posts
        self.feed = str(self.params["feed"])
        self.moving = 0  # users still to move in the running resharding
        self.moved_rows = 0
        self.moved_fraction = 0.0
        self.reshardings = 0

    # Placement -------------------------------------------------------------------------------
    @property
    def shards(self) -> list[str]:
        return list(self.placement.nodes)

    def _users(self) -> int:
        specs = [self.ctx.spec(s) for s in sharding.shards_of(self.ctx.topology, self.id)]
        return max((int(s.params["users"]) for s in specs), default=0)

    def _target(self, algorithm: str | None = None, vnodes: int | None = None) -> tuple[str, tuple[str, ...], int]:
        current = self._wanted or (self.placement.algorithm, tuple(self.placement.nodes), self._vnodes)
        shards = tuple(sharding.shards_of(self.ctx.topology, self.id))
        return (algorithm or current[0], shards, vnodes or current[2])

    @property
    def _vnodes(self) -> int:
        return getattr(self.placement, "vnodes", int(self.params["vnodes"]))

    def peers_changed(self) -> None:
        """A shard was added or removed: move the rows whose owner changes."""
        self._want(self._target())

    def _want(self, target: tuple[str, tuple[str, ...], int]) -> None:
        if not target[1]:
            raise CommandError(f"{self.id} would have no shard left")
        self._wanted = target
        self._wake.set()

    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        if action == "feed":
            self.feed = cmd["value"]
            self.ctx.event("feed_set", node=self.id, value=self.feed, precomputed=self.feed == "precomputed")
            return
        if action == "algorithm":
            target = self._target(algorithm=cmd["value"])
        else:  # vnodes
            if self.placement.algorithm != "consistent" and (self._wanted or ("",))[0] != "consistent":
                raise CommandError(f"vnodes: {self.id} uses modulo, which has no ring: switch to consistent first")
            target = self._target(vnodes=int(cmd["n"]))
        self._want(target)
        self.ctx.event("placement_set", node=self.id, algorithm=target[0], vnodes=target[2])

    def in_flight_to(self, peer_id: str) -> int:
        """A shard being removed holds users until the resharding has moved them all away."""
        still_placed = peer_id in self.placement.nodes
        return int(still_placed and peer_id not in sharding.shards_of(self.ctx.topology, self.id))

    async def _reshard(self, alive: Alive) -> None:
        """Moves the data to each wanted placement in turn (one resharding at a time)."""
        while alive():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # and look at alive() again
                    await self._wake.wait()
            if not self._wake.is_set():
                continue
            self._wake.clear()
            target, self._wanted = self._wanted, None
            if target is None:
                continue
            algorithm, shards, vnodes = target
            new = ring.make_router(algorithm, shards, vnodes)
            try:
                await self._move(self.placement, new)
            except Exception as exc:  # a shard down mid-move: say so, keep what moved, retry on the next change
                log.warning("%s: resharding stopped: %r", self.who, exc)
                self.ctx.event("resharding_failed", node=self.id, reason=str(exc))
                self._wanted = self._wanted or target
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _move(self, old: ring.Router, new: ring.Router) -> None:
        moves = ring.moved(range(1, self._users() + 1), old, new)
        total = sum(getattr(self.ctx.peer(s), "rows", 0) for s in old.nodes)
        self.moving, self.moved_rows, self.reshardings = len(moves), 0, self.reshardings + 1
        self.moved_fraction = 0.0
        self.ctx.event("resharding", node=self.id, users=len(moves), algorithm=new.algorithm,
                       shards=len(new.nodes))
        began = time.monotonic()
        placed: dict[int, str] = {}  # moved users: new owner, until the whole move is done
        self._placed = placed
        by_pair: dict[tuple[str, str], list[int]] = {}
        for user, a, b in moves:
            by_pair.setdefault((a, b), []).append(user)
        for (src, dst), users in by_pair.items():
            for i in range(0, len(users), MOVE_BATCH):
                batch = users[i:i + MOVE_BATCH]
                moved = await self._move_batch(src, dst, batch)
                for user in batch:
                    placed[user] = dst
                self.moved_rows += moved
                self.moving -= len(batch)
                self.moved_fraction = round(self.moved_rows / total, 4) if total else 0.0
        self.placement = new
        self._placed = {}
        self._pools_gone()
        self.ctx.event("resharded", node=self.id, rows=self.moved_rows, fraction=self.moved_fraction,
                       s=round(time.monotonic() - began, 2))

    async def _move_batch(self, src: str, dst: str, users: list[int]) -> int:
        """Copy the users' rows from ``src`` to ``dst``, then delete them from ``src``: the rows moved."""
        events = {u: asyncio.Event() for u in users}
        self._held.update(events)
        try:
            marks = ", ".join("?" * len(users))
            rows = 0
            for table, key in sharding.USER_TABLES:
                got = await self._query(src, f"SELECT {COLUMNS[table]} FROM {table} WHERE {key} IN ({marks})", users)
                found = got.get("rows", [])
                for j in range(0, len(found), 500):  # SQLite's limit on parameters a statement
                    part = found[j:j + 500]
                    values = ", ".join("(" + ", ".join("?" * len(r)) + ")" for r in part)
                    flat = [v for r in part for v in r]
                    await self._query(dst, f"INSERT OR IGNORE INTO {table} ({COLUMNS[table]}) VALUES {values}", flat)
                rows += len(found)
            for table, key in reversed(sharding.USER_TABLES):
                await self._query(src, f"DELETE FROM {table} WHERE {key} IN ({marks})", users)
            return rows
        finally:
            for u, event in events.items():
                self._held.pop(u, None)
                event.set()

    def owner(self, user: int) -> str:
        """Where a user's rows are now: a user already moved by a running resharding is at its new shard."""
        placed = getattr(self, "_placed", None)
        return placed.get(user) or self.placement.owner(user) if placed else self.placement.owner(user)

    # Talking to shards -----------------------------------------------------------------------
    def _pools_gone(self) -> None:
        """Close the connections to databases that are no longer a shard's primary."""
        live = {self.ctx.primary_for(s) or s for s in self.placement.nodes}
        for db_id in [d for d in self._pools if d not in live]:
            self._pools.pop(db_id).close()

    def _pool(self, shard: str) -> DbPool:
        db_id = self.ctx.primary_for(shard) or shard  # a shard's writes and reads go to its primary
        pool = self._pools.get(db_id)
        if pool is None:
            node = self.ctx.peer(db_id)
            if node is None:
                raise DbError("no such shard", unavailable=True)
            pool = self._pools[db_id] = DbPool(node.address, node.port or sqlwire.PORT, source=self.address)
        return pool

    async def _query(self, shard: str, sql: str, params: list[Any], req_id: str = "reshard") -> dict[str, Any]:
        return await self._pool(shard).query_reply(req_id, sql, params)

    async def _hop(
        self, shard: str, req_id: str, sql: str, params: list[Any], hops: list[Hop], received: float
    ) -> dict[str, Any]:
        """One query on a shard's primary, recorded as a hop; the reply, or DbError."""
        start = time.monotonic()
        db_id = self.ctx.primary_for(shard) or shard
        op = sqlwire.op_text(sql)
        try:
            reply = await self._query(shard, sql, params, req_id)
        except DbError as exc:
            hops.append(Hop(self.id, db_id, "sql", op, False, exc.status, (time.monotonic() - start) * 1000,
                            (start - received) * 1000))
            raise
        rows = reply.get("rows", [])
        status = f"written · {shard}" if "rowid" in reply else f"{len(rows)} row{'' if len(rows) == 1 else 's'}"
        hops.append(Hop(self.id, db_id, "sql", op, True, status, (time.monotonic() - start) * 1000,
                        (start - received) * 1000))
        return reply

    async def _wait_for(self, users: list[int]) -> None:
        for user in users:
            event = self._held.get(user)
            if event is not None:
                async with asyncio.timeout(HOLD_S):
                    await event.wait()

    # Serving ---------------------------------------------------------------------------------
    async def _route(self, req_id: str, sql: str, params: list[Any], hops: list[Hop], received: float) -> dict:
        if not params or isinstance(params[0], bool) or not isinstance(params[0], int):
            raise DbError("error: the router needs the user id as the first parameter", unavailable=False)
        user = params[0]
        await self._wait_for([user])
        if sql in SINGLE_SHARD:
            reply = await self._hop(self.owner(user), req_id, sql, params, hops, received)
            return {"rows": reply.get("rows", [])}
        if sql == sqlwire.POST_SQL:
            post_id = int(time.time() * 1000) * 1024 + next(self._ids) % 1024  # unique on every shard
            await self._hop(self.owner(user), req_id, POST_WITH_ID_SQL, [post_id, *params], hops, received)
            await self._fan_out(req_id, post_id, params, hops, received)
            return {"rows": [], "rowid": post_id}
        if sql == sqlwire.FEED_SQL and self.feed == "precomputed":
            reply = await self._hop(self.owner(user), f"{req_id}.f", FEED_READ_SQL, [user], hops, received)
            self.precomputed += 1
            return {"rows": reply.get("rows", [])}
        if sql == sqlwire.FEED_SQL:
            return {"rows": await self._feed(req_id, user, hops, received)}
        raise DbError("error: the router routes only the application's own statements", unavailable=False)

    async def _fan_out(self, req_id: str, post_id: int, params: list[Any], hops: list[Hop], received: float) -> None:
        """A new post's copies into its author's followers' feeds, on each follower's shard."""
        author, caption, photo, created_at = params[0], params[1], params[2], params[3]
        name_reply = await self._hop(self.owner(author), f"{req_id}.a", AUTHOR_SQL, [author], hops, received)
        name = (name_reply.get("rows") or [[f"user{author}"]])[0][0]
        shards = list(self.placement.nodes)
        found = await asyncio.gather(*(self._hop(s, f"{req_id}.r{i}", FOLLOWERS_SQL, [author], hops, received)
                                       for i, s in enumerate(shards)))
        by_shard: dict[str, list[int]] = {}
        for reply in found:
            for (follower,) in reply.get("rows", []):
                by_shard.setdefault(self.owner(int(follower)), []).append(int(follower))
        for i, (shard, readers) in enumerate(by_shard.items()):
            values = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in readers)
            flat = [v for r in readers for v in (r, post_id, name, caption, photo, created_at)]
            sql = f"INSERT OR IGNORE INTO feeds ({COLUMNS['feeds']}) VALUES {values}"
            await self._hop(shard, f"{req_id}.w{i}", sql, flat, hops, received)
            self.fanned_out += len(readers)

    async def _feed(self, req_id: str, user: int, hops: list[Hop], received: float) -> list[list[Any]]:
        """Scatter-gather: whom the user follows (their shard), then those users' posts on every shard."""
        got = await self._hop(self.owner(user), f"{req_id}.f", FOLLOWEES_SQL, [user], hops, received)
        followees = [int(r[0]) for r in got.get("rows", [])]
        if not followees:
            return []
        await self._wait_for(followees)
        self.scattered += 1
        sql = FEED_PART_SQL.format(marks=", ".join("?" * len(followees)))
        # Every shard: during a resharding also the new one, where moved users already are.
        shards = list(dict.fromkeys([*self.placement.nodes, *(self.owner(f) for f in followees)]))
        parts = await asyncio.gather(
            *(self._hop(s, f"{req_id}.{i}", sql, followees, hops, received) for i, s in enumerate(shards)),
            return_exceptions=True,
        )
        for part in parts:
            if isinstance(part, BaseException):
                raise part
        rows = [r for part in parts for r in part.get("rows", [])]  # type: ignore[union-attr]
        return sorted(rows, key=lambda r: r[4], reverse=True)[:10]

    async def _answer(self, line: bytes) -> bytes:
        received = time.monotonic()
        try:
            req_id, sql, params = sqlwire.decode_request(line)
        except sqlwire.ProtocolError as exc:
            return sqlwire.encode_reply("", error=f"bad request: {exc}", ms=0.0)
        hops: list[Hop] = []
        await self.slowdown()
        try:
            async with asyncio.timeout(HOLD_S * 2):
                reply = await self._route(req_id, sql, params, hops, received)
        except Exception as exc:  # a shard's error, a timeout, or a bug: the caller gets an answer
            if not isinstance(exc, (DbError, TimeoutError)):
                log.exception("%s: routing %r failed", self.who, sql[:80])
            status = exc.status if isinstance(exc, DbError) else "timeout" if isinstance(exc, TimeoutError) else "error"
            unavailable = not isinstance(exc, DbError) or exc.unavailable
            return sqlwire.encode_reply(req_id, error=status.removeprefix("error: "), unavailable=unavailable,
                                        ms=(time.monotonic() - received) * 1000, hops=hops_to_header(hops))
        self.queries += 1
        return sqlwire.encode_reply(req_id, ms=(time.monotonic() - received) * 1000, hops=hops_to_header(hops),
                                    **reply)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        peer = (writer.get_extra_info("peername") or ("",))[0]
        first = True
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):
                    return
                if not line or (first and not sqlwire.is_request_line(line)):
                    return  # ended, or not this protocol (an HTTP request): closed, nothing more read
                first = False
                while self.cut_off(peer):  # a partition drops packets: the caller times out
                    await asyncio.sleep(0.1)
                await self.travel(peer)  # the modelled distance to a caller in another region
                writer.write(await self._answer(line))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.transport.abort()

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.address, self.port, reuse_address=True, limit=sqlwire.MAX_LINE
        )
        self.background.start(self._reshard, "reshard")
        if self._wanted is not None:
            self._wake.set()
        self.up = True

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    async def stop(self) -> None:
        self.up = False
        self._close()
        await self.background.stop(timeout=STOP_S)
        await wait_ended(list(self._handlers), who=self.who, what="its connections' handlers", timeout=STOP_S)
        for event in self._held.values():
            event.set()
        self._held.clear()

    def force(self) -> None:
        super().force()
        self._close()

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {
            "up": self.up,
            "algorithm": self.placement.algorithm,
            "vnodes": self._vnodes,
            "shards": len(self.placement.nodes),
            "queries": self.queries,
            "scattered": self.scattered,
            "precomputed": self.precomputed,
            "fanned_out": self.fanned_out,
            "feed": self.feed,
            "moving": self.moving,
            "moved_rows": self.moved_rows,
            "moved_fraction": self.moved_fraction,
            "rows": sum(getattr(self.ctx.peer(s), "rows", 0) for s in self.placement.nodes),
            "arcs": [[round(a, 5), round(b, 5), s] for a, b, s in self.placement.arcs()],
            "shares": {s: round(v, 4) for s, v in self.placement.shares().items()},
        }
        return snap

    def tables(self) -> dict[str, dict[str, Any]]:
        """metric(sharding.KEY): the lab's sharded database, as this router sees it."""
        snap = self.snapshot()
        return {"sharding": {k: snap[k] for k in ("moved_rows", "moved_fraction", "rows", "algorithm", "moving",
                                                   "shards", "vnodes")}}
