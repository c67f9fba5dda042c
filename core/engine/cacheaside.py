"""Cache-aside (sans-I/O): which Redis commands keep a cache in front of a database, and coalescing.

The web tier does the I/O. On a read it GETs the key; on a miss it loads from the database and
sends ``store_command(...)``. After a write to the database it sends ``after_write(policy, ...)``.
``SingleFlight`` turns a stampede of concurrent misses on one key into a single database load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

T = TypeVar("T")

WRITE_POLICIES: tuple[str, ...] = ("none", "invalidate", "update")
"""What a write does to the cached copy of the key it changed:

none: nothing; the cached copy stays stale until its TTL runs out.
invalidate: delete the key on write, so the next read misses and reads the database.
update: write the fresh value into the cache on write.
"""

Command = tuple[str | int, ...]


def _px(ttl_s: float) -> int:
    # Redis refuses PX 0, so a positive TTL is at least one millisecond.
    return max(1, round(ttl_s * 1000))


def store_command(key: str, value: str, ttl_s: float) -> Command | None:
    """The command that caches ``value`` just read from the database after a miss.

    None when ``ttl_s`` <= 0: a TTL of 0 means do not cache, so the caller sends nothing.
    """
    if ttl_s <= 0:
        return None
    return ("SET", key, value, "PX", _px(ttl_s))


def after_write(policy: str, key: str, fresh: str | None, ttl_s: float) -> list[Command]:
    """The commands to send after a write changed the data behind ``key`` (``fresh``: its new value)."""
    if policy == "none":
        return []
    if policy == "invalidate":
        return [("DEL", key)]
    if policy == "update":
        if fresh is None:
            raise ValueError("the update policy needs the fresh value")
        stored = store_command(key, fresh, ttl_s)
        # Nothing may be cached, but an older copy may be: delete it rather than leave it stale.
        return [("DEL", key)] if stored is None else [stored]
    raise ValueError(f"unknown write policy {policy!r} (known: {', '.join(WRITE_POLICIES)})")


@dataclass
class _Flight:
    task: asyncio.Future[Any]
    waiters: int = 0


class SingleFlight:
    """Request coalescing: concurrent calls for one key share a single load.

    The load runs as a task of its own, and callers wait on it through ``asyncio.shield``, so a
    cancelled caller (the one that started it or any other) leaves the load running for the rest.
    When the last caller has gone the load is cancelled: nobody would see its result. Either way
    the entry leaves as soon as the load ends, so a later call loads again.
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}
        self.loads = 0  # loads started
        self.coalesced = 0  # calls that waited for another call's load

    @property
    def in_flight(self) -> int:
        """Keys loading now."""
        return len(self._flights)

    async def do(self, key: str, load: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``load()``'s result (or exception) for ``key``, and whether it came from a load already running."""
        flight = self._flights.get(key)
        coalesced = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(load()))
            self._flights[key] = flight
            flight.task.add_done_callback(partial(self._finished, key, flight))
            self.loads += 1
        else:
            self.coalesced += 1
        flight.waiters += 1
        try:
            return cast(T, await asyncio.shield(flight.task)), coalesced
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Forget it now, not when the cancellation lands, so a new call starts a fresh load
                # instead of joining one that is about to end cancelled.
                self._forget(key, flight)
                flight.task.cancel()

    def _forget(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _finished(self, key: str, flight: _Flight, task: asyncio.Future[Any]) -> None:
        self._forget(key, flight)
        if not task.cancelled():
            task.exception()  # delivered to the waiters, if any; never "exception was never retrieved"
