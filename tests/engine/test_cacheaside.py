"""Cache-aside on plain values and plain asyncio (core.engine.cacheaside): no Redis, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from core.engine.cacheaside import WRITE_POLICIES, SingleFlight, after_write, store_command


def test_the_none_policy_sends_nothing_after_a_write():
    assert after_write("none", "user:1", "alice", 30) == []


def test_the_invalidate_policy_deletes_the_key():
    assert after_write("invalidate", "user:1", "alice", 30) == [("DEL", "user:1")]
    assert after_write("invalidate", "user:1", None, 0) == [("DEL", "user:1")]  # needs no fresh value


def test_the_update_policy_stores_the_fresh_value_with_the_ttl_in_milliseconds():
    assert after_write("update", "user:1", "alice", 30) == [("SET", "user:1", "alice", "PX", 30_000)]
    assert after_write("update", "user:1", "alice", 0.25) == [("SET", "user:1", "alice", "PX", 250)]


def test_the_update_policy_deletes_instead_when_nothing_may_be_cached():
    assert after_write("update", "user:1", "alice", 0) == [("DEL", "user:1")]
    assert after_write("update", "user:1", "alice", -1) == [("DEL", "user:1")]


def test_the_update_policy_needs_the_fresh_value():
    with pytest.raises(ValueError, match="fresh"):
        after_write("update", "user:1", None, 30)


def test_an_unknown_policy_names_the_known_ones():
    assert WRITE_POLICIES == ("none", "invalidate", "update")
    with pytest.raises(ValueError, match="known: none, invalidate, update"):
        after_write("write_behind", "user:1", "alice", 30)


def test_a_miss_is_stored_with_its_ttl_and_a_ttl_of_zero_stores_nothing():
    assert store_command("user:1", "alice", 5) == ("SET", "user:1", "alice", "PX", 5000)
    assert store_command("user:1", "alice", 1.005) == ("SET", "user:1", "alice", "PX", 1005)
    assert store_command("user:1", "alice", 0.0001) == ("SET", "user:1", "alice", "PX", 1)  # Redis refuses PX 0
    assert store_command("user:1", "alice", 0) is None
    assert store_command("user:1", "alice", -5) is None


Load = Callable[[], Awaitable[object]]


class Loader:
    """A database read that blocks until the test releases it, counting how often it ran."""

    def __init__(self, value: object = "row", error: Exception | None = None) -> None:
        self.value, self.error = value, error
        self.release = asyncio.Event()
        self.calls = 0
        self.cancelled = False

    async def __call__(self) -> object:
        self.calls += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return self.value


async def started(flight: SingleFlight, key: str, load: Load, n: int = 1) -> list[asyncio.Task]:
    tasks = [asyncio.create_task(flight.do(key, load)) for _ in range(n)]
    await settle()
    return tasks


async def settle() -> None:
    # Three turns of the loop: the calls run, the load task they created starts, its waiters wake.
    for _ in range(3):
        await asyncio.sleep(0)


async def test_fifty_concurrent_misses_on_one_key_load_once_and_share_the_value():
    flight, load = SingleFlight(), Loader("row-7")
    tasks = await started(flight, "user:7", load, 50)
    assert (flight.in_flight, load.calls) == (1, 1)
    load.release.set()
    results = await asyncio.gather(*tasks)
    assert [value for value, _ in results] == ["row-7"] * 50
    assert [c for _, c in results].count(True) == 49
    assert results[0] == ("row-7", False)  # the first call led the load
    assert (load.calls, flight.loads, flight.coalesced, flight.in_flight) == (1, 1, 49, 0)


async def test_a_later_call_loads_again():
    flight, load = SingleFlight(), Loader()
    load.release.set()
    assert await flight.do("k", load) == ("row", False)
    assert await flight.do("k", load) == ("row", False)
    assert (load.calls, flight.loads, flight.coalesced) == (2, 2, 0)


async def test_an_exception_reaches_every_waiter_and_the_next_call_loads_again():
    flight, failing = SingleFlight(), Loader(error=ConnectionError("db down"))
    tasks = await started(flight, "k", failing, 5)
    failing.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) and str(r) == "db down" for r in results)
    assert flight.in_flight == 0
    ok = Loader("row")
    ok.release.set()
    assert await flight.do("k", ok) == ("row", False)
    assert (failing.calls, ok.calls) == (1, 1)


async def test_cancelling_a_waiter_leaves_the_others_their_result():
    flight, load = SingleFlight(), Loader()
    leader, waiter, other = await started(flight, "k", load, 3)
    waiter.cancel()
    await settle()
    load.release.set()
    assert await leader == ("row", False)
    assert await other == ("row", True)
    assert waiter.cancelled()
    assert (load.calls, load.cancelled, flight.in_flight) == (1, False, 0)


async def test_cancelling_the_leader_still_completes_the_load_for_the_waiters():
    flight, load = SingleFlight(), Loader()
    leader, *waiters = await started(flight, "k", load, 3)
    leader.cancel()
    await settle()
    assert leader.cancelled()
    assert (flight.in_flight, load.cancelled) == (1, False)
    load.release.set()
    assert await asyncio.gather(*waiters) == [("row", True), ("row", True)]
    assert flight.in_flight == 0


async def test_when_every_caller_is_cancelled_the_load_is_cancelled_and_no_entry_is_left():
    flight, load = SingleFlight(), Loader()
    tasks = await started(flight, "k", load, 3)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await settle()
    assert (load.cancelled, flight.in_flight) == (True, 0)


async def test_a_call_after_everyone_gave_up_starts_a_fresh_load_rather_than_join_the_dying_one():
    flight, cleaned_up = SingleFlight(), asyncio.Event()

    async def slow_to_cancel() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await cleaned_up.wait()  # say, closing a database cursor
            raise
        return "never"

    (caller,) = await started(flight, "k", slow_to_cancel)
    caller.cancel()
    await settle()
    assert caller.cancelled()
    assert flight.in_flight == 0  # gone at once, although the old load is still cleaning up
    fresh = Loader("again")
    fresh.release.set()
    assert await flight.do("k", fresh) == ("again", False)
    cleaned_up.set()
    await settle()


async def test_different_keys_load_independently():
    flight, a, b = SingleFlight(), Loader("a"), Loader("b")
    (ta,) = await started(flight, "a", a)
    (tb,) = await started(flight, "b", b)
    assert flight.in_flight == 2
    b.release.set()
    assert await tb == ("b", False)  # b does not wait for a
    assert (ta.done(), flight.in_flight) == (False, 1)
    a.release.set()
    assert await ta == ("a", False)
    assert (a.calls, b.calls, flight.loads, flight.coalesced, flight.in_flight) == (1, 1, 2, 0, 0)
