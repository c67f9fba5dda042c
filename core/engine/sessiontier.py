"""The web tier's sessions: in each server's own memory, or in the shared session store.

A web server keeps its sessions in its own memory (``sessions.SessionTable``, lost when it crashes)
unless it has an edge to a ``sessions`` node whose setting is ``shared``: then every session lives
in that node's redis-server (``SET session:<token> <user> EX …``, ``GET session:<token>``), where
every server finds it. Each Redis command is a hop web → store (proto ``kv``).

A store that cannot be reached fails the request (503, ``SessionStoreError``): the server cannot
tell a logged-in user from a stranger, and answering as anonymous would log everyone out. So the
shared store is a dependency of every logged-in page, and a point of failure to plan for.

Switching to ``shared`` copies each server's in-memory sessions into the store (``export``), as a
migration would, so the move itself logs nobody out; a session looked up while that copy runs is
found in the server's memory and copied then. Switching back leaves them in the store.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from core.engine import sessions
from core.engine.nodes.clients import CacheClient, CacheError
from core.engine.telemetry import Hop

if TYPE_CHECKING:
    from core.engine.nodes.base import Node

STORE_TIMEOUT_S = 1.0  # a store on loopback answers in well under a millisecond
EXPORT_BATCH = 500  # SETs per round trip when sessions move into the store


class SessionStoreError(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class SessionTier:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.ctx = node.ctx
        self.memory = sessions.SessionTable()
        self._clients: dict[str, CacheClient] = {}

    def shared_store(self) -> str | None:
        """The session store this server uses now, or None: its own memory."""
        for store_id in self.ctx.peers(self.node.id, "sessions"):
            peer = self.ctx.peer(store_id)
            if peer is not None and getattr(peer, "shared", False):
                return store_id
        return None

    @property
    def count(self) -> int:
        """Sessions in this server's memory."""
        return len(self.memory)

    def _client(self, store_id: str) -> CacheClient | None:
        client = self._clients.get(store_id)
        if client is None:
            peer = self.ctx.peer(store_id)
            if peer is None:
                return None
            client = self._clients[store_id] = CacheClient(
                peer.address, peer.port or 6379, source=self.node.address, node=peer,
                password=self.ctx.server_password(store_id), timeout_s=STORE_TIMEOUT_S,
            )
        return client

    async def _call(self, store_id: str, op: str, call: Callable[[CacheClient], Awaitable[Any]], hops: list[Hop],
                    received: float, status: Callable[[Any], str]) -> Any:
        """One Redis command as a hop; SessionStoreError if the store cannot be reached."""
        start = time.monotonic()
        at_ms = (start - received) * 1000
        client = self._client(store_id)
        try:
            if client is None:
                raise CacheError("no such store")
            if self.ctx.partitioned(self.node.id, store_id):  # redis-server is not ours: cut at the caller
                raise CacheError("timeout")
            result = await call(client)
        except CacheError as exc:
            hops.append(Hop(self.node.id, store_id, "kv", op, False, exc.status, (time.monotonic() - start) * 1000,
                            at_ms))
            raise SessionStoreError(f"session store: {exc.status}") from None
        hops.append(Hop(self.node.id, store_id, "kv", op, True, status(result), (time.monotonic() - start) * 1000,
                        at_ms))
        return result

    async def login(self, user: int, hops: list[Hop], received: float) -> str:
        """A new session for ``user``; its ``Set-Cookie`` value."""
        token = sessions.new_token()
        store_id = self.shared_store()
        if store_id is None:
            self.memory.create(user, token)
        else:
            key = sessions.store_key(token)
            command = ("SET", key, str(user), "EX", sessions.TTL_S)
            await self._call(store_id, f"SET {key}", lambda c: c.send([command]), hops, received, lambda _: "stored")
        return f"{sessions.SESSION_COOKIE}={token}; Path=/; HttpOnly"

    async def known(self, token: str, hops: list[Hop], received: float) -> bool:
        """Whether the session ``token`` is known where this server keeps sessions now."""
        store_id = self.shared_store()
        if store_id is None:
            return self.memory.get(token) is not None
        key = sessions.store_key(token)
        value = await self._call(store_id, f"GET {key}", lambda c: c.get(key), hops, received,
                                 lambda v: "found" if v is not None else "missing")
        if value is not None:
            return True
        user = self.memory.get(token)  # made here before the switch and not copied yet (``export`` runs)
        if user is None:
            return False
        command = ("SET", key, str(user), "EX", sessions.TTL_S)
        await self._call(store_id, f"SET {key}", lambda c: c.send([command]), hops, received, lambda _: "stored")
        return True

    async def export(self, store_id: str) -> int:
        """Copy this server's in-memory sessions into ``store_id``; how many (bounded per batch)."""
        items = self.memory.items()
        client = self._client(store_id)
        if client is None or not items:
            return 0
        moved = 0
        for i in range(0, len(items), EXPORT_BATCH):
            batch = items[i:i + EXPORT_BATCH]
            try:
                await client.send([("SET", sessions.store_key(t), str(u), "EX", sessions.TTL_S) for t, u in batch])
            except CacheError:
                break  # the rest stay in memory only: their users will be logged out
            moved += len(batch)
        return moved

    def lost(self) -> None:
        """The server crashed or restarted: what its memory held is gone."""
        self.memory.clear()

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    def drop(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close_now()
