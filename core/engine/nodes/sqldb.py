"""A real SQL database server: SQLite in a file of its own, behind a small TCP protocol.

The protocol (newline-delimited JSON, one reply per request, in order) is in
``core.engine.sqlwire``. The database is a SQLite file the node creates on its first start and
seeds with the photo-sharing data (users, posts, follows); a crash (``kill``) keeps the file, as a
real crash keeps the disk, and the lab's end (``discard``) deletes it.

SQLite runs in one thread the node owns (a one-thread executor holding the only connection), so
the event loop never blocks on the disk and every SQLite call comes from the same thread. The
connection is closed and the thread joined on stop and on kill: nothing is left running.

Capacity is modelled as for a web server (``core.engine.capacity.Capacity``): ``workers``
connection slots serve a query at once, each for a random modelled service time plus the real
SQLite time; the rest wait in a queue of ``queue_limit`` and beyond it are told ``overloaded``.

``DbPool`` is the other side: the client a web node uses, with a few persistent connections bound
to the web node's own address (so the database sees the web server calling).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.engine import sqlwire
from core.engine.capacity import Capacity, Overloaded
from core.engine.nodes.base import Node


class SqlDbNode(Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = self._new_capacity()
        self.path: str | None = None  # the database file, from the first start to discard()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.queries = 0
        self.errors = 0
        self.rejected = 0
        self.seed_ms = 0.0

    def _new_capacity(self) -> Capacity:
        return Capacity(
            workers=self.params["workers"],
            service_ms=self.params["service_ms"],
            queue_limit=self.params["queue_limit"],
            rng=self.lab.rng,
        )

    # SQLite, in the node's own thread ---------------------------------------------------------
    def _open(self, seed: bool) -> None:
        assert self.path is not None
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")  # a lab database: speed over durability
        if seed:
            start = time.monotonic()
            conn.executescript(sqlwire.SCHEMA)
            conn.execute("BEGIN")
            for table, rows in sqlwire.seed_rows(self.params["users"], self.params["posts"]).items():
                conn.executemany(sqlwire.INSERTS[table], rows)
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
            self.seed_ms = (time.monotonic() - start) * 1000
        self._conn = conn

    def _run(self, sql: str, params: list[Any]) -> list[list[Any]]:
        assert self._conn is not None
        cur = self._conn.execute(sql, params)
        try:
            return [list(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Serving ---------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):  # a line over MAX_LINE, or a reset
                    return
                if not line:
                    return
                writer.write(await self._answer(line))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.transport.abort()

    async def _answer(self, line: bytes) -> bytes:
        received = time.monotonic()
        try:
            req_id, sql, params = sqlwire.decode_request(line)
        except sqlwire.ProtocolError as exc:
            self.errors += 1
            return sqlwire.encode_reply("", error=f"bad request: {exc}", ms=0.0)
        capacity = self.capacity
        try:
            await capacity.acquire()
        except Overloaded:
            self.rejected += 1
            return sqlwire.encode_reply(req_id, error=sqlwire.OVERLOADED, ms=(time.monotonic() - received) * 1000)
        try:
            await capacity.work(extra_ms=self.slow_ms)
            executor = self._executor
            if executor is None:
                raise ConnectionError("database stopped")
            rows = await asyncio.get_running_loop().run_in_executor(executor, self._run, sql, params)
        except sqlite3.Error as exc:
            self.errors += 1
            return sqlwire.encode_reply(req_id, error=str(exc), ms=(time.monotonic() - received) * 1000)
        finally:
            capacity.release()
        self.queries += 1
        return sqlwire.encode_reply(req_id, rows=rows, ms=(time.monotonic() - received) * 1000)

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.capacity = self._new_capacity()
        seed = self.path is None
        if seed:
            fd, self.path = tempfile.mkstemp(prefix=f"scalelab-{self.id}-", suffix=".sqlite3")
            os.close(fd)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqldb-{self.id}")
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._open, seed)
            self._server = await asyncio.start_server(
                self._serve, self.address, self.port, reuse_address=True, limit=sqlwire.MAX_LINE
            )
        except BaseException:
            await self.stop()
            if seed:
                await self.discard()
            raise
        self.up = True

    async def stop(self) -> None:
        """Crash-like: stop listening, reset every connection, close SQLite and its thread.

        The file stays (a crashed database keeps its disk); ``discard`` deletes it."""
        self.up = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
        executor, self._executor = self._executor, None
        if executor is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(executor.submit(self._close))
            executor.shutdown(wait=True)

    async def discard(self) -> None:
        """The lab is over: delete the database file (and SQLite's WAL files)."""
        if self.up:
            await self.stop()
        if self.path is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)
            self.path = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "in_flight": self.capacity.busy,
            "queued": self.capacity.queued,
            "util": round(self.capacity.utilisation(), 3),
            "queries": self.queries,
        }


class DbError(Exception):
    """A query failed: ``status`` says how, as a hop shows it ("connection refused", "timeout",
    "overloaded", "error: no such table: x"); ``unavailable`` when the database could not be reached."""

    def __init__(self, status: str, *, unavailable: bool) -> None:
        super().__init__(status)
        self.status = status
        self.unavailable = unavailable


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
        # A pooled connection may have died with the database (a crash resets it): that shows only
        # when it is used, so a failed reused connection is retried once on a fresh one.
        for reused in (True, False):
            conn = self._idle.pop() if reused and self._idle else None
            if reused and conn is None:
                continue
            try:
                if conn is None:
                    conn = await asyncio.wait_for(
                        asyncio.open_connection(
                            self.address, self.port, local_addr=(self.source, 0), limit=sqlwire.MAX_LINE
                        ),
                        self.timeout_s,
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
                line = await asyncio.wait_for(reader.readline(), self.timeout_s)
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
                if error == sqlwire.OVERLOADED:
                    raise DbError(error, unavailable=True)
                raise DbError(f"error: {error}", unavailable=False)
            return reply["rows"], float(reply.get("ms", 0.0))
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer in self._idle:
            writer.transport.abort()
        for writer in self._busy:
            writer.transport.abort()
        self._idle.clear()
        self._busy.clear()
