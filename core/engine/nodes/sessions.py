"""The shared session store: a redis-server of the node's own (``redisproc``), memory only.

Its setting ``sessions`` says where the web servers with an edge to it keep their users' sessions:
``memory`` (each in its own, the store idle) or ``shared`` (here, ``core.engine.sessiontier``). The
web tier reads the setting on every request, so the ``sessions`` command switches the whole tier at
once, and a server added later follows it. Switching to ``shared`` first copies every server's
in-memory sessions here, so the move logs nobody out.

Like the cache it keeps nothing on disk: killing it loses every session (and, while it is down,
every logged-in page fails: see ``sessiontier``). redis-server cannot be slowed down, so the
"slow" fault lives in the web tier's client (``CacheClient`` awaits ``slowdown()``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from core.engine.kvwire import PORT
from core.engine.lifecycle import Alive
from core.engine.nodes.redisnode import RedisServerNode
from core.engine.nodes.redisproc import RedisProcess

log = logging.getLogger(__name__)
REFRESH_S = 1.0
EXPORT_TIMEOUT_S = 5.0  # copying every server's sessions here, all servers at once


class SessionStoreNode(RedisServerNode):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis = RedisProcess(
            self.address, self.port or PORT, who=self.who, password=self.ctx.server_password(self.id)
        )
        self.shared = self.params["sessions"] == "shared"  # the setting outlives a restart
        self.keys = 0

    async def start(self) -> None:
        first = await self.redis.make_dir(self.id)
        try:
            await self.redis.start("--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction")
        except BaseException:
            if first:
                await self.redis.discard()
            raise
        self.keys = 0
        self.background.start(self._refresh, "refresh")
        self.up = True

    def snapshot(self) -> dict[str, Any]:
        return {"up": self.up, "sessions": self.keys, "shared": 1 if self.shared else 0,
                "mode": "shared" if self.shared else "memory"}

    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        # sessions: where the web tier keeps them
        shared = cmd["value"] == "shared"
        was, self.shared = self.shared, shared  # new logins go here from now on
        moved = await self._import() if shared and not was else 0
        self.ctx.event("sessions_set", node=self.id, value=cmd["value"], shared=shared, moved=moved)

    async def _import(self) -> int:
        """Every web server with an edge here copies its in-memory sessions in (bounded in all)."""
        if not self.up:
            return 0
        webs = [self.ctx.peer(a) for a, b in self.ctx.topology.edges if b == self.id]
        tiers = [w.sessions for w in webs if w is not None and w.up and hasattr(w, "sessions")]
        try:
            async with asyncio.timeout(EXPORT_TIMEOUT_S):
                counts = await asyncio.gather(*(t.export(self.id) for t in tiers), return_exceptions=True)
        except TimeoutError:
            log.warning("%s: copying the web tier's sessions took over %.0f s", self.who, EXPORT_TIMEOUT_S)
            return 0
        return sum(c for c in counts if isinstance(c, int))

    async def _refresh(self, alive: Alive) -> None:
        await self.redis.poll(alive, self._sample, REFRESH_S)

    async def _sample(self, client: aioredis.Redis) -> None:
        self.keys = int(await client.dbsize())
