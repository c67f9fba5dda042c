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

Replication (statement-based, asynchronous): the primary writes every change into its
``changelog`` table in the write's own transaction, numbering it with a log position (``lsn``). A
replica pulls the log over the same protocol from its own address (a long poll, see
``sqlwire``), keeps what it received in memory, and applies each entry ``delay_ms`` after the
primary committed it (the modelled distance), into its data and its own ``changelog``. So
``received`` may run ahead of ``lsn`` (applied); a promoted replica first applies everything it
received. A replica refuses writes. Which node is primary, and failover, belong to
``core.engine.replication``; the node only does what it is told (``promote``, ``follow``).

``DbPool`` (``core.engine.nodes.clients``) is the other side: the client a web node uses.
"""

from __future__ import annotations

import asyncio
import collections
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

from core.engine import scratch, sharding, sqlwire
from core.engine.capacity import Capacity, Overloaded
from core.engine.lifecycle import wait_ended
from core.engine.nodes.base import Node
from core.engine.spec import NodeSpec, Topology

log = logging.getLogger(__name__)
PULL_WAIT_MS = 500  # a replica's long poll for new log entries
PULL_MAX = 1000  # entries per pull
APPLY_BATCH = 500  # entries a replica applies in one transaction
RETRY_S = 0.2  # a replica's pause before reconnecting to its primary
STOP_WAIT_S = 2.0  # the longest a stop waits for the replication tasks to end


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
        self.rows = 0  # the application's rows it holds (users, posts, follows)
        self._owns: Callable[[int], bool] | None = None  # a shard seeds only its users (core.engine.sharding)
        # Replication state. Role and whom to follow outlive restarts (the replication manager
        # sets them); what was received but not applied is memory, lost with a crash.
        self.role = "replica" if self.params.get("replica_of") else "primary"
        self.following: str | None = self.params.get("replica_of") or None
        self.delay_ms = float(self.params.get("delay_ms", 0.0))
        self.lsn = 0  # last change applied (on a primary: last written)
        self.received = 0  # last change received from the primary (a replica)
        self.head = 0  # the primary's last position as last seen
        self.primary_down_since: float | None = None  # when this replica last lost its primary
        self.lost_writes = 0  # set on an old primary: writes it accepted that nobody received
        self.rebuild_after: int | None = None  # on restart, rebuild if the log runs past this
        self._pending: collections.deque[list[Any]] = collections.deque()
        self._pending_event = asyncio.Event()
        self._log_event = asyncio.Event()
        self._repl_tasks: list[asyncio.Task[Any]] = []
        self._repl_gen = 0  # bumped whenever replication stops: the tasks of older generations end

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
        self._conn = conn
        self.lsn = conn.execute("SELECT COALESCE(MAX(lsn), 0) FROM changelog").fetchone()[0]
        self.rows = sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in sqlwire.DATA_TABLES)

    def _run(self, sql: str, params: list[Any]) -> list[list[Any]]:
        assert self._conn is not None
        cur = self._conn.execute(sql, params)
        try:
            return [list(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def _write(self, sql: str, params: list[Any]) -> tuple[int, int]:
        """A write and its change-log entry in one transaction: (rowid, lsn)."""
        assert self._conn is not None
        conn = self._conn
        conn.execute("BEGIN")
        try:
            cur = conn.execute(sql, params)
            rowid = cur.lastrowid or 0
            changed = sqlwire.row_change(sql, cur.rowcount)
            lsn = self.lsn + 1
            conn.execute(sqlwire.LOG_INSERT, (lsn, time.time(), sql, json.dumps(params)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.lsn = lsn
        self.rows += changed
        return rowid, lsn

    def _apply(self, entries: list[list[Any]]) -> None:
        """Replay log entries from the primary, in order, in one transaction."""
        assert self._conn is not None
        conn = self._conn
        conn.execute("BEGIN")
        last = self.lsn
        changed = 0
        try:
            for lsn, t, sql, params in entries:
                if lsn <= last:
                    continue
                try:
                    changed += sqlwire.row_change(sql, conn.execute(sql, json.loads(params)).rowcount)
                except sqlite3.Error as exc:  # keep the position: one bad entry must not stop the replica
                    log.warning("%s: entry %s failed to apply: %s", self.id, lsn, exc)
                conn.execute(sqlwire.LOG_INSERT, (lsn, t, sql, params))
                last = lsn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.lsn = last
        self.rows += changed

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
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):  # a line over MAX_LINE, or a reset
                    return
                if not line:
                    return
                # A partition drops packets: the caller hears nothing and times out.
                while self.cut_off(peer):
                    await asyncio.sleep(0.1)
                answer = await self._answer(line)
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
        write = sqlwire.is_write(sql)
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
                rowid, lsn = await loop.run_in_executor(executor, self._write, sql, params)
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

    # Replication: a replica's side ------------------------------------------------------------
    async def _pull(self, gen: int) -> None:
        """Follow the primary: long-poll its change log from this node's own address.

        ``gen`` ends the loop once replication is stopped even if a cancellation is lost (Python
        3.11's wait_for can swallow one that arrives as the awaited call completes)."""
        while self._repl_gen == gen:
            primary_id = self.following
            primary = self.ctx.peer(primary_id) if primary_id else None
            if primary is None:
                await asyncio.sleep(RETRY_S)
                continue
            try:
                async with asyncio.timeout(1.0):
                    reader, writer = await asyncio.open_connection(
                        primary.address, primary.port, local_addr=(self.address, 0), limit=sqlwire.MAX_LINE
                    )
            except (OSError, TimeoutError):
                self._primary_lost()
                await asyncio.sleep(RETRY_S)
                continue
            try:
                while self.following == primary_id and self._repl_gen == gen:
                    ask = sqlwire.encode_log_request(
                        "repl", self.received + 1, max_entries=PULL_MAX, wait_ms=PULL_WAIT_MS
                    )
                    writer.write(ask)
                    await writer.drain()
                    async with asyncio.timeout(PULL_WAIT_MS / 1000 + 1.5):
                        line = await reader.readline()
                    if not line or self._repl_gen != gen:
                        raise ConnectionResetError
                    reply = sqlwire.decode_reply(line)
                    if "log" not in reply:
                        raise ConnectionError(reply.get("error"))
                    self.primary_down_since = None
                    self.head = int(reply.get("head", self.head))
                    for entry in reply["log"]:
                        if entry[0] == self.received + 1:
                            self._pending.append(entry)
                            self.received = entry[0]
                    if reply["log"]:
                        self._pending_event.set()
            except (OSError, TimeoutError, ValueError, sqlwire.ProtocolError):
                self._primary_lost()
                await asyncio.sleep(RETRY_S)
            finally:
                writer.transport.abort()

    def _primary_lost(self) -> None:
        if self.primary_down_since is None:
            self.primary_down_since = time.monotonic()

    async def _applier(self, gen: int) -> None:
        """Apply received entries once they are ``delay_ms`` old (the modelled replication delay)."""
        while self._repl_gen == gen:
            if not self._pending:
                self._pending_event.clear()
                await self._pending_event.wait()
                continue
            due = self._pending[0][1] + self.delay_ms / 1000 - time.time()
            if due > 0:
                await asyncio.sleep(min(due, 0.05))  # re-read the delay often: it may change live
                continue
            await self._apply_due(ignore_delay=False)

    async def _apply_due(self, *, ignore_delay: bool) -> None:
        executor = self._executor
        if executor is None:
            return
        horizon = time.time() - self.delay_ms / 1000
        batch: list[list[Any]] = []
        while self._pending and len(batch) < APPLY_BATCH and (ignore_delay or self._pending[0][1] <= horizon):
            batch.append(self._pending.popleft())
        if batch:
            await asyncio.get_running_loop().run_in_executor(executor, self._apply, batch)

    def _start_replication(self) -> None:
        self._stop_replication_tasks()
        if self.role == "replica":
            self.received = max(self.received, self.lsn)
            gen = self._repl_gen
            self._repl_tasks = [
                asyncio.create_task(self._pull(gen), name=f"sqldb-pull-{self.id}"),
                asyncio.create_task(self._applier(gen), name=f"sqldb-apply-{self.id}"),
            ]

    def _stop_replication_tasks(self) -> list[asyncio.Task[Any]]:
        self._repl_gen += 1
        tasks, self._repl_tasks = self._repl_tasks, []
        for task in tasks:
            task.cancel()
        return tasks

    async def _ended(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Wait for stopped tasks, bounded: a task that lost its cancellation ends by its generation."""
        await wait_ended(tasks, who=self.who, what="its replication tasks", timeout=STOP_WAIT_S)

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

    async def promote(self) -> int:
        """Become the primary: stop following, apply everything received at once; the new head."""
        await self._ended(self._stop_replication_tasks())
        while self._pending and self._executor is not None:
            await self._apply_due(ignore_delay=True)
        self.role, self.following = "primary", None
        self.received = self.head = self.lsn
        self.primary_down_since = None
        return self.lsn

    async def follow(self, primary_id: str, *, upto: int | None = None) -> bool:
        """Become (or stay) a replica of ``primary_id``. ``upto``: the new primary's head at its
        promotion; what this node received beyond it never happened there and is dropped, and if
        it already applied some of it, it is rebuilt (re-seeded, then the log replayed). True if
        it was rebuilt."""
        await self._ended(self._stop_replication_tasks())
        self.role, self.following = "replica", primary_id
        self.primary_down_since = None
        rebuilt = False
        if upto is not None:
            while self._pending and self._pending[-1][0] > upto:
                self._pending.pop()
            self.received = min(self.received, upto)
            if self.lsn > upto:
                if self.up:
                    await self._rebuild()
                    rebuilt = True
                else:
                    self.rebuild_after = upto  # done when it restarts
        if self.up:
            self._start_replication()
        return rebuilt

    async def _rebuild(self) -> None:
        """Throw the data away and start again from the seed; the pull then replays the log."""
        up = self.up
        await self.stop()
        await self.discard()
        self._pending.clear()
        self.received = self.lsn = 0
        if up:
            await self.start()

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.capacity = self._new_capacity()
        if self.rebuild_after is not None:  # demoted while down, and it had run past the new primary
            self.rebuild_after = None
            await self.discard()
        self._pending.clear()
        self.received = 0
        self.primary_down_since = None
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
        if self.role == "replica":
            # A restarted replica follows whoever is primary now.
            self.following = self.ctx.primary_for(self.id) or self.following
            self.received = self.lsn
            self._start_replication()

    async def stop(self) -> None:
        """Crash-like: stop listening, reset every connection, close SQLite and its thread.

        The file stays (a crashed database keeps its disk); ``discard`` deletes it."""
        self.up = False
        await self._ended(self._stop_replication_tasks())
        self._pending.clear()
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
        self._stop_replication_tasks()
        self._pending.clear()
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
        if self.role == "replica":
            head = max(self.head, self.received)
            snap.update(
                following=self.following,
                received=self.received,
                lag=max(0, head - self.lsn),
                lag_ms=round((time.time() - self._pending[0][1]) * 1000) if self._pending else 0,
                delay_ms=self.delay_ms,
            )
        if self.lost_writes:
            snap["lost_writes"] = self.lost_writes
        return snap
