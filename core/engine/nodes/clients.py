"""The web tier's clients of the data tier: ``DbPool`` (a SQL node's protocol), ``KvStore`` (a
key-value node's redis-server), and ``DbError``, how a query to either fails; ``CacheClient`` (a
cache node's redis-server) and ``CacheError``.

They are apart from the servers (``sqldb.py``, ``kvdb.py``, ``cache.py``) so that a web node imports
a client, never a server. A client takes the node only for its "slow" fault (``Node.slowdown``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.connection import BlockingConnectionPool, Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.engine import cacheaside, kvwire, sqlwire

if TYPE_CHECKING:
    from core.engine.nodes.base import Node
    from core.engine.nodes.kvdb import KvDbNode


class DbError(Exception):
    """A query failed: ``status`` says how, as a hop shows it ("connection refused", "timeout",
    "overloaded", "error: no such table: x"); ``unavailable`` when the database could not be reached."""

    def __init__(self, status: str, *, unavailable: bool, hops: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.unavailable = unavailable
        self.hops = hops  # a shard router's calls behind the failure (its reply's ``hops``)


class DbPool:
    """Persistent connections from one source address to one database node; one query at a time
    per connection, as with a classic database driver's pool."""

    def __init__(self, address: str, port: int, *, source: str, timeout_s: float = 5.0) -> None:
        self.address = address
        self.port = port
        self.source = source
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._busy: set[asyncio.StreamWriter] = set()

    async def query(self, req_id: str, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> tuple[list[Any], float]:
        """(rows, ms inside the database); raises DbError."""
        reply = await self.query_reply(req_id, sql, params)
        return reply["rows"], float(reply.get("ms", 0.0))

    async def query_reply(self, req_id: str, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> dict[str, Any]:
        """The whole reply (rows, ms, lsn and for a write rowid); raises DbError."""
        # A pooled connection may have died with the database (a crash resets it): that shows only
        # when it is used, so a failed reused connection is retried once on a fresh one.
        for reused in (True, False):
            conn = self._idle.pop() if reused and self._idle else None
            if reused and conn is None:
                continue
            try:
                if conn is None:
                    async with asyncio.timeout(self.timeout_s):
                        conn = await asyncio.open_connection(
                            self.address, self.port, local_addr=(self.source, 0), limit=sqlwire.MAX_LINE
                        )
            except ConnectionRefusedError:
                raise DbError("connection refused", unavailable=True) from None
            except TimeoutError:
                raise DbError("connect timeout", unavailable=True) from None
            except OSError as exc:
                raise DbError(exc.strerror or type(exc).__name__, unavailable=True) from None
            reader, writer = conn
            self._busy.add(writer)
            try:
                writer.write(sqlwire.encode_request(req_id, sql, params))
                await writer.drain()
                async with asyncio.timeout(self.timeout_s):
                    line = await reader.readline()
                if not line:
                    raise ConnectionResetError
                reply = sqlwire.decode_reply(line)
            except TimeoutError:
                writer.transport.abort()
                raise DbError("timeout", unavailable=True) from None
            except (ConnectionError, ValueError, sqlwire.ProtocolError):
                writer.transport.abort()
                if reused:
                    continue
                raise DbError("connection reset", unavailable=True) from None
            except BaseException:
                writer.transport.abort()
                raise
            finally:
                self._busy.discard(writer)
            self._idle.append(conn)
            if "error" in reply:
                error = str(reply["error"])
                if error == sqlwire.OVERLOADED or reply.get("unavailable"):
                    raise DbError(error, unavailable=True, hops=reply.get("hops"))
                raise DbError(f"error: {error}", unavailable=False, hops=reply.get("hops"))
            return reply
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer in self._idle:
            writer.transport.abort()
        for writer in self._busy:
            writer.transport.abort()
        self._idle.clear()
        self._busy.clear()


# The key-value client ---------------------------------------------------------------------------

Command = tuple[Any, ...]


class _SourcedConnection(Connection):
    """A connection from a given source address, so the database sees who calls (CLIENT LIST)."""

    def __init__(self, *, source: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source

    def _connection_arguments(self) -> dict[str, Any]:
        args = dict(super()._connection_arguments())
        if self.source:
            args["local_addr"] = (self.source, 0)
        return args


def _status(exc: BaseException) -> str:
    """How a call to a redis-server that could not be reached failed, as a hop shows it."""
    text = str(exc).lower()
    if isinstance(exc, rexc.TimeoutError | TimeoutError) or "timeout" in text or "timed out" in text:
        return "timeout"
    if "refused" in text:
        return "connection refused"
    if "no connection available" in text:
        return "pool exhausted"
    return "connection reset"


def _unavailable(exc: BaseException) -> DbError:
    return DbError(_status(exc), unavailable=True)


class KvStore:
    """The web tier's client of a kv node: a small pool of connections (redis.asyncio), one method
    per page. Each returns ``(result, ms, lsn, op_text)``: ``ms`` the round trips' time (with the
    node's "slow" fault), ``lsn`` the log position read with a read or made by a write, ``op_text``
    the commands as a trace hop shows them. Raises DbError like the SQL node's pool. ``password``: the
    server's (a lab's redis-server refuses a caller without it)."""

    def __init__(
        self,
        address: str,
        port: int,
        node: KvDbNode | None = None,
        *,
        source: str | None = None,
        password: str | None = None,
        timeout_s: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        self.node = node
        self.source = source
        self._pool = BlockingConnectionPool(
            connection_class=_SourcedConnection,
            host=address,
            port=port,
            password=password,  # the server's, from the lab (NodeContext.server_password)
            source=source,
            max_connections=max_connections,
            timeout=timeout_s,  # waiting for a free connection
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            # A pooled connection may have died with the server (a kill resets it): that shows only
            # when it is used, so a failed round trip is retried once, on a fresh connection.
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = Redis(connection_pool=self._pool)

    async def _round_trip(self, commands: list[Command], *, transaction: bool = False) -> list[Any]:
        if self.node is not None:
            await self.node.slowdown()
            if self.source:  # a real redis-server cannot add the modelled distance: its caller does
                await self.node.travel(self.source)
        try:
            async with self._redis.pipeline(transaction=transaction) as pipe:
                for cmd in commands:
                    pipe.execute_command(*cmd)
                replies = await pipe.execute(raise_on_error=False)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            raise _unavailable(exc) from None
        except rexc.RedisError as exc:
            raise DbError(f"error: {exc}", unavailable=False) from None
        failed = next((r for r in replies if isinstance(r, rexc.RedisError)), None)
        if failed is not None:  # an error reply, as the server wrote it ("WRONGTYPE Operation ...")
            raise DbError(f"error: {failed}", unavailable=False)
        if self.node is not None:
            self.node.ops += len(commands)
        return replies

    async def _page(self, uid: int, items: Command, op: str) -> tuple[dict[str, Any], float, int, str]:
        began = time.monotonic()
        user, docs, lsn = await self._round_trip([("GET", kvwire.user_key(uid)), items, ("GET", kvwire.LSN_KEY)])
        page = {
            "user": json.loads(user) if user else None,
            "items": [json.loads(d) for d in docs or () if d],
        }
        return page, (time.monotonic() - began) * 1000, int(lsn or 0), op

    async def profile(self, user_id: int) -> tuple[dict[str, Any], float, int, str]:
        """{"user": {...} or None, "items": the user's newest posts}, in one round trip."""
        # SORT ... BY nosort GET post:* dereferences the id list server-side (no second round trip).
        sort = ("SORT", kvwire.posts_key(user_id), "BY", "nosort", "LIMIT", 0, kvwire.PROFILE_LEN, "GET", "post:*")
        return await self._page(user_id, sort, kvwire.profile_op(user_id))

    async def feed(self, user_id: int) -> tuple[dict[str, Any], float, int, str]:
        """{"user": {...} or None, "items": the precomputed feed}: one LRANGE, no join."""
        lrange = ("LRANGE", kvwire.feed_key(user_id), 0, kvwire.FEED_LEN - 1)
        return await self._page(user_id, lrange, kvwire.feed_op(user_id))

    async def login(self, user_id: int) -> tuple[bool, float, int, str]:
        """Whether the user exists."""
        began = time.monotonic()
        exists, lsn = await self._round_trip([("EXISTS", kvwire.user_key(user_id)), ("GET", kvwire.LSN_KEY)])
        return bool(exists), (time.monotonic() - began) * 1000, int(lsn or 0), kvwire.login_op(user_id)

    async def post(self, user_id: int, caption: str) -> tuple[int, float, int, str]:
        """Publish a post: its id. Fan-out on write: one MULTI stores it and pushes it onto every
        follower's feed (trimmed to FEED_LEN), and INCR lsn gives the write's log position."""
        began = time.monotonic()
        pid, fans, user = await self._round_trip(
            [
                ("INCR", kvwire.POST_SEQ_KEY),
                ("SMEMBERS", kvwire.followers_key(user_id)),
                ("GET", kvwire.user_key(user_id)),
            ]
        )
        if not user:
            raise DbError(f"error: no user {user_id}", unavailable=False)
        pid = int(pid)
        doc = kvwire.post_doc(pid, json.loads(user)["name"], caption, f"/photos/{pid}.jpg", int(time.time()))
        writes: list[Command] = [("SET", kvwire.post_key(pid), doc), ("LPUSH", kvwire.posts_key(user_id), pid)]
        for fan in sorted(fans, key=int):
            feed = kvwire.feed_key(int(fan))
            writes += [("LPUSH", feed, doc), ("LTRIM", feed, 0, kvwire.FEED_LEN - 1)]
        writes.append(("INCR", kvwire.LSN_KEY))
        replies = await self._round_trip(writes, transaction=True)
        op = kvwire.post_op(user_id, pid, len(fans))
        return pid, (time.monotonic() - began) * 1000, int(replies[-1]), op

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._redis.aclose()
        await self._pool.disconnect()


# The cache client -------------------------------------------------------------------------------


class CacheError(Exception):
    """A cache call failed (``status`` as a hop shows it: "connection refused", "timeout",
    "error: OOM command not allowed ..."); the web tier treats it as a miss."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class CacheClient:
    """The web tier's client of a cache node: a small pool bound to the web node's address, every
    call bounded by ``timeout_s`` in all (a dead cache costs a page at most that; a refused
    connection fails at once). Raises CacheError. ``node``: the cache node, for its "slow" fault;
    ``password``: the server's."""

    def __init__(
        self, address: str, port: int, *, source: str | None, password: str | None = None, timeout_s: float = 1.0,
        max_connections: int = 4, node: Node | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.node = node
        self.source = source
        self._pool = BlockingConnectionPool(
            connection_class=_SourcedConnection,
            host=address,
            port=port,
            password=password,  # the server's, from the lab (NodeContext.server_password)
            source=source,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            # A pooled connection that died with a killed cache shows only when used: one retry on
            # a fresh connection. Not on a timeout: that would spend the page's budget twice.
            retry=Retry(NoBackoff(), 1, supported_errors=(rexc.ConnectionError,)),
        )
        self._redis = Redis(connection_pool=self._pool)

    async def _call(self, commands: list[cacheaside.Command]) -> list[Any]:
        if self.node is not None:
            await self.node.slowdown()
            if self.source:  # a real redis-server cannot add the modelled distance: its caller does
                await self.node.travel(self.source)
        try:
            async with asyncio.timeout(self.timeout_s):
                if len(commands) == 1:
                    return [await self._redis.execute_command(*commands[0])]
                async with self._redis.pipeline(transaction=False) as pipe:
                    for cmd in commands:
                        pipe.execute_command(*cmd)
                    return await pipe.execute()
        except (rexc.ConnectionError, rexc.TimeoutError, TimeoutError, OSError) as exc:
            raise CacheError(_status(exc)) from None
        except rexc.OutOfMemoryError as exc:  # redis-py drops the reply's "OOM": a hop should show it
            raise CacheError(f"error: OOM {exc}") from None
        except rexc.RedisError as exc:  # another error reply, as the server wrote it
            raise CacheError(f"error: {exc}") from None

    async def get(self, key: str) -> str | None:
        """The cached value, or None on a miss."""
        (value,) = await self._call([("GET", key)])
        return value

    async def set(self, key: str, value: str, ttl_s: float) -> None:
        """Cache ``value`` for ``ttl_s`` seconds (``cacheaside.store_command``: 0 stores nothing)."""
        cmd = cacheaside.store_command(key, value, ttl_s)
        if cmd is not None:
            await self._call([cmd])

    async def delete(self, key: str) -> None:
        await self._call([("DEL", key)])

    async def send(self, commands: list[cacheaside.Command]) -> None:
        """Commands in one round trip (what ``cacheaside.after_write`` says a write sends)."""
        if commands:
            await self._call(commands)

    async def close(self) -> None:
        """Close every pooled connection; past ``timeout_s``, drop them (``close_now``)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._redis.aclose()
                await self._pool.disconnect()
        except TimeoutError:
            self.close_now()

    def close_now(self) -> None:
        """Drop every connection at once, synchronously (a forced stop): nothing is left to await."""
        for conn in [*self._pool._get_free_connections(), *self._pool._get_in_use_connections()]:
            writer = getattr(conn, "_writer", None)
            if writer is not None:
                writer.transport.abort()
            conn._close()  # redis-py's own "close without waiting": forget the streams
