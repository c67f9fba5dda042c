"""The replica side of a SQL database node: following a primary's change log, and the role changes.

Replication (statement-based, asynchronous): the primary writes every change into its
``changelog`` table in the write's own transaction, numbering it with a log position (``lsn``). A
replica pulls the log over the same protocol from its own address (a long poll, see
``sqlwire``), keeps what it received in memory, and applies each entry ``delay_ms`` after the
primary committed it (the modelled distance), into its data and its own ``changelog``. So
``received`` may run ahead of ``lsn`` (applied); a promoted replica first applies everything it
received. A replica refuses writes. Which node is primary, and failover, belong to
``core.engine.replication``; the node only does what it is told (``promote``, ``follow``).

``SqlReplica`` is a mixin of ``SqlDbNode`` (``core.engine.nodes.sqldb``), not an object the node
owns: the replication manager, the benchmarks and the tests read and set these fields on the node
itself (``node.received``, ``node.delay_ms``, ``node.role``), and a mixin keeps those names with
no forwarding. The server owns the SQLite thread, the connection and ``lsn``; this side uses them.

The primary's side of the log (answering a pull, waking the long polls on a write) stays with the
server: it is one more message of the server's protocol, read from the ``changelog`` the server
writes in each write's transaction, and any node answers it whatever its role. This module is the
log's client only.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from core.engine import sqlguard, sqlwire
from core.engine.lifecycle import wait_ended

if TYPE_CHECKING:
    from core.engine.context import NodeContext

log = logging.getLogger(__name__)
PULL_WAIT_MS = 500  # a replica's long poll for new log entries
PULL_MAX = 1000  # entries per pull
APPLY_BATCH = 500  # entries a replica applies in one transaction
RETRY_S = 0.2  # a replica's pause before reconnecting to its primary
STOP_WAIT_S = 2.0  # the longest a stop waits for the replication tasks to end


class SqlReplica:
    """Following a primary (``promote``, ``follow``); mixed into ``SqlDbNode`` before ``Node``."""

    # What it uses of the node: Node's fields and lifecycle, and the server's SQLite thread,
    # connection, log position and row count (core.engine.nodes.sqldb).
    id: str
    who: str
    address: str
    up: bool
    ctx: NodeContext
    params: dict[str, Any]
    lsn: int
    rows: int
    _executor: ThreadPoolExecutor | None
    _conn: sqlite3.Connection | None
    _guard: sqlguard.Guard
    _gate: sqlguard.Gate
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]
    discard: Callable[[], Awaitable[None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Role and whom to follow outlive restarts (the replication manager sets them); what was
        # received but not applied is memory, lost with a crash.
        self.role = "replica" if self.params.get("replica_of") else "primary"
        self.following: str | None = self.params.get("replica_of") or None
        self.delay_ms = float(self.params.get("delay_ms", 0.0))
        self.received = 0  # last change received from the primary (a replica)
        self.head = 0  # the primary's last position as last seen
        self.primary_down_since: float | None = None  # when this replica last lost its primary
        self.lost_writes = 0  # set on an old primary: writes it accepted that nobody received
        self.rebuild_after: int | None = None  # on restart, rebuild if the log runs past this
        self._pending: collections.deque[list[Any]] = collections.deque()
        self._pending_event = asyncio.Event()
        self._repl_tasks: list[asyncio.Task[Any]] = []
        self._repl_gen = 0  # bumped whenever replication stops: the tasks of older generations end

    # Following the primary -------------------------------------------------------------------
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
        for entry in self._pending:
            if len(batch) >= APPLY_BATCH or not (ignore_delay or entry[1] <= horizon):
                break
            batch.append(entry)
        if batch:
            # Taken off _pending only once applied: a cancel while the batch waits for the SQLite
            # thread (a promotion stops this task) must not lose it. Applying is idempotent.
            await asyncio.get_running_loop().run_in_executor(executor, self._apply, self._judged(batch))
            while self._pending and self._pending[0][0] <= self.lsn:
                self._pending.popleft()

    def _judged(self, entries: list[list[Any]]) -> list[tuple[list[Any], Any, sqlguard.Statement | str]]:
        """Each entry with its parameters and what the guard makes of it (a write, or why it is not
        run): the primary logs only statements it let through, so this refuses only a forged entry."""
        judged: list[tuple[list[Any], Any, sqlguard.Statement | str]] = []
        for entry in entries:
            try:
                params = json.loads(entry[3])
                judged.append((entry, params, self._guard.check(entry[2], params)))
            except (sqlguard.Refused, sqlite3.Error, ValueError, TypeError) as exc:
                judged.append((entry, None, str(exc) or type(exc).__name__))
        return judged

    def _apply(self, entries: list[tuple[list[Any], Any, sqlguard.Statement | str]]) -> None:
        """Replay log entries from the primary, in order, in one transaction (in the SQLite thread)."""
        assert self._conn is not None
        conn = self._conn
        conn.execute("BEGIN")
        last = self.lsn
        changed = 0
        try:
            for (lsn, t, sql, params), values, stmt in entries:
                if lsn <= last:
                    continue
                try:
                    if isinstance(stmt, str):
                        raise sqlite3.DatabaseError(stmt)
                    # A replica writes what its primary wrote, under the rule a caller's write obeys.
                    before = conn.total_changes  # SQLite's own count (rowcount misses WITH …)
                    with self._gate.caller(writes=True):
                        conn.execute(sql, values).fetchall()
                    changed += sqlguard.row_change(stmt, conn.total_changes - before)
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

    # The replication tasks, by generation ----------------------------------------------------
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

    # The server's lifecycle, as the replica side sees it -------------------------------------
    async def _replica_starting(self) -> None:
        """Before the server opens its file: rebuild if demoted while down, forget what was received."""
        if self.rebuild_after is not None:  # demoted while down, and it had run past the new primary
            self.rebuild_after = None
            await self.discard()
        self._pending.clear()
        self.received = 0
        self.primary_down_since = None

    def _replica_started(self) -> None:
        """The server is up: a replica starts following."""
        if self.role == "replica":
            # A restarted replica follows whoever is primary now.
            self.following = self.ctx.primary_for(self.id) or self.following
            self.received = self.lsn
            self._start_replication()

    async def _replica_stopping(self) -> None:
        """The server stops: the tasks end; what was received but not applied is lost."""
        await self._ended(self._stop_replication_tasks())
        self._pending.clear()

    def _replica_forced(self) -> None:
        """The server is forced: the tasks are cancelled and end by their generation."""
        self._stop_replication_tasks()
        self._pending.clear()

    def _replica_snapshot(self) -> dict[str, Any]:
        """A replica's gauges (and an old primary's lost writes) for the node's frame entry."""
        snap: dict[str, Any] = {}
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

    # Role changes (told by core.engine.replication) -----------------------------------------
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
