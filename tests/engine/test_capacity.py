import asyncio
import random

import pytest

from core.engine.capacity import Capacity, Overloaded


async def test_it_serves_up_to_workers_at_once_and_queues_the_rest():
    cap = Capacity(workers=2, service_ms=50, queue_limit=2, rng=random.Random(1))
    await cap.acquire()
    await cap.acquire()
    waiting = [asyncio.create_task(cap.acquire()) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert (cap.busy, cap.queued) == (2, 2)
    with pytest.raises(Overloaded):
        await cap.acquire()  # queue full: rejected at once
    cap.release()  # hands its slot to the first waiter
    await asyncio.sleep(0)
    assert waiting[0].done() and not waiting[1].done()
    assert (cap.busy, cap.queued) == (2, 1)
    waiting[1].cancel()
    await asyncio.gather(waiting[1], return_exceptions=True)
    assert cap.queued == 0
    cap.release()
    cap.release()
    assert cap.busy == 0


async def test_it_measures_utilisation():
    cap = Capacity(workers=1, service_ms=20, queue_limit=0, rng=random.Random(2))
    cap.utilisation()
    for _ in range(5):
        await cap.acquire()
        await cap.work()
        cap.release()
    assert cap.utilisation() > 0.8  # the single worker was busy almost all the time


async def test_a_waiter_cancelled_while_a_slot_is_released_leaves_the_queue_consistent():
    cap = Capacity(workers=1, service_ms=1, queue_limit=5)
    await cap.acquire()
    waiter = asyncio.create_task(cap.acquire())
    await asyncio.sleep(0)
    waiter.cancel()  # cancels the waiter's future at once; its task resumes later
    cap.release()  # skips the cancelled waiter and frees the slot
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (cap.busy, cap.queued) == (0, 0)
