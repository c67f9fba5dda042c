"""Redis clients built from settings.REDIS_URL at call time (tests repoint it after import)."""

from __future__ import annotations

import redis
import redis.asyncio
from django.conf import settings


def client() -> redis.Redis:
    """A synchronous client; cheap to create, pooled per call site by redis-py."""
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


def async_client() -> redis.asyncio.Redis:
    """An asyncio client; the caller must ``await c.aclose()`` when done."""
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, decode_responses=True)
