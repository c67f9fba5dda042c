"""A real SQL database server: SQLite in a file of its own, behind a small TCP protocol.

The protocol (newline-delimited JSON, one reply per request, in order) is in
``core.engine.sqlwire``. The database is a SQLite file the node creates on its first start and
seeds with the photo-sharing data (users, posts, follows); a crash (``kill``) keeps the file, as a
real crash keeps the disk, and the lab's end (``discard``) deletes it.

SQLite runs in one thread the node owns (a one-thread executor holding the only connection), so
the event loop never blocks on the disk and every SQLite call comes from the same thread. The
connection is closed on stop and on kill, and the thread ends after it (the loop never blocks on
joining it: a thread busy with a long query must not hold up the lab's stop).

Capacity is modelled as for a web server (``core.engine.capacity.Capacity``): ``workers``
connection slots serve a query at once, each for a random modelled service time plus the real
SQLite time; the rest wait in a queue of ``queue_limit`` and beyond it are told ``overloaded``.

Every write goes, in its own transaction, into the ``changelog`` table with its log position
(``lsn``), and the server answers a pull of that log (``log_from``) on the same protocol, waking
the long polls on each write: the primary's side of replication is part of serving. A replica
refuses writes. The replica's side (pulling, applying with a delay, ``promote`` and ``follow``)
is ``core.engine.nodes.sqlreplica``, mixed into this node.

Anything on the machine can connect, so the node runs only the application's kind of statement,
judged by SQLite's authorizer (``core.engine.sqlguard``): ``Guard.check`` before a statement queues
(refused, or a read, or a write, whatever its first word), ``Gate`` on the real connection while it
runs (the same rule, writes only on a primary, bounded in time). A refused statement gets the
protocol's error reply and the node goes on. A connection whose first line is not a JSON object is
closed unanswered (``sqlwire.is_request_line``).

``DbPool`` (``core.engine.nodes.clients``) is the other side: the client a web node uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.engine import scratch, sharding, sqlguard, sqlwire
from core.engine.capacity import Capacity, Overloaded
from core.engine.lifecycle import wait_ended
from core.engine.nodes.base import Node
from core.engine.nodes.sqlreplica import PULL_MAX, STOP_WAIT_S, SqlReplica
from core.engine.spec import NodeSpec, Topology

log = logging.getLogger(__name__)
# From the replica side: a pull gets at most PULL_MAX entries, what a replica asks for, and a stop
# waits STOP_WAIT_S at most for each of its steps, as for the replication tasks.


class SqlDbNode(SqlReplica, Node):
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
        self.rows = 0  # the application's rows it holds (users, posts, follows)
        self._owns: Callable[[int], bool] | None = None  # a shard seeds only its users (core.engine.sharding)
        self.lsn = 0  # last change applied (on a primary: last written)
        self._log_event = asyncio.Event()  # set (and replaced) on each write: wakes the replicas' long polls
        self._guard = sqlguard.Guard()  # what a caller's statement is, before it queues
        self._gate = sqlguard.Gate()  # the same rule on the real connection, while it runs

    def _new_capacity(self) -> Capacity:
        return Capacity(
            workers=self.params["workers"],
            service_ms=self.params["service_ms"],
            queue_limit=self.params["queue_limit"],
            rng=self.ctx.rng,
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
            if self.params.get("data", "seeded") == "seeded":  # a shard added live starts empty
                mine = self._owns or (lambda user: True)
                for table, rows in sqlwire.seed_rows(self.params["users"], self.params["posts"]).items():
                    owner = 1 if table == "posts" else 0  # the column holding the user (the sharding key)
                    conn.executemany(sqlwire.INSERTS[table], (r for r in rows if mine(r[owner])))
                if self._owns is not None:  # a shard: its readers' precomputed feeds (nodes/router.py)
                    feeds = sqlwire.feed_rows(self.params["users"], self.params["posts"], self._owns)
                    conn.executemany(sqlwire.INSERTS["feeds"], feeds)
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
            self.seed_ms = (time.monotonic() - start) * 1000
        self._gate.install(conn)
        self._conn = conn
        self.lsn = conn.execute("SELECT COALESCE(MAX(lsn), 0) FROM changelog").fetchone()[0]
        self.rows = sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in sqlwire.DATA_TABLES)

    def _run(self, sql: str, params: list[Any]) -> list[list[Any]]:
        """A caller's read."""
        assert self._conn is not None
        with self._gate.caller(writes=False):
            cur = self._conn.execute(sql, params)
            try:
                return [list(r) for r in cur.fetchall()]
            finally:
                cur.close()

    def _write(self, sql: str, params: list[Any], stmt: sqlguard.Statement) -> tuple[int, int]:
        """A caller's write and its change-log entry in one transaction: (rowid, lsn)."""
        assert self._conn is not None
        conn = self._conn
        conn.execute("BEGIN")
        try:
            # SQLite's own count: Python's rowcount is -1 for a write it does not recognise (WITH …).
            before = conn.total_changes
            with self._gate.caller(writes=True):
                cur = conn.execute(sql, params)
                cur.fetchall()  # to its end (a RETURNING clause), before the log entry
            rowid = cur.lastrowid or 0
            changed = sqlguard.row_change(stmt, conn.total_changes - before)
            lsn = self.lsn + 1
            conn.execute(sqlwire.LOG_INSERT, (lsn, time.time(), sql, json.dumps(params)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.lsn = lsn
        self.rows += changed
        return rowid, lsn

    def _log_since(self, first: int, limit: int) -> list[list[Any]]:
        assert self._conn is not None
        cur = self._conn.execute(
            "SELECT lsn, t, sql, params FROM changelog WHERE lsn >= ? ORDER BY lsn LIMIT ?", (first, limit)
        )
        return [list(r) for r in cur.fetchall()]

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
        peer = (writer.get_extra_info("peername") or ("",))[0]
        first = True
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):  # a line over MAX_LINE, or a reset
                    return
                if not line or (first and not sqlwire.is_request_line(line)):
                    return  # ended, or not this protocol (an HTTP request): closed, nothing more read
                first = False
                # A partition drops packets: the caller hears nothing and times out.
                while self.cut_off(peer):
                    await asyncio.sleep(0.1)
                # The modelled distance to a caller in another region: half of the round trip
                # on the way in, half on the way back, so a long poll's answer (a replica waiting
                # for the next change) also crosses it.
                half_ms = self.distance_ms(peer) / 2
                if half_ms > 0:
                    await asyncio.sleep(half_ms / 1000)
                answer = await self._answer(line)
                if half_ms > 0:
                    await asyncio.sleep(half_ms / 1000)
                while self.cut_off(peer):  # cut while it was answered (a long poll): the reply is lost too
                    await asyncio.sleep(0.1)
                writer.write(answer)
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
            msg = sqlwire.decode_message(line)
        except sqlwire.ProtocolError as exc:
            self.errors += 1
            return sqlwire.encode_reply("", error=f"bad request: {exc}", ms=0.0)
        if "log_from" in msg:
            return await self._answer_log(msg, received)
        req_id, sql, params = msg["id"], msg["sql"], msg["params"]
        try:
            stmt = self._guard.check(sql, params)
        except (sqlguard.Refused, sqlite3.Error) as exc:
            self.errors += 1
            return sqlwire.encode_reply(req_id, error=str(exc), ms=(time.monotonic() - received) * 1000)
        write = stmt.write
        if write and self.role != "primary":
            self.errors += 1
            return sqlwire.encode_reply(req_id, error=sqlwire.READ_ONLY, ms=0.0, lsn=self.lsn)
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
            loop = asyncio.get_running_loop()
            if write:
                rowid, lsn = await loop.run_in_executor(executor, self._write, sql, params, stmt)
                self._log_written()
            else:
                lsn = self.lsn  # what this answer reflects: read before the query runs
                rows = await loop.run_in_executor(executor, self._run, sql, params)
        except sqlite3.Error as exc:
            self.errors += 1
            return sqlwire.encode_reply(req_id, error=str(exc), ms=(time.monotonic() - received) * 1000)
        finally:
            capacity.release()
        self.queries += 1
        ms = (time.monotonic() - received) * 1000
        if write:
            return sqlwire.encode_reply(req_id, rows=[], ms=ms, lsn=lsn, rowid=rowid)
        return sqlwire.encode_reply(req_id, rows=rows, ms=ms, lsn=lsn)

    def _log_written(self) -> None:
        """Wake the replicas' long polls."""
        event, self._log_event = self._log_event, asyncio.Event()
        event.set()

    async def _answer_log(self, msg: dict[str, Any], received: float) -> bytes:
        """A replica's pull: entries from ``log_from`` on, waiting up to ``wait_ms`` for the first."""
        first = msg["log_from"]
        if first > self.lsn and msg.get("wait_ms"):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(msg["wait_ms"] / 1000):
                    await self._log_event.wait()
        executor = self._executor
        if executor is None:
            raise ConnectionError("database stopped")
        limit = max(1, min(int(msg.get("max") or PULL_MAX), PULL_MAX))
        entries = await asyncio.get_running_loop().run_in_executor(executor, self._log_since, first, limit)
        return sqlwire.encode_reply(msg["id"], ms=(time.monotonic() - received) * 1000, log=entries, head=self.lsn)

    @classmethod
    def clone_params(cls, base: NodeSpec, topology: Topology) -> dict[str, Any]:
        """A copy of a shard is a new, empty shard (its router moves rows to it); a copy of any other
        database is a replica of its cluster's primary, never a second primary."""
        if not base.params.get("replica_of") and sharding.router_of(topology, base.id):
            return {"replica_of": "", "data": "empty"}
        return {"replica_of": base.params.get("replica_of") or base.id, "data": "seeded"}

    def removal_problem(self) -> str | None:
        shard = sharding.router_of(self.ctx.topology, self.id) is not None and not self.params.get("replica_of")
        if self.ctx.primary_for(self.id) == self.id and not shard:
            return "is the primary database: promote a replica first"
        return None

    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        # promote and delay: the cluster's roles are replication's to change (core.engine.replication)
        await self.ctx.replication_command(cmd)

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.capacity = self._new_capacity()
        await self._replica_starting()
        seed = self.path is None
        if seed:
            self._owns = sharding.seed_filter(self.ctx.topology, self.id)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqldb-{self.id}")
        if seed:  # the file lives in a directory of its own (core.engine.scratch), swept if the worker dies
            await asyncio.get_running_loop().run_in_executor(self._executor, scratch.sweep_orphans)
            self.path = os.path.join(scratch.make_dir(self.id), "data.sqlite3")
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
        self._replica_started()

    async def stop(self) -> None:
        """Crash-like: stop listening, reset every connection, close SQLite and its thread.

        The file stays (a crashed database keeps its disk); ``discard`` deletes it."""
        self.up = False
        await self._replica_stopping()
        self._close_sockets()
        await wait_ended(list(self._handlers), who=self.who, what="its connections' handlers", timeout=STOP_WAIT_S)
        executor, self._executor = self._executor, None
        if executor is not None:
            try:
                async with asyncio.timeout(STOP_WAIT_S):
                    await asyncio.wrap_future(executor.submit(self._close))
            except TimeoutError:
                log.warning("%s: SQLite did not close within %.1f s; its thread closes it later", self.who, STOP_WAIT_S)
            except Exception as exc:
                log.warning("%s: closing SQLite failed: %r", self.who, exc)
            # Not wait=True: that would block the event loop on a thread still busy with a query.
            executor.shutdown(wait=False)

    def _close_sockets(self) -> None:
        """Stop listening and reset every connection; their handlers are cancelled."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()

    def force(self) -> None:
        super().force()
        self._replica_forced()
        self._close_sockets()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._close)  # SQLite is closed from its own thread, after any running query
            executor.shutdown(wait=False)
        if self.path is not None:
            shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)
            self.path = None

    async def discard(self) -> None:
        """The lab is over: delete the database file (and SQLite's WAL files)."""
        if self.up:
            await self.stop()
        if self.path is not None:
            shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)  # with SQLite's -wal/-shm
            self.path = None

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {
            "up": self.up,
            "in_flight": self.capacity.busy,
            "queued": self.capacity.queued,
            "util": round(self.capacity.utilisation(), 3),
            "queries": self.queries,
            "role": self.role,
            "lsn": self.lsn,
            "rows": self.rows,
        }
        share = self.ctx.share_of_rows(self.id)
        if share is not None:
            snap["share"] = share
        snap.update(self._replica_snapshot())
        return snap
