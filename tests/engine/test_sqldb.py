"""The SQL database node and the web tier on top of it, on real loopback sockets."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

import pytest

from core.engine import sqlwire
from core.engine.lab import Lab
from core.engine.nodes.clients import DbError, DbPool
from core.engine.workload import Request
from tests.engine.topologies import stage1, stage2


def home(flavor: str, user: int = 7) -> Request:
    """The home page (profile + feed: two queries) for one user, as a client of that flavor asks."""
    path = "/" if flavor == "web" else "/api/feed"
    return Request("GET", path, None, user, False, "feed", (("user", str(user)),))


async def ask(address: str, lines: list[bytes]) -> list[dict]:
    """Send raw protocol lines on one connection; the decoded replies, in order."""
    reader, writer = await asyncio.open_connection(address, sqlwire.PORT)
    try:
        for line in lines:
            writer.write(line)
        await writer.drain()
        return [sqlwire.decode_reply(await reader.readline()) for _ in lines]
    finally:
        writer.close()


async def test_the_database_answers_sql_over_its_protocol(network):
    async with Lab(stage2(users=50, posts=400), network=network) as lab:
        replies = await ask(
            lab.address("db"),
            [
                sqlwire.encode_request("a", "SELECT count(*) FROM users"),
                sqlwire.encode_request("b", "SELECT count(*) FROM posts"),
                sqlwire.encode_request("c", sqlwire.PROFILE_SQL, [7]),
                sqlwire.encode_request("d", "SELECT * FROM nope"),
                b"not json\n",
                sqlwire.encode_request(
                    "e",
                    "INSERT INTO posts (user_id, caption, photo_url, created_at) VALUES (?, ?, ?, ?)",
                    [7, "hi", "/p.jpg", 1],
                ),
                sqlwire.encode_request("f", "SELECT count(*) FROM posts WHERE user_id = 7 AND caption = 'hi'"),
            ],
        )
        assert [r["id"] for r in replies] == ["a", "b", "c", "d", "", "e", "f"]
        assert replies[0]["rows"] == [[50]] and replies[1]["rows"] == [[400]]
        assert replies[2]["rows"] == [[7, "user7", replies[2]["rows"][0][2]]]
        assert "no such table" in replies[3]["error"] and "bad request" in replies[4]["error"]
        assert replies[6]["rows"] == [[1]]  # the write landed
        assert all(r["ms"] >= 0 for r in replies)
        # The database sees the web server calling from the web server's own address.
        pool = DbPool(lab.address("db"), sqlwire.PORT, source=lab.address("web"))
        rows, ms = await pool.query("x", "SELECT count(*) FROM follows")
        assert rows == [[500]] and ms > 0
        pool.close()
        assert lab.frame()["nodes"]["db"]["queries"] >= 6


async def test_seeding_a_few_thousand_users_is_quick(network):
    lab = Lab(stage2(users=3000, posts=30000), network=network)
    start = time.monotonic()
    async with lab:
        took = time.monotonic() - start
        pool = DbPool(lab.address("db"), sqlwire.PORT, source=lab.address("web"))
        assert (await pool.query("n", "SELECT count(*) FROM posts"))[0] == [[30000]]
        pool.close()
    assert took < 1.5, f"the lab took {took:.2f} s to start"


async def test_a_web_request_shows_its_queries_as_db_hops_with_their_sql(network):
    async with Lab(stage2(), network=network) as lab:
        lab.frame()
        await lab.nodes["browser"].request(home("web"))
        await lab.nodes["phone"].request(home("mobile"))
        frame = lab.frame()
        assert len(frame["samples"]) == 2
        for sample in frame["samples"]:
            assert sample["ok"]
            client_hop = next(h for h in sample["hops"] if h["dst"] == "web")
            db_hops = [h for h in sample["hops"] if h["src"] == "web"]
            assert [h["dst"] for h in db_hops] == ["db", "db"]
            assert [h["proto"] for h in db_hops] == ["sql", "sql"]
            assert db_hops[0]["op"] == sqlwire.PROFILE_SQL and db_hops[0]["status"] == "1 row"
            assert db_hops[1]["op"].startswith("SELECT p.id") and "JOIN" in db_hops[1]["op"]
            # The queries happen inside the web hop.
            assert client_hop["at_ms"] <= db_hops[0]["at_ms"] <= db_hops[1]["at_ms"]
            assert db_hops[1]["at_ms"] + db_hops[1]["ms"] <= client_hop["at_ms"] + client_hop["ms"] + 1
        assert frame["edges"]["web>db"]["rps"] > 0
        assert frame["nodes"]["db"]["rps"] > 0


async def test_the_request_id_travels_to_the_database(network):
    async with Lab(stage2(), network=network) as lab:
        seen: list[str] = []
        db = lab.nodes["db"]
        original = db._answer

        async def spy(line: bytes) -> bytes:
            seen.append(sqlwire.decode_request(line)[0])
            return await original(line)

        db._answer = spy
        await lab.nodes["phone"].request(home("mobile"))
        assert len(seen) == 2 and seen[0].startswith("r-") and seen[0].endswith(".0") and seen[1].endswith(".1")


async def test_without_a_database_edge_the_web_server_answers_as_in_stage_1(network):
    async with Lab(stage1(), network=network) as lab:
        lab.frame()
        await lab.nodes["phone"].request(home("mobile"))
        [sample] = lab.frame()["samples"]
        assert sample["ok"] and [h["dst"] for h in sample["hops"]][-1] == "web"


async def test_killing_the_database_fails_the_web_tier_and_a_restart_recovers_it(network):
    async with Lab(stage2(), network=network) as lab:
        await lab.nodes["phone"].request(home("mobile"))  # the pool now holds a connection to the database
        await lab.command({"action": "kill", "node": "db"})
        assert [e["kind"] for e in lab.frame()["events"]][-1] == "node_killed"
        for _ in range(3):
            await lab.nodes["phone"].request(home("mobile"))
        frame = lab.frame()
        assert frame["nodes"]["db"]["up"] is False
        for sample in frame["samples"]:
            assert not sample["ok"]
            web_hop = next(h for h in sample["hops"] if h["dst"] == "web")
            db_hop = next(h for h in sample["hops"] if h["dst"] == "db")
            assert web_hop["status"] == "503"
            assert not db_hop["ok"] and db_hop["status"] == "connection refused"
        assert frame["edges"]["web>db"]["err_rps"] > 0
        path = lab.nodes["db"].path
        assert path and os.path.exists(path), "a crash keeps the database's file"

        await lab.command({"action": "restart", "node": "db"})
        await lab.nodes["phone"].request(home("mobile"))
        [sample] = lab.frame()["samples"]
        assert sample["ok"]


async def test_a_slowed_database_slows_every_page(network):
    async with Lab(stage2(db_service_ms=0.5), network=network) as lab:
        await lab.command({"action": "slow", "node": "db", "ms": 60})
        lab.frame()
        await lab.nodes["phone"].request(home("mobile"))
        frame = lab.frame()
        [sample] = frame["samples"]
        db_hops = [h for h in sample["hops"] if h["dst"] == "db"]
        assert all(h["ms"] >= 60 for h in db_hops)
        assert sample["ms"] >= 120
        assert frame["nodes"]["db"]["slow_ms"] == 60


async def test_a_failed_query_is_a_500(network, monkeypatch):
    async with Lab(stage2(), network=network) as lab:
        with pytest.raises(DbError) as info:
            await lab.nodes["web"].dal._pool("db").query("q", "SELECT * FROM nope")
        assert not info.value.unavailable and "no such table" in info.value.status
        # The web tier answers 500 when a page's query fails (the database itself is fine).
        monkeypatch.setattr(sqlwire, "PAGE_QUERIES", ("SELECT * FROM nope WHERE 1 = ?",))
        lab.frame()
        await lab.nodes["phone"].request(home("mobile"))
        [sample] = lab.frame()["samples"]
        assert next(h for h in sample["hops"] if h["dst"] == "web")["status"] == "500"
        assert lab.nodes["db"].up


async def test_it_refuses_vacuum_into_a_file_and_goes_on_serving(network, tmp_path):
    target = tmp_path / "copy.db"
    async with Lab(stage2(users=20, posts=50), network=network) as lab:
        refused, after = await ask(
            lab.address("db"),
            [
                sqlwire.encode_request("v", f"VACUUM INTO '{target}'"),
                sqlwire.encode_request("n", "SELECT count(*) FROM users"),
            ],
        )
        assert refused["id"] == "v" and refused["error"].startswith("not allowed")
        assert after["rows"] == [[20]]  # the same connection goes on
        assert lab.nodes["db"].up
    assert not target.exists()


REFUSED = [
    "ATTACH '{dir}/other.db' AS other",
    "VACUUM",
    "PRAGMA writable_schema = ON",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "SELECT load_extension('{dir}/evil.so')",
    "BEGIN",
    "CREATE TABLE t (x)",
    "DROP TABLE follows",
    "SELECT sql FROM sqlite_master",
    "INSERT INTO changelog (lsn, t, sql, params) VALUES (9999, 0, 'DELETE FROM users', '[]')",
]


async def test_it_refuses_what_the_application_never_sends(network, tmp_path):
    async with Lab(stage2(users=20, posts=50), network=network) as lab:
        statements = [sql.format(dir=tmp_path) for sql in REFUSED]
        replies = await ask(lab.address("db"), [sqlwire.encode_request(str(i), s) for i, s in enumerate(statements)])
        for sql, reply in zip(statements, replies, strict=True):
            assert reply["error"].startswith("not allowed"), (sql, reply)
        pool = DbPool(lab.address("db"), sqlwire.PORT, source=lab.address("web"))
        try:
            with pytest.raises(DbError, match="not allowed"):  # the web tier's client: an error reply
                await pool.query("x", statements[0])
            assert (await pool.query("n", "SELECT count(*) FROM follows"))[0] == [[200]]
        finally:
            pool.close()
        probe = sqlite3.connect(lab.nodes["db"].path)
        try:
            assert probe.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert probe.execute("PRAGMA user_version").fetchone() == (0,)
            assert probe.execute("SELECT count(*) FROM changelog").fetchone() == (0,)
            assert probe.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone() == (0,)
        finally:
            probe.close()
    assert list(tmp_path.iterdir()) == []


async def test_a_connection_that_starts_like_http_is_closed_before_its_body_runs(network):
    """A web page can make a browser POST to 127.A.B.x:5432; its body lines must never run."""
    async with Lab(stage2(users=20, posts=50), network=network) as lab:
        body = sqlwire.encode_request("evil", sqlwire.POST_SQL, [1, "from a web page", "/x.jpg", 1])
        reader, writer = await asyncio.open_connection(lab.address("db"), sqlwire.PORT)
        writer.write(
            b"POST / HTTP/1.1\r\nHost: " + lab.address("db").encode() + b":5432\r\n"
            b"Content-Type: text/plain\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, unanswered
        writer.close()
        [count] = await ask(lab.address("db"), [sqlwire.encode_request("n", "SELECT count(*) FROM posts")])
        assert count["rows"] == [[50]]  # the body's INSERT never ran
        assert lab.nodes["db"].lsn == 0


async def test_a_statement_that_runs_too_long_is_interrupted_and_the_node_goes_on(network):
    async with Lab(stage2(users=200, posts=1000), network=network) as lab:
        lab.nodes["db"]._gate.run_limit_s = 0.2
        began = time.monotonic()
        cross, after = await ask(
            lab.address("db"),
            [
                sqlwire.encode_request("x", "SELECT count(*) FROM posts a, posts b, posts c"),
                sqlwire.encode_request("n", "SELECT count(*) FROM users"),
            ],
        )
        assert cross["error"] == "interrupted" and time.monotonic() - began < 3
        assert after["rows"] == [[200]]


async def test_stopping_the_lab_deletes_the_file_and_leaves_no_socket_or_thread(network):
    before = {t.ident for t in threading.enumerate()}
    lab = Lab(stage2(users=100, posts=500), network=network)
    async with lab:
        await lab.nodes["browser"].request(home("web"))
        path = lab.nodes["db"].path
        assert path and os.path.exists(path)
        assert any(t.name.startswith("sqldb-db") for t in threading.enumerate())
    assert not os.path.exists(path) and not os.path.exists(path + "-wal")
    assert lab.nodes["db"].path is None
    assert {t.ident for t in threading.enumerate()} <= before
    # The address is free again: nothing listens there any more.
    with pytest.raises(OSError):
        await asyncio.open_connection(lab.address("db"), sqlwire.PORT)


SQL_WORKER = """
import asyncio, sys
from core.engine.lab import Lab
from tests.engine.topologies import stage2

async def main():
    lab = Lab(stage2(users=20, posts=50), network=sys.argv[1])
    await lab.start()
    print(lab.nodes["db"].path, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_a_killed_worker_s_database_file_is_swept_by_the_next_start(network):
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SQL_WORKER, network, cwd=root, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        path = Path((await asyncio.wait_for(worker.stdout.readline(), 30)).decode().strip())
        assert path.exists()
        worker.kill()  # SIGKILL: no stop(), no discard()
        await worker.wait()
        assert path.exists()  # a dead worker cannot clean up after itself
        async with Lab(stage2(users=20, posts=50), network=network):
            assert not path.parent.exists()  # the next database to start swept it
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
