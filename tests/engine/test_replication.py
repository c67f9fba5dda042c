"""Database replication on real sockets: read/write split, delay and stale reads, failover."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import aiohttp
import pytest

from core.engine import sqlwire
from core.engine.lab import Lab
from core.engine.spec import Topology, parse_topology


def replicated(*, replicas: int = 2, delay_ms: float = 0.0, failover_after_s: float = 0.5) -> Topology:
    """A web server in front of a primary and its replicas (no clients: the tests are the users)."""
    dbs = ["db-1"] + [f"db-{i}" for i in range(2, replicas + 2)]
    nodes: list[dict[str, Any]] = [
        {"id": "web", "kind": "web", "host": 80, "params": {"workers": 8, "service_ms": 1}},
        {
            "id": "db-1",
            "kind": "sqldb",
            "host": 91,
            "params": {"users": 200, "posts": 1000, "service_ms": 0.5, "failover_after_s": failover_after_s},
        },
    ]
    for i, db in enumerate(dbs[1:], start=2):
        nodes.append(
            {
                "id": db,
                "kind": "sqldb",
                "host": 90 + i,
                "params": {"users": 200, "posts": 1000, "service_ms": 0.5, "replica_of": "db-1", "delay_ms": delay_ms},
            }
        )
    return parse_topology({"nodes": nodes, "edges": [["web", db] for db in dbs]})


class Site:
    """A user talking HTTP to the web server, from the test."""

    def __init__(self, lab: Lab) -> None:
        self.base = f"http://{lab.address('web')}:8080"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def post(self, user: int, caption: str = "hello") -> tuple[int, dict[str, Any], list[str]]:
        async with self.session.post(f"{self.base}/api/posts", json={"user": user, "caption": caption}) as r:
            body = await r.json() if r.status == 201 else {}
            return r.status, body, _db_hops(r)

    async def profile(self, user: int) -> tuple[int, int | None, dict[str, Any], list[str]]:
        async with self.session.get(f"{self.base}/api/users/{user}") as r:
            body = await r.json() if r.status == 200 else {}
            lsn = r.headers.get("X-Data-Lsn")
            return r.status, (int(lsn) if lsn else None), body, _db_hops(r)

    async def close(self) -> None:
        await self.session.close()


def _db_hops(resp: aiohttp.ClientResponse) -> list[str]:
    """``dst:ok`` of each web → database hop the response reports."""
    import json

    return [f"{h[1]}:{'ok' if h[4] else 'fail'}" for h in json.loads(resp.headers.get("X-Hops", "[]"))]


async def until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def log_lsns(path: str) -> set[int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT lsn FROM changelog")}
    finally:
        conn.close()


@pytest.fixture
async def lab(network, request):
    marker = request.node.get_closest_marker("topology")
    topo = replicated(**(marker.kwargs if marker else {}))
    async with Lab(topo, network=network) as lab:
        yield lab


@pytest.fixture
async def site(lab):
    s = Site(lab)
    yield s
    await s.close()


async def test_writes_land_on_the_primary_and_reads_on_the_replicas(lab, site):
    status, body, hops = await site.post(7, "sunset")
    assert status == 201 and hops == ["db-1:ok"] and body["lsn"] == 1
    await until(lambda: all(lab.nodes[d].lsn == 1 for d in ("db-2", "db-3")), what="replicas to apply")
    readers = set()
    for _ in range(6):
        status, lsn, body, hops = await site.profile(7)
        assert status == 200 and lsn == 1
        assert body["items"][0]["caption"] == "sunset"  # the replica has the row, replayed
        readers.update(h.split(":")[0] for h in hops)
    assert readers == {"db-2", "db-3"}  # in turn, never the primary
    frame = lab.frame()
    assert frame["replication"]["primary"] == "db-1"
    assert frame["nodes"]["db-2"]["role"] == "replica" and frame["nodes"]["db-2"]["following"] == "db-1"
    assert frame["nodes"]["db-1"]["role"] == "primary" and frame["nodes"]["db-1"]["lsn"] == 1


async def test_a_replica_refuses_writes(lab):
    reader, writer = await asyncio.open_connection(lab.address("db-2"), sqlwire.PORT)
    writer.write(sqlwire.encode_request("w", sqlwire.POST_SQL, [1, "x", "/x.jpg", 1]))
    reply = sqlwire.decode_reply(await reader.readline())
    writer.close()
    assert reply["error"] == sqlwire.READ_ONLY


WRITES = [
    "WITH x AS (SELECT 1) INSERT INTO posts (user_id, caption, photo_url, created_at) SELECT 1, 'w', '/w', 1 FROM x",
    "insert into posts (user_id, caption, photo_url, created_at) values (1, 'lower', '/l', 1)",
    "-- a comment first\nINSERT INTO posts (user_id, caption, photo_url, created_at) VALUES (1, 'c', '/c', 1)",
    "/* a comment */ DELETE FROM follows",
    "  \n\tUPDATE users SET bio = 'changed'",
    "REPLACE INTO users (id, name, bio, joined_at) VALUES (1, 'x', 'y', 1)",
    "INSERT OR REPLACE INTO users (id, name, bio, joined_at) VALUES (1, 'x', 'y', 1)",
    "WITH x AS (SELECT 1) DELETE FROM posts WHERE user_id IN (SELECT * FROM x)",
]


async def test_a_replica_refuses_every_write_however_it_is_spelt(lab):
    replica = lab.nodes["db-2"]
    before = replica.rows
    reader, writer = await asyncio.open_connection(lab.address("db-2"), sqlwire.PORT)
    try:
        for i, sql in enumerate(WRITES):
            writer.write(sqlwire.encode_request(f"w{i}", sql))
            reply = sqlwire.decode_reply(await reader.readline())
            assert reply.get("error") == sqlwire.READ_ONLY, (sql, reply)
        writer.write(sqlwire.encode_request("r", "SELECT count(*) FROM posts WHERE user_id = 1"))
        assert "rows" in sqlwire.decode_reply(await reader.readline())  # reads go on
    finally:
        writer.close()
    assert replica.rows == before and replica.lsn == 0
    conn = sqlite3.connect(f"file:{replica.path}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM users WHERE bio = 'changed' OR name = 'x'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM follows").fetchone()[0] > 0
    finally:
        conn.close()


async def test_a_write_the_primary_takes_whatever_its_first_word_is_logged_and_replicated(lab):
    sql = WRITES[0]
    primary = lab.nodes["db-1"]
    rows = primary.rows
    reader, writer = await asyncio.open_connection(lab.address("db-1"), sqlwire.PORT)
    writer.write(sqlwire.encode_request("w", sql))
    reply = sqlwire.decode_reply(await reader.readline())
    writer.close()
    assert reply["lsn"] == 1 and reply["rowid"] > 0  # a write, down the write path: in the change log
    assert primary.rows == rows + 1
    await until(lambda: all(lab.nodes[d].lsn == 1 for d in ("db-2", "db-3")), what="replicas to apply")
    assert lab.nodes["db-2"].rows == rows + 1


async def test_a_replica_does_not_apply_a_log_entry_the_primary_would_have_refused(lab):
    """A forged change-log entry (the primary never logs such a statement) is skipped, not run."""
    replica = lab.nodes["db-2"]
    replica._pending.append([1, time.time(), "DROP TABLE follows", "[]"])
    await replica._apply_due(ignore_delay=True)
    assert replica.lsn == 1  # its position kept, as for any entry that fails
    conn = sqlite3.connect(f"file:{replica.path}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM follows").fetchone()[0] > 0
    finally:
        conn.close()


@pytest.mark.topology(delay_ms=800)
async def test_with_a_delay_a_read_after_ones_own_write_is_stale_then_fresh(lab, site):
    status, body, _ = await site.post(11, "just now")
    assert status == 201
    written = body["lsn"]
    status, lsn, page, _ = await site.profile(11)
    assert status == 200 and lsn < written  # read from a replica still behind: stale
    assert all(item["caption"] != "just now" for item in page["items"])
    await until(lambda: lab.nodes["db-2"].received >= written, what="db-2 to receive")
    frame = lab.frame()
    assert frame["nodes"]["db-2"]["lag"] >= 1 and frame["nodes"]["db-2"]["lag_ms"] >= 0
    assert frame["nodes"]["db-2"]["delay_ms"] == 800
    await until(lambda: lab.nodes["db-2"].lsn >= written and lab.nodes["db-3"].lsn >= written, what="the delay")
    status, lsn, page, _ = await site.profile(11)
    assert lsn >= written and page["items"][0]["caption"] == "just now"
    # The delay is live: set to 0, the replica catches up at once.
    await lab.command({"action": "delay", "node": "db-2", "ms": 0})
    assert lab.nodes["db-2"].delay_ms == 0


async def test_a_dead_replica_costs_no_failed_read(lab, site):
    await site.post(3)
    await lab.command({"action": "kill", "node": "db-2"})
    hops_seen = []
    for _ in range(8):
        status, _, _, hops = await site.profile(3)
        assert status == 200
        hops_seen += hops
    assert "db-2:fail" in hops_seen  # tried once, then skipped
    assert hops_seen.count("db-2:fail") == 1
    await lab.command({"action": "kill", "node": "db-3"})
    for _ in range(4):
        status, _, _, hops = await site.profile(3)
        assert status == 200  # no replica left: the primary serves reads
    assert hops[-1] == "db-1:ok"


@pytest.mark.topology(failover_after_s=0.5)
async def test_killing_the_primary_promotes_the_most_advanced_replica_and_writes_resume(lab, site):
    for i in range(5):
        assert (await site.post(20 + i))[0] == 201
    await until(lambda: lab.nodes["db-3"].received == 5, what="db-3 to receive")
    # db-3 is cut off from the primary: it stops receiving, so db-2 is the more advanced.
    await lab.command({"action": "partition", "node": "db-3", "peer": "db-1"})
    for i in range(5):
        assert (await site.post(30 + i))[0] == 201
    await until(lambda: lab.nodes["db-2"].received == 10, what="db-2 to receive everything")
    assert lab.nodes["db-3"].received == 5
    await lab.command({"action": "heal", "node": "db-3", "peer": "db-1"})
    await lab.command({"action": "kill", "node": "db-1"})
    killed = time.monotonic()
    while True:
        status, body, _ = await site.post(99, "after")
        if status == 201:
            break
        assert time.monotonic() - killed < 10, "writes never resumed"
        await asyncio.sleep(0.05)
    assert lab.replication.primary_id == "db-2"
    assert body["lsn"] == 11  # the log goes on where the old primary's ended: nothing lost
    events = [e for e in lab.frame()["events"] if e["kind"] == "promoted"]
    assert events and events[0]["node"] == "db-2" and events[0]["old"] == "db-1" and events[0]["lost"] == 0
    # db-3 follows the new primary and catches up.
    await until(lambda: lab.nodes["db-3"].lsn == 11 and lab.nodes["db-3"].following == "db-2", what="db-3")
    # The old primary comes back as a replica of the new one.
    await lab.command({"action": "restart", "node": "db-1"})
    await until(lambda: lab.nodes["db-1"].lsn == 11, what="the old primary to catch up")
    assert lab.frame()["nodes"]["db-1"]["role"] == "replica"


@pytest.mark.topology(failover_after_s=0)
async def test_writes_the_old_primary_never_shipped_are_counted_as_lost_exactly(lab, site):
    for i in range(4):
        assert (await site.post(40 + i))[0] == 201
    await until(lambda: lab.nodes["db-2"].received == 4 and lab.nodes["db-3"].received == 4, what="replication")
    for replica in ("db-2", "db-3"):
        await lab.command({"action": "partition", "node": replica, "peer": "db-1"})
    for i in range(7):  # the primary accepts these, but no replica can fetch them
        assert (await site.post(50 + i))[0] == 201
    old_path = lab.nodes["db-1"].path
    await lab.command({"action": "kill", "node": "db-1"})
    await asyncio.sleep(0.3)
    assert lab.replication.primary_id == "db-1"  # failover_after_s 0: only by command
    await lab.command({"action": "promote", "node": "db-2"})
    assert lab.replication.primary_id == "db-2"
    new_lsns = log_lsns(lab.nodes["db-2"].path)
    lost = log_lsns(old_path) - new_lsns  # compare the two logs
    assert len(lost) == 7
    frame = lab.frame()
    assert frame["replication"]["lost_writes"] == 7 and frame["nodes"]["db-1"]["lost_writes"] == 7
    assert next(e for e in frame["events"] if e["kind"] == "promoted")["lost"] == 7
    # The old primary had run ahead of the new one: on restart it is rebuilt and converges.
    for replica in ("db-2", "db-3"):
        await lab.command({"action": "heal", "node": replica, "peer": "db-1"})
    status, body, _ = await site.post(60)
    assert status == 201 and body["lsn"] == 5
    await lab.command({"action": "restart", "node": "db-1"})
    await until(lambda: lab.nodes["db-1"].lsn == 5, what="the rebuilt old primary")
    assert log_lsns(lab.nodes["db-1"].path) == {1, 2, 3, 4, 5}


async def test_promote_while_the_primary_is_up_is_a_switchover_without_loss(lab, site):
    for i in range(3):
        await site.post(70 + i)
    await lab.command({"action": "promote", "node": "db-3"})
    assert lab.replication.primary_id == "db-3"
    status, body, hops = await site.post(80)
    assert status == 201 and hops == ["db-3:ok"] and body["lsn"] == 4
    await until(lambda: lab.nodes["db-1"].lsn == 4 and lab.nodes["db-2"].lsn == 4, what="followers")
    assert lab.frame()["replication"]["lost_writes"] == 0


async def test_a_promotion_that_cancels_an_apply_waiting_for_sqlite_keeps_what_was_received(network):
    """The applier takes a batch while the SQLite thread is busy; a promotion cancels it then: the
    batch must stay pending and be applied by the promotion, not dropped (it used to be, 2 runs in 25)."""
    async with Lab(replicated(replicas=1, delay_ms=10000, failover_after_s=0), network=network) as lab:
        site = Site(lab)
        try:
            for i in range(3):
                assert (await site.post(60 + i))[0] == 201
            replica = lab.nodes["db-2"]
            await until(lambda: replica.received == 3, what="the replica to receive the writes")
            assert replica.lsn == 0 and len(replica._pending) == 3  # type: ignore[attr-defined]  # held back
            busy = replica._executor.submit(time.sleep, 0.3)  # type: ignore[attr-defined]  # the thread is busy
            applying = asyncio.ensure_future(replica._apply_due(ignore_delay=True))  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)  # it has taken its batch and waits for the thread
            applying.cancel()
            with pytest.raises(asyncio.CancelledError):
                await applying
            assert len(replica._pending) == 3  # type: ignore[attr-defined]
            await asyncio.wrap_future(busy)
            await lab.command({"action": "promote", "node": "db-2"})
            assert replica.lsn == 3
            status, body, _ = await site.post(70)
            assert status == 201 and body["lsn"] == 4  # the next position, not a reused one
        finally:
            await site.close()


async def test_bad_replication_commands_are_refused_and_the_lab_keeps_running(lab, site):
    from core.engine.commands import CommandError

    for cmd in (
        {"action": "promote", "node": "db-1"},  # already primary
        {"action": "promote", "node": "web"},
        {"action": "delay", "node": "db-1", "ms": 100},  # the primary has no delay
    ):
        with pytest.raises(CommandError):
            await lab.command(cmd)
    assert (await site.post(1))[0] == 201


async def test_a_client_behind_a_balancer_sees_its_own_write_missing_and_flags_a_stale_read(network):
    from core.engine.workload import Request

    topo = parse_topology(
        {
            "nodes": [
                {"id": "dns", "kind": "dns", "host": 53, "params": {"target": "lb"}},
                {"id": "lb", "kind": "lb", "host": 100},
                {"id": "web", "kind": "web", "host": 80, "params": {"workers": 8, "service_ms": 1}},
                {"id": "db-1", "kind": "sqldb", "host": 91, "params": {"users": 100, "posts": 500}},
                {
                    "id": "db-2",
                    "kind": "sqldb",
                    "host": 92,
                    "params": {"users": 100, "posts": 500, "replica_of": "db-1", "delay_ms": 1500},
                },
                {"id": "phone", "kind": "client", "params": {"flavor": "mobile", "rate": 0}},
            ],
            "edges": [["phone", "dns"], ["phone", "lb"], ["lb", "web"], ["web", "db-1"], ["web", "db-2"]],
        }
    )
    async with Lab(topo, network=network) as lab:
        phone = lab.nodes["phone"]
        lab.frame()
        await phone.request(Request("POST", "/api/posts", {"user": 5, "caption": "mine"}, 5, True, "post"))
        await phone.request(Request("GET", "/api/users/5", None, 5, False, "profile"))
        frame = lab.frame()
        assert frame["totals"]["writes_total"] == 1 and frame["totals"]["stale_total"] == 1
        [event] = [e for e in frame["events"] if e["kind"] == "stale_read"]
        assert event["user"] == 5 and event["write_lsn"] == 1 and event["read_lsn"] == 0
        await until(lambda: lab.nodes["db-2"].lsn == 1, what="the delayed replica")
        await phone.request(Request("GET", "/api/users/5", None, 5, False, "profile"))
        assert lab.frame()["totals"]["stale_total"] == 1  # fresh now: no new stale read
