"""The SQL database node's wire protocol, schema, seed data and the web tier's queries (sans-I/O).

Protocol: newline-delimited JSON over TCP (port 5432 on the database node's own address). Any
number of requests may follow one another on a connection; each gets exactly one reply line, in
order::

    → {"id": "r-1f.0", "sql": "SELECT name FROM users WHERE id = ?", "params": [42]}
    ← {"id": "r-1f.0", "rows": [["user42"]], "ms": 2.31}
    ← {"id": "r-1f.1", "error": "no such table: nope", "ms": 0.4}

Every reply to a query carries ``lsn``: the position in the database's change log of the last
write it had applied when it answered (a write's reply: that write's own position, and ``rowid``).
Writes are logged (statement-based replication: the SQL and its parameters, in the ``changelog``
table, in the same transaction as the write); a replica asks its primary for the log with::

    → {"id": "repl", "log_from": 121, "max": 500, "wait_ms": 500}
    ← {"id": "repl", "log": [[121, 1700000000.25, "INSERT ...", "[7, \"hi\"]"], ...], "head": 130, "ms": 0.2}

``wait_ms`` makes it a long poll: with nothing new the primary answers when a write arrives or
the time is up. A replica answers a write with ``error: read-only replica``.

The port is open to anything on the machine, so the node runs only the application's kind of
statement (``core.engine.sqlguard``: a refused one is answered ``error: not allowed: …``), and a
connection whose first line is not a JSON object (an HTTP request a web page made a browser send,
say) is closed unanswered, before its next line is read. A bad line later on is answered with an
error, and the connection goes on.

``ms`` is the time the request spent inside the database (queueing for a connection slot, the
modelled service time and the real SQLite execution). ``id`` is echoed as is: the web tier puts the
client's request id in it, so a query can be traced back to the request that caused it. A reply
line whose ``error`` is ``"overloaded"`` means every connection slot was busy and the queue full.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

PORT = 5432
MAX_LINE = 1 << 20  # bytes in one request or reply line
OP_CHARS = 160  # SQL text kept in a hop's ``op``
OVERLOADED = "overloaded"


class ProtocolError(ValueError):
    pass


READ_ONLY = "read-only replica"


def is_request_line(line: bytes) -> bool:
    """Whether a connection's first line is this protocol's: a JSON object. Anything else (an HTTP
    request line, from a web page that made a browser post to the port, say) ends the connection
    before a further line is read, so nothing that follows it can run."""
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def encode_request(req_id: str, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> bytes:
    return json.dumps({"id": req_id, "sql": sql, "params": list(params)}, separators=(",", ":")).encode() + b"\n"


def encode_log_request(req_id: str, log_from: int, *, max_entries: int = 500, wait_ms: int = 500) -> bytes:
    msg = {"id": req_id, "log_from": log_from, "max": max_entries, "wait_ms": wait_ms}
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def decode_message(line: bytes) -> dict[str, Any]:
    """A request line as a dict: a log request has ``log_from`` (int), a query ``sql`` and ``params``."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError('a request is a JSON object {"id", "sql", "params"}')
    if "log_from" in msg:
        for key in ("log_from", "max", "wait_ms"):
            value = msg.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ProtocolError(f"{key} must be a non-negative integer")
        msg["id"] = str(msg.get("id", ""))
        return msg
    req_id, sql, params = decode_request(line)
    return {"id": req_id, "sql": sql, "params": params}


def decode_request(line: bytes) -> tuple[str, str, list[Any]]:
    """(id, sql, params) of one request line; ProtocolError says what is wrong with it."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError('a request is a JSON object {"id", "sql", "params"}')
    req_id, sql, params = msg.get("id", ""), msg.get("sql"), msg.get("params", [])
    if not isinstance(sql, str) or not sql.strip():
        raise ProtocolError("sql must be a non-empty string")
    if not isinstance(params, list):
        raise ProtocolError("params must be a list")
    return str(req_id), sql, params


def encode_reply(
    req_id: str, *, rows: list[Any] | None = None, error: str | None = None, ms: float, **extra: Any
) -> bytes:
    """One reply line; ``extra`` adds fields such as ``lsn``, ``rowid`` or a log request's ``log``."""
    msg: dict[str, Any] = {"id": req_id}
    if error is not None:
        msg["error"] = error
    elif "log" not in extra:
        msg["rows"] = rows or []
    msg.update(extra)
    msg["ms"] = round(ms, 3)
    return json.dumps(msg, separators=(",", ":"), default=str).encode() + b"\n"


def decode_reply(line: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or ("rows" not in msg and "error" not in msg and "log" not in msg):
        raise ProtocolError("a reply is a JSON object with rows, log or error")
    return msg


def op_text(sql: str) -> str:
    """A query's SQL as a hop shows it: one line, truncated."""
    text = " ".join(sql.split())
    return text if len(text) <= OP_CHARS else text[: OP_CHARS - 1] + "…"


# The photo-sharing application's data ---------------------------------------------------------

SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, bio TEXT NOT NULL, joined_at INTEGER NOT NULL);
CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
                    caption TEXT NOT NULL, photo_url TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE follows (follower_id INTEGER NOT NULL REFERENCES users(id),
                      followee_id INTEGER NOT NULL REFERENCES users(id),
                      PRIMARY KEY (follower_id, followee_id)) WITHOUT ROWID;
