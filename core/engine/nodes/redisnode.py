"""What every node that is one ``redis-server`` child (``self.redis``, a RedisProcess) does alike:
an orderly stop, a crash, and freeing its directory and process whatever happens. The key-value
database, the cache and the session store differ in how they start and what they report."""

from __future__ import annotations

from core.engine.nodes.base import Node
from core.engine.nodes.redisproc import RedisProcess


class RedisServerNode(Node):
    redis: RedisProcess

    async def stop(self) -> None:
        """Orderly: SIGTERM (Redis flushes what it persists), SIGKILL after the grace; the dir stays."""
        self.up = False
        await self.background.stop()
        await self.redis.terminate()

    async def kill(self) -> None:
        """Crash: SIGKILL. What the server kept only in memory is gone (an append-only file stays)."""
        self.up = False
        await self.background.stop()
        await self.redis.kill()

    async def discard(self) -> None:
        """The lab is over: the process (if any) killed, its directory deleted."""
        if self.redis.proc is not None:
            await self.kill()
        await self.redis.discard()

    def force(self) -> None:
        super().force()
        self.redis.force()
