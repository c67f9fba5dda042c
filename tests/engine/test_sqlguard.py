"""What a SQL node lets a caller run (core.engine.sqlguard), without sockets: SQLite's authorizer judges."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.engine import sqlguard, sqlwire
from core.engine.nodes.router import (
    AUTHOR_SQL,
    FEED_PART_SQL,
    FEED_READ_SQL,
    FOLLOWEES_SQL,
    FOLLOWERS_SQL,
    POST_WITH_ID_SQL,
)

POST = ("INSERT INTO posts (user_id, caption, photo_url, created_at) SELECT 1, 'x', '/x.jpg', 1", [])

# What the application's tier sends (web tier, shard router, resharding), with parameters.
WORKLOAD = [
    (sqlwire.PROFILE_SQL, [1], False),
    (sqlwire.FEED_SQL, [1], False),
    (sqlwire.OWN_POSTS_SQL, [1], False),
    (sqlwire.LOGIN_SQL, [1], False),
    (sqlwire.POST_SQL, [1, "hi", "/p.jpg", 1], True),
    (FOLLOWEES_SQL, [1], False),
    (FEED_PART_SQL.format(marks="?, ?"), [1, 2], False),
    (POST_WITH_ID_SQL, [9, 1, "hi", "/p.jpg", 1], True),
    (FEED_READ_SQL, [1], False),
    (FOLLOWERS_SQL, [1], False),
    (AUTHOR_SQL, [1], False),
    ("SELECT id, user_id, caption, photo_url, created_at FROM posts WHERE user_id IN (?, ?)", [1, 2], False),
    ("INSERT OR IGNORE INTO follows (follower_id, followee_id) VALUES (?, ?), (?, ?)", [1, 2, 3, 4], True),
    ("DELETE FROM feeds WHERE reader_id IN (?)", [1], True),
    ("SELECT count(*) FROM posts WHERE user_id = 7 AND caption = 'hi'", [], False),
]


@pytest.fixture
def guard() -> Iterator[sqlguard.Guard]:
    g = sqlguard.Guard()
    yield g
    g.close()


@pytest.mark.parametrize(("sql", "params", "write"), WORKLOAD)
def test_it_lets_the_workloads_statements_through_and_knows_which_write(guard, sql, params, write):
    assert guard.check(sql, params).write is write


@pytest.mark.parametrize(
    "sql",
    [
        "WITH x AS (SELECT 1) INSERT INTO posts (user_id, caption, photo_url, created_at) "
        "SELECT 1, 'x', '/x', 1 FROM x",
        "insert into posts (user_id, caption, photo_url, created_at) values (1, 'x', '/x', 1)",
        "-- a comment first\nINSERT INTO posts (user_id, caption, photo_url, created_at) VALUES (1, 'x', '/x', 1)",
        "/* a comment */ DELETE FROM posts WHERE id = 1",
        "  \n\tUPDATE users SET bio = 'x' WHERE id = 1",
        "REPLACE INTO users (id, name, bio, joined_at) VALUES (1, 'a', 'b', 1)",
        "INSERT OR REPLACE INTO users (id, name, bio, joined_at) VALUES (1, 'a', 'b', 1)",
        "INSERT INTO posts (id, user_id, caption, photo_url, created_at) VALUES (1, 1, 'x', '/x', 1) "
        "ON CONFLICT DO UPDATE SET caption = 'y'",
        "WITH x AS (SELECT 1) DELETE FROM follows WHERE follower_id IN (SELECT * FROM x)",
    ],
)
def test_it_knows_a_write_however_it_is_spelt(guard, sql):
    assert guard.check(sql).write


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("VACUUM INTO '/tmp/scalelab-guard-test.db'", "other than SELECT"),
        ("VACUUM", "other than SELECT"),
        ("ATTACH '/tmp/scalelab-guard-test.db' AS other", "ATTACH"),
        ("DETACH other", "DETACH"),
        ("PRAGMA writable_schema = ON", "PRAGMA writable_schema"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
        ("pragma user_version", "PRAGMA user_version"),
        ("SELECT * FROM pragma_table_info('users')", "not allowed"),
        ("SELECT load_extension('/tmp/evil.so')", "function load_extension"),
        ("SELECT randomblob(1000000000)", "function randomblob"),
        ("SELECT * FROM sqlite_master", "table sqlite_master"),
        ("SELECT sql FROM changelog", "table changelog"),
        ("INSERT INTO changelog (lsn, t, sql, params) VALUES (99, 0, 'DELETE FROM users', '[]')", "table changelog"),
        ("CREATE TABLE t (x)", "changing the schema"),
        ("CREATE TEMP TABLE t (x)", "not allowed"),
        ("DROP TABLE users", "changing the schema"),
        ("ALTER TABLE users ADD COLUMN x", "not allowed"),
        ("CREATE TEMP TRIGGER t AFTER INSERT ON posts BEGIN SELECT 1; END", "CREATE TEMP TRIGGER"),
        ("BEGIN", "TRANSACTION"),
        ("SAVEPOINT s", "SAVEPOINT"),
        ("ANALYZE", "not allowed"),
        ("REINDEX", "REINDEX"),
        ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "RECURSIVE"),
    ],
)
def test_it_refuses_what_the_application_never_sends_and_says_what(guard, sql, why):
    with pytest.raises(sqlguard.Refused, match="not allowed") as refused:
        guard.check(sql)
    assert why in str(refused.value)
    assert not Path("/tmp/scalelab-guard-test.db").exists()


def test_a_refusal_is_remembered_and_still_refused(guard):
    for _ in range(3):
        with pytest.raises(sqlguard.Refused):
            guard.check("VACUUM INTO '/tmp/scalelab-guard-test.db'")


def test_it_passes_on_sqlites_own_errors(guard):
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        guard.check("SELECT * FROM nope")
    with pytest.raises(sqlite3.ProgrammingError, match="one statement at a time"):
        guard.check("SELECT 1; VACUUM INTO '/tmp/scalelab-guard-test.db'")
    with pytest.raises(sqlite3.ProgrammingError, match="bindings"):
        guard.check(sqlwire.PROFILE_SQL, [])


def test_a_row_change_follows_what_sqlite_says_the_statement_does(guard):
    assert sqlguard.row_change(guard.check(*POST), 1) == 1
    assert sqlguard.row_change(guard.check("WITH x AS (SELECT 1) DELETE FROM posts WHERE id = 1"), 1) == -1
    assert sqlguard.row_change(guard.check("UPDATE users SET bio = 'x'"), 5) == 0
    assert sqlguard.row_change(guard.check("SELECT 1"), -1) == 0


def test_the_gate_refuses_a_write_on_a_read_only_path_and_runs_the_nodes_own_statements():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(sqlwire.SCHEMA)
    gate = sqlguard.Gate()
    gate.install(conn)
    conn.execute(sqlwire.LOG_INSERT, (1, 0.0, "x", "[]"))  # the node's own: unrestricted
    with gate.caller(writes=False), pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        conn.execute("WITH x AS (SELECT 1) INSERT INTO users (id, name, bio, joined_at) SELECT 1, 'a', 'b', 1 FROM x")
    with gate.caller(writes=True):
        conn.execute(sqlwire.INSERTS["users"], (1, "a", "b", 1))
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            conn.execute("DELETE FROM changelog")
    assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
    conn.close()


def test_the_gate_interrupts_a_callers_statement_that_runs_too_long():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(sqlwire.SCHEMA)
    conn.executemany(sqlwire.INSERTS["users"], ((i, "u", "b", 1) for i in range(1, 2001)))
    gate = sqlguard.Gate(run_limit_s=0.1)
    gate.install(conn)
    cross = "SELECT count(*) FROM users a, users b, users c"
    with gate.caller(writes=False), pytest.raises(sqlite3.OperationalError, match="interrupted"):
        conn.execute(cross).fetchall()
    with gate.caller(writes=False):
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (2000,)
    conn.close()
