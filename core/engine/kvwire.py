"""The key-value database's data model, seed plan and trace texts (sans-I/O).

The same photo-sharing data as the SQL node (``sqlwire.seed_rows``), stored the NoSQL way:
denormalised documents laid out for the pages that read them, so a page is one round trip and no
join::

    user:{id}        JSON {id, name, bio}
    post:{id}        JSON {id, by (the author's name), caption, photo, created_at}
    posts:{uid}      list of the user's post ids, newest first
    feed:{uid}       list of the FEED_LEN newest post documents by the people uid follows,
                     precomputed ("fan-out on write": a new post is pushed to every follower's feed)
    followers:{uid}  set of the ids following uid (whom a new post fans out to)
    lsn              counter incremented by every write: the log position a write returns
    seq:post         the last post id handed out

The price of the denormalisation is on the write side: one post is 2 + 2 × followers commands,
and a renamed user would have to be rewritten in every copy of their posts.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from typing import Any

from core.engine import sqlwire

PORT = 6379
FEED_LEN = 10  # documents kept in each precomputed feed, as the SQL feed query's LIMIT
PROFILE_LEN = 10  # newest posts shown on a profile
LSN_KEY = "lsn"
POST_SEQ_KEY = "seq:post"
SEED_BATCH = 1000  # keys per MSET and commands per pipeline round trip while seeding


def user_key(uid: int) -> str:
    return f"user:{uid}"


def post_key(pid: int) -> str:
    return f"post:{pid}"


def posts_key(uid: int) -> str:
    return f"posts:{uid}"


def feed_key(uid: int) -> str:
    return f"feed:{uid}"


def followers_key(uid: int) -> str:
    return f"followers:{uid}"


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def user_doc(uid: int, name: str, bio: str) -> str:
    return _dumps({"id": uid, "name": name, "bio": bio})


def post_doc(pid: int, by: str, caption: str, photo: str, created_at: int) -> str:
    return _dumps({"id": pid, "by": by, "caption": caption, "photo": photo, "created_at": created_at})


def seed_plan(users: int, posts: int) -> Iterator[tuple[Any, ...]]:
    """The Redis commands (argument tuples) that load ``seed_rows(users, posts)`` into an empty
    database: a few large MSETs, then one RPUSH/SADD per list or set. Send them pipelined."""
    rows = sqlwire.seed_rows(users, posts)
    names: dict[int, str] = {}
    batch: list[Any] = []
    for uid, name, bio, _joined in rows["users"]:
        names[uid] = name
        batch += [user_key(uid), user_doc(uid, name, bio)]
        if len(batch) >= 2 * SEED_BATCH:
            yield ("MSET", *batch)
            batch = []
    by_user: dict[int, list[tuple[int, str]]] = {}  # uid -> [(created_at, doc)], oldest first
    ids_by_user: dict[int, list[int]] = {}
    last_post = 0
    for pid, uid, caption, photo, created_at in rows["posts"]:
        doc = post_doc(pid, names[uid], caption, photo, created_at)
        by_user.setdefault(uid, []).append((created_at, doc))
        ids_by_user.setdefault(uid, []).append(pid)
        last_post = max(last_post, pid)
        batch += [post_key(pid), doc]
        if len(batch) >= 2 * SEED_BATCH:
            yield ("MSET", *batch)
            batch = []
    if batch:
        yield ("MSET", *batch)
    for uid, ids in ids_by_user.items():
        yield ("RPUSH", posts_key(uid), *reversed(ids))  # seed ids rise with created_at
    followees: dict[int, list[int]] = {}
    followers: dict[int, list[int]] = {}
    for follower, followee in rows["follows"]:
        followees.setdefault(follower, []).append(followee)
        followers.setdefault(followee, []).append(follower)
    for uid, fans in followers.items():
        yield ("SADD", followers_key(uid), *fans)
    for uid, people in followees.items():
        docs = newest(by_user.get(p, [])[-FEED_LEN:] for p in people)
        if docs:
            yield ("RPUSH", feed_key(uid), *docs)
    yield ("SET", LSN_KEY, 0)
    yield ("SET", POST_SEQ_KEY, last_post)


def newest(streams: Iterable[Iterable[tuple[int, str]]], n: int = FEED_LEN) -> list[str]:
    """The n newest documents of several (created_at, doc) lists, newest first."""
    return [doc for _, doc in heapq.nlargest(n, (item for s in streams for item in s), key=lambda i: i[0])]


# What a trace hop shows: the commands of one round trip (the lsn bookkeeping is left out).


def profile_op(uid: int) -> str:
    return f"GET {user_key(uid)}; SORT {posts_key(uid)} BY nosort LIMIT 0 {PROFILE_LEN} GET post:*"


def feed_op(uid: int) -> str:
    return f"GET {user_key(uid)}; LRANGE {feed_key(uid)} 0 {FEED_LEN - 1}"


def login_op(uid: int) -> str:
    return f"EXISTS {user_key(uid)}"


def post_op(uid: int, pid: int, fans: int) -> str:
    return (
        f"INCR {POST_SEQ_KEY}; SMEMBERS {followers_key(uid)}; GET {user_key(uid)} → MULTI; SET {post_key(pid)}; "
        f"LPUSH {posts_key(uid)}; LPUSH+LTRIM feed:* ×{fans}; INCR {LSN_KEY}; EXEC"
    )
