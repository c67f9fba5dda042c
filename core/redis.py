"""Redis clients built from settings.REDIS_URL at call time (tests repoint it after import)."""

from __future__ import annotations

import redis
import redis.asyncio
from django.conf import settings

TIMEOUT_S = 5.0  # a stalled Redis fails a page's call with an error instead of holding it forever


def client() -> redis.Redis:
    """A synchronous client; cheap to create, pooled per call site by redis-py."""
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True,
                                socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


def async_client() -> redis.asyncio.Redis:
    """An asyncio client; the caller must ``await c.aclose()`` when done. No read timeout: its
    pub/sub listener waits for the next message as long as the page is open."""
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, decode_responses=True,
                                        socket_connect_timeout=TIMEOUT_S)
