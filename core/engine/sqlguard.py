"""What a SQL node lets its callers run, as SQLite itself sees each statement (sans-I/O).

The node's port is open to anything on the machine, so it runs only what the application's own
tier sends: one ``SELECT``, ``INSERT``, ``UPDATE`` or ``DELETE`` on the application's tables
(``sqlwire.DATA_TABLES``), with a few plain SQL functions. Nothing that attaches a file, vacuums
into one, changes a pragma, opens a transaction, creates or drops anything, recurses, reads
SQLite's own tables or the change log, or calls any other function. Whether a statement writes is
what SQLite says it does (an ``INSERT``, ``UPDATE`` or ``DELETE`` action), never its first word, so
``WITH … INSERT`` or a comment in front is a write like any other, and a replica refuses it.

Two parts, one rule (``refusal``), SQLite's authorizer the judge in both:

- ``Guard.check`` compiles a caller's statement (``EXPLAIN``: compiled, never run) on an in-memory
  copy of the schema under a recording authorizer, before the statement waits for a connection
  slot: a refused statement never reaches the database, and the node knows a write before it runs
  it. ``VACUUM`` asks the authorizer nothing while it compiles, so a statement must show a
  ``SELECT``, ``INSERT``, ``UPDATE`` or ``DELETE`` action to be let through at all. Results are kept
  per SQL text (bounded): the tier sends a few dozen distinct statements.
- ``Gate`` is the authorizer of the node's real connection: while a caller's statement is prepared
  (inside ``Gate.caller``) it applies the same rule, writes only where the caller may write, and a
  progress handler interrupts a statement that runs longer than ``RUN_LIMIT_S`` (a cross join of
  the whole database must not take the node's only SQLite thread for good). Outside it, the node's
  own statements (seeding, the change log, transactions) run unrestricted.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.engine import sqlwire

RUN_LIMIT_S = 3.0  # the longest a caller's statement may run in SQLite (a page's query takes ms)
PROGRESS_OPS = 100_000  # SQLite VM steps between looks at the clock (about a millisecond)
KNOWN_MAX = 1024  # statements whose verdict is kept
TABLES = frozenset(sqlwire.DATA_TABLES)
# Plain functions: no I/O, no unbounded allocation (randomblob, zeroblob, printf widths), no
# extension loading, nothing about SQLite itself.
FUNCTIONS = frozenset(
    {
        "abs",
        "avg",
        "coalesce",
        "count",
        "ifnull",
        "instr",
        "length",
        "like",
        "lower",
        "ltrim",
        "max",
        "min",
        "nullif",
        "round",
        "rtrim",
        "substr",
        "sum",
        "total",
        "trim",
        "typeof",
        "upper",
    }
)

_WRITES = {sqlite3.SQLITE_INSERT: "insert", sqlite3.SQLITE_UPDATE: "update", sqlite3.SQLITE_DELETE: "delete"}
# The authorizer's action codes, to name what was refused.
_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in (
        "CREATE_INDEX",
        "CREATE_TABLE",
        "CREATE_TEMP_INDEX",
        "CREATE_TEMP_TABLE",
        "CREATE_TEMP_TRIGGER",
        "CREATE_TEMP_VIEW",
        "CREATE_TRIGGER",
        "CREATE_VIEW",
        "DELETE",
        "DROP_INDEX",
        "DROP_TABLE",
        "DROP_TEMP_INDEX",
        "DROP_TEMP_TABLE",
        "DROP_TEMP_TRIGGER",
        "DROP_TEMP_VIEW",
        "DROP_TRIGGER",
        "DROP_VIEW",
        "INSERT",
        "PRAGMA",
        "READ",
        "SELECT",
        "TRANSACTION",
        "UPDATE",
        "ATTACH",
        "DETACH",
        "ALTER_TABLE",
        "REINDEX",
        "ANALYZE",
        "CREATE_VTABLE",
        "DROP_VTABLE",
        "FUNCTION",
        "SAVEPOINT",
        "RECURSIVE",
    )
    if hasattr(sqlite3, f"SQLITE_{name}")
}
NOT_A_QUERY = "a statement other than SELECT, INSERT, UPDATE or DELETE"
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema"})


class Refused(Exception):
    """A statement the node does not run; the message says why (the caller's error reply)."""


class ReadOnly(Refused):
    """A write where the caller may only read (a replica)."""


def refusal(action: int, arg1: str | None, arg2: str | None, db: str | None, *, writes: bool) -> str | None:
    """Why one authorizer action is refused (None: allowed). ``writes``: may the statement write."""
    if action == sqlite3.SQLITE_SELECT:
        return None
    if action == sqlite3.SQLITE_READ:
        # db None: a common table expression's or a subquery's own columns, not a stored table.
        return None if db is None or (db == "main" and arg1 in TABLES) else f"table {arg1}"
    if action in _WRITES:
        if arg1 in _SCHEMA_TABLES:  # CREATE, DROP and ALTER write SQLite's own table
            return "changing the schema"
        if db != "main" or arg1 not in TABLES:
            return f"table {arg1}"
        return None if writes else sqlwire.READ_ONLY
    if action == sqlite3.SQLITE_FUNCTION:
        return None if (arg2 or "").lower() in FUNCTIONS else f"function {arg2}"
    what = _ACTIONS.get(action, f"action {action}")
    return f"{what} {arg1}" if action == sqlite3.SQLITE_PRAGMA and arg1 else what


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement the node runs: whether it writes, and how (the first write SQLite saw)."""

    write: bool
    change: str | None = None  # "insert" | "update" | "delete"


READ = Statement(write=False)


def row_change(stmt: Statement, changes: int) -> int:
    """How a statement changed the number of rows held: + for an insert, - for a delete."""
    count = max(0, changes)
    return count if stmt.change == "insert" else -count if stmt.change == "delete" else 0


def _refused(reason: str) -> Refused:
    return ReadOnly(reason) if reason == sqlwire.READ_ONLY else Refused(f"not allowed: {reason}")


class Guard:
    """Judges a caller's statements before they run: ``check(sql, params)``. One per node, used from
    its event loop only."""

    def __init__(self) -> None:
        # No statement cache: a statement SQLite reuses is not shown to the authorizer again.
        self._conn = sqlite3.connect(":memory:", isolation_level=None, cached_statements=0, check_same_thread=False)
        self._conn.executescript(sqlwire.SCHEMA)
        self._known: OrderedDict[str, Statement | str] = OrderedDict()  # a verdict, or why refused

    def check(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> Statement:
        """What ``sql`` is (a read or a write, and how). Raises Refused for a statement the node does
        not run, sqlite3.Error for one SQLite cannot compile (the caller's error either way)."""
        verdict = self._known.get(sql)
        if verdict is None:
            verdict = self._compile(sql, params)
            self._known[sql] = verdict
            if len(self._known) > KNOWN_MAX:
                self._known.popitem(last=False)
        else:
            self._known.move_to_end(sql)
        if isinstance(verdict, str):
            raise _refused(verdict)
        return verdict

    def _compile(self, sql: str, params: list[Any] | tuple[Any, ...]) -> Statement | str:
        seen: list[int] = []
        why: list[str] = []

        def record(action: int, arg1: str | None, arg2: str | None, db: str | None, _trigger: str | None) -> int:
            reason = refusal(action, arg1, arg2, db, writes=True)
            if reason is not None:
                why.append(reason)
                return sqlite3.SQLITE_DENY
            seen.append(action)
            return sqlite3.SQLITE_OK

        self._conn.set_authorizer(record)
        try:
            # EXPLAIN compiles the statement and lists its program: nothing of it runs.
            self._conn.execute("EXPLAIN " + sql, params).fetchall()
        except sqlite3.DatabaseError:
            if why:  # the authorizer's denial, named
                return why[0]
            raise
        finally:
            self._conn.set_authorizer(None)
        if why:
            return why[0]
        change = next((_WRITES[a] for a in seen if a in _WRITES), None)
        if change is None and sqlite3.SQLITE_SELECT not in seen:
            return NOT_A_QUERY  # VACUUM, for one, asks the authorizer nothing while it compiles
        return Statement(write=change is not None, change=change)

    def close(self) -> None:
        self._conn.close()


class Gate:
    """The authorizer and progress handler of a node's real connection (``install``). A caller's
    statement is prepared and run inside ``caller(writes=...)``; the node's own, outside it."""

    def __init__(self, run_limit_s: float = RUN_LIMIT_S) -> None:
        self.run_limit_s = run_limit_s
        self._writes: bool | None = None  # None: the node's own statements
        self._deadline = 0.0

    def install(self, conn: sqlite3.Connection) -> None:
        conn.set_authorizer(self._authorize)
        conn.set_progress_handler(self._progress, PROGRESS_OPS)

    @contextlib.contextmanager
    def caller(self, *, writes: bool) -> Iterator[None]:
        """Within: statements prepared are a caller's (the rule applies) and each may run RUN_LIMIT_S."""
        self._writes, self._deadline = writes, time.monotonic() + self.run_limit_s
        try:
            yield
        finally:
            self._writes = None

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None, _t: str | None) -> int:
        if self._writes is None:
            return sqlite3.SQLITE_OK
        ok = refusal(action, arg1, arg2, db, writes=self._writes) is None
        return sqlite3.SQLITE_OK if ok else sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        # Non-zero interrupts the statement ("interrupted"): only a caller's, past its limit.
        return int(self._writes is not None and time.monotonic() > self._deadline)
