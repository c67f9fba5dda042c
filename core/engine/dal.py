"""The web tier's data-access layer: which database each query goes to, and the query's hop.

SQL: writes go to the cluster's current primary (``core.engine.replication`` says which). Reads go to
the replicas in turn, and to the primary when no replica is left; a replica that cannot be reached
is skipped for ``DOWN_S`` (passive detection, as a driver's pool does) and the read is tried on
the next one, so losing a replica costs one failed hop, not a failed request. Every attempt is a
hop web → database with the SQL, so the student sees the decision on the diagram.

Key-value: a request that asks for ``store=kv`` (or any request, when the web server has only a
key-value database) goes to the ``kvdb`` node through ``KvStore``: the same pages, one denormalised
round trip each instead of a join, so the two stores can be compared on the same workload.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from core.engine import sqlwire
from core.engine.lifecycle import detach
from core.engine.nodes.clients import DbError, DbPool, KvStore
from core.engine.telemetry import Hop, hops_from_header

if TYPE_CHECKING:
    from core.engine.nodes.base import Node

DOWN_S = 5.0
KV_TIMEOUT_S = 5.0  # as KvStore's own timeout


class DataAccess:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.ctx = node.ctx
        self._pools: dict[str, DbPool] = {}
        self._down_until: dict[str, float] = {}
        self._turn = 0
        self._kv: dict[str, KvStore] = {}

    def db_ids(self, kind: str = "sqldb") -> list[str]:
        """The databases of a kind this web server has an edge to (read each time: servers come and go).
        A shard router speaks SQL for its shards: to the web tier it is the SQL database."""
        if kind == "sqldb":
            return self.ctx.peers(self.node.id, "router") or self.ctx.peers(self.node.id, "sqldb")
        return self.ctx.peers(self.node.id, kind)

    @property
    def available(self) -> bool:
        return bool(self.db_ids() or self.db_ids("kvdb"))

    def users(self) -> int:
        ids = self.db_ids() or self.db_ids("kvdb")
        if not ids:
            return 0
        spec = self.ctx.spec(ids[0])
        if "users" in spec.params:
            return int(spec.params["users"])
        return max((int(self.ctx.spec(s).params["users"]) for s in self.ctx.peers(spec.id, "sqldb")), default=0)

    def kv_for(self, wanted: str | None) -> str | None:
        """The key-value node a request goes to: when it asks for ``store=kv``, or when there is no SQL."""
        kvs = self.db_ids("kvdb")
        if kvs and (wanted == "kv" or not self.db_ids()):
            return kvs[0]
        return None

    async def kv(
        self, kv_id: str, route: str, user: int, caption: str, hops: list[Hop], received: float
    ) -> tuple[Any, int]:
        """One page from the key-value store, recorded as a hop: (result, lsn); raises DbError."""
        store = self._kv.get(kv_id)
        if store is None:
            node = self.ctx.peer(kv_id)
            store = self._kv[kv_id] = KvStore(
                node.address, node.port or 6379, node,  # type: ignore[arg-type]
                source=self.node.address, password=self.ctx.server_password(kv_id),
            )
        start = time.monotonic()
        at_ms = (start - received) * 1000
        try:
            # The partition fault: redis-server is not ours to change, so a cut is enforced here,
            # at the caller, the way a dropped packet looks: nothing comes back until the timeout.
            while self.ctx.partitioned(self.node.id, kv_id):
                if time.monotonic() - start >= KV_TIMEOUT_S:
                    raise DbError("timeout", unavailable=True)
                await asyncio.sleep(0.1)
            if route == "post":
                result, _, lsn, op = await store.post(user, caption)
            else:
                result, _, lsn, op = await {"home": store.feed, "profile": store.profile, "login": store.login}[route](
                    user
                )
        except DbError as exc:
            ms = (time.monotonic() - start) * 1000
            hops.append(Hop(self.node.id, kv_id, "kv", route, False, exc.status, ms, at_ms))
            raise
        status = f"written · lsn {lsn}" if route == "post" else "ok"
        hops.append(Hop(self.node.id, kv_id, "kv", op, True, status, (time.monotonic() - start) * 1000, at_ms))
        return result, lsn

    def primary(self) -> str:
        ids = self.db_ids()
        primary = self.ctx.primary_for(ids[0])
        return primary if primary in ids else ids[0]

    def read_order(self) -> list[str]:
        """Where a read is tried, in order: the replicas not known to be down (rotating), then the primary."""
        primary = self.primary()
        now = time.monotonic()
        replicas = [i for i in self.db_ids() if i != primary and self._down_until.get(i, 0.0) <= now]
        if replicas:
            k = self._turn % len(replicas)
            self._turn += 1
            replicas = replicas[k:] + replicas[:k]
        order = [*replicas, primary]
        if self.ctx.topology.regions:
            # Several data centres: read the nearest copy (a replica before the primary at the same
            # distance), never one an ocean away while a local one answers.
            order.sort(key=lambda db: self.ctx.rtt_ms(self.node.id, db))
        return order

    def _replicated(self) -> bool:
        return self.ctx.replicated

    def _pool(self, db_id: str) -> DbPool:
        pool = self._pools.get(db_id)
        if pool is None:
            db = self.ctx.peer(db_id)
            pool = self._pools[db_id] = DbPool(db.address, db.port or sqlwire.PORT, source=self.node.address)
        return pool

    async def run(
        self, db_id: str, req_id: str, sql: str, params: list[Any], hops: list[Hop], received: float
    ) -> dict[str, Any]:
        """One query on one database, recorded as a hop; the reply, or DbError."""
        start = time.monotonic()
        op = sqlwire.op_text(sql)
        at_ms = (start - received) * 1000
        try:
            reply = await self._pool(db_id).query_reply(req_id, sql, params)
        except DbError as exc:
            ms = (time.monotonic() - start) * 1000
            hops.append(Hop(self.node.id, db_id, "sql", op, False, exc.status, ms, at_ms))
            hops.extend(hops_from_header(exc.hops, at_ms))
            if exc.unavailable and exc.status != sqlwire.OVERLOADED:
                self._down_until[db_id] = time.monotonic() + DOWN_S
            raise
        rows = reply.get("rows", [])
        status = f"{len(rows)} row" + ("" if len(rows) == 1 else "s")
        ms = (time.monotonic() - start) * 1000
        if "rowid" in reply:
            status = f"written · lsn {reply.get('lsn')}"
        elif "lsn" in reply and self._replicated():  # where it matters: how fresh a replica's answer is
            status += f" · lsn {reply['lsn']}"
        hops.append(Hop(self.node.id, db_id, "sql", op, True, status, ms, at_ms))
        hops.extend(hops_from_header(reply.get("hops"), at_ms))  # a shard router's calls to its shards
        return reply

    async def read(
        self, req_id: str, queries: list[tuple[str, list[Any]]], hops: list[Hop], received: float
    ) -> tuple[list[list[Any]], int | None]:
        """Run a page's reads on one database (trying the next when one cannot be reached):
        (rows of each query, the log position they reflect)."""
        last: DbError | None = None
        for n, db_id in enumerate(self.read_order()):
            try:
                results, lsns = [], []
                for i, (sql, params) in enumerate(queries):
                    qid = f"{req_id}.{n}{i}" if n else f"{req_id}.{i}"  # the request id, end to end
                    reply = await self.run(db_id, qid, sql, params, hops, received)
                    results.append(reply.get("rows", []))
                    if "lsn" in reply:
                        lsns.append(int(reply["lsn"]))
                return results, (min(lsns) if lsns else None)
            except DbError as exc:
                if not exc.unavailable:
                    raise
                last = exc
        assert last is not None
        raise last

    async def write(
        self, req_id: str, sql: str, params: list[Any], hops: list[Hop], received: float
    ) -> tuple[int, int | None]:
        """A write on the primary: (rowid, its log position)."""
        reply = await self.run(self.primary(), f"{req_id}.w", sql, params, hops, received)
        lsn = reply.get("lsn")
        return int(reply.get("rowid", 0)), (int(lsn) if lsn is not None else None)

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        stores, self._kv = list(self._kv.values()), {}
        for store in stores:
            await store.close()
        self._down_until.clear()

    def drop(self) -> None:
        """Close at once (``Node.force``): SQL connections now; key-value pools as tasks of their own."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        stores, self._kv = list(self._kv.values()), {}
        for store in stores:
            detach(store.close())
        self._down_until.clear()