CREATE INDEX posts_by_user ON posts(user_id, created_at);
CREATE TABLE feeds (reader_id INTEGER NOT NULL, post_id INTEGER NOT NULL, author TEXT NOT NULL,
                    caption TEXT NOT NULL, photo_url TEXT NOT NULL, created_at INTEGER NOT NULL,
                    PRIMARY KEY (reader_id, created_at, post_id)) WITHOUT ROWID;
CREATE TABLE changelog (lsn INTEGER PRIMARY KEY, t REAL NOT NULL, sql TEXT NOT NULL, params TEXT NOT NULL);
"""

# The application's, not the change log. ``feeds`` is a reader's precomputed feed (denormalised:
# each row a copy of a post), kept only by shards, whose router fans every post out to it.
DATA_TABLES = ("users", "posts", "follows", "feeds")
EPOCH = 1_700_000_000
WORDS = ("sunset", "coffee", "mountain", "cat", "city", "beach", "friends", "dinner", "snow", "garden", "bike", "book")


def seed_rows(users: int, posts: int, follows_per_user: int = 10, seed: int = 2) -> dict[str, Iterator[tuple]]:
    """Deterministic rows for each table, as iterators (executemany consumes them lazily)."""
    rng = random.Random(seed)

    def user_rows() -> Iterator[tuple]:
        for i in range(1, users + 1):
            yield (i, f"user{i}", f"{WORDS[i % len(WORDS)]} lover", EPOCH + i * 60)

    def post_rows() -> Iterator[tuple]:
        for i in range(1, posts + 1):
            uid = rng.randint(1, users)
            yield (i, uid, f"{rng.choice(WORDS)} #{i}", f"/photos/{i}.jpg", EPOCH + i * 30)

    def follow_rows() -> Iterator[tuple]:
        frng = random.Random(seed + 1)
        n = min(follows_per_user, users - 1)
        for i in range(1, users + 1):
            picked = [f for f in frng.sample(range(1, users + 1), n + 1) if f != i][:n]
            for f in picked:
                yield (i, f)

    return {"users": user_rows(), "posts": post_rows(), "follows": follow_rows()}


FEED_ROWS = 10  # a precomputed feed keeps (at least) the newest posts a page shows


def feed_rows(users: int, posts: int, readers: Callable[[int], bool]) -> Iterator[tuple]:
    """The precomputed feed of every reader ``readers`` accepts, from the seed data: (reader, post id,
    author, caption, photo, created_at) of the newest FEED_ROWS posts of the people they follow."""
    rows = seed_rows(users, posts)
    names = {u[0]: u[1] for u in rows["users"]}
    newest: dict[int, list[tuple]] = {}
    for p in rows["posts"]:  # in created_at order: keep each author's last FEED_ROWS
        mine = newest.setdefault(p[1], [])
        mine.append(p)
        if len(mine) > FEED_ROWS:
            del mine[0]
    follows: dict[int, list[int]] = {}
    for follower, followee in rows["follows"]:
        if readers(follower):
            follows.setdefault(follower, []).append(followee)
    for reader, followees in follows.items():
        merged = sorted((p for f in followees for p in newest.get(f, ())), key=lambda p: p[4], reverse=True)
        for p in merged[:FEED_ROWS]:
            yield (reader, p[0], names[p[1]], p[2], p[3], p[4])


INSERTS = {
    "feeds": "INSERT INTO feeds (reader_id, post_id, author, caption, photo_url, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    "users": "INSERT INTO users (id, name, bio, joined_at) VALUES (?, ?, ?, ?)",
    "posts": "INSERT INTO posts (id, user_id, caption, photo_url, created_at) VALUES (?, ?, ?, ?, ?)",
    "follows": "INSERT INTO follows (follower_id, followee_id) VALUES (?, ?)",
}

# What a page needs: the user's profile, then their feed (the newest posts of the people they follow).
PROFILE_SQL = "SELECT id, name, bio FROM users WHERE id = ?"
FEED_SQL = (
    "SELECT p.id, u.name, p.caption, p.photo_url, p.created_at FROM follows f "
    "JOIN posts p ON p.user_id = f.followee_id JOIN users u ON u.id = p.user_id "
    "WHERE f.follower_id = ? ORDER BY p.created_at DESC LIMIT 10"
)
PAGE_QUERIES = (PROFILE_SQL, FEED_SQL)
# A profile page: the user and their own newest posts (where a user looks for what they just posted).
OWN_POSTS_SQL = (
    "SELECT id, caption, photo_url, created_at FROM posts WHERE user_id = ? ORDER BY created_at DESC LIMIT 10"
)
PROFILE_QUERIES = (PROFILE_SQL, OWN_POSTS_SQL)
LOGIN_SQL = "SELECT id FROM users WHERE id = ?"
# A new post; created_at is a parameter (not the database's clock), so replaying the statement on a
# replica gives the very same row.
POST_SQL = "INSERT INTO posts (user_id, caption, photo_url, created_at) VALUES (?, ?, ?, ?)"
LOG_INSERT = "INSERT INTO changelog (lsn, t, sql, params) VALUES (?, ?, ?, ?)"
