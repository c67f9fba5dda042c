"""A server's modelled CPU: ``workers`` requests served at once, each taking a random service time.

One machine cannot have a 4-core and a 64-core server side by side, so a node's CPU size is
modelled: a request holds one of ``workers`` slots for an exponentially distributed service time
(mean ``service_ms``), and waits in a queue of at most ``queue_limit`` when all slots are busy.
That is an M/M/c queue: latency climbs like 1/(1-ρ) as utilisation ρ nears 1, throughput tops out
at workers / service time, and past the queue limit requests are rejected.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque


class Overloaded(Exception):
    """The queue is full: the caller should answer 503 at once."""


class Capacity:
    def __init__(self, *, workers: int, service_ms: float, queue_limit: int, rng: random.Random | None = None) -> None:
        self.workers = workers
        self.service_ms = service_ms
        self.queue_limit = queue_limit
        self.rng = rng or random.Random()
        self.busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._busy_s = 0.0  # worker-seconds spent serving, for utilisation
        self._util_mark = (time.monotonic(), 0.0)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a worker slot, waiting in the queue if needed; raises Overloaded if it is full.

        The caller must call release() once after a successful acquire().
        """
        if self.busy < self.workers and not self._waiters:
            self.busy += 1
            return
        if len(self._waiters) >= self.queue_limit:
            raise Overloaded
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            elif fut in self._waiters:  # release() may already have dropped it
                self._waiters.remove(fut)
            raise

    def resize(self, *, workers: int, service_ms: float) -> None:
        """Change the modelled CPU live (vertical scaling); no request in flight is dropped.

        More workers: queued requests take the new slots at once. Fewer: requests already being
        served finish, and a slot is handed on only once ``busy`` is below the new ``workers``.
        A new service time applies to work that starts after the resize.
        """
        self.workers = workers
        self.service_ms = service_ms
        while self.busy < self.workers and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self.busy += 1
                fut.set_result(None)

    def release(self) -> None:
        if self.busy > self.workers:  # shrunk while busy: this slot no longer exists
            self.busy -= 1
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot straight to the next waiter
                return
        self.busy -= 1

    async def work(self, extra_ms: float = 0.0) -> float:
        """Spend one request's modelled CPU time (call while holding a slot); returns it in ms.

        ``extra_ms`` is added to the random service time (the "slow" fault: a slowed server holds
        its worker longer, so it also serves fewer requests per second).
        """
        ms = (self.rng.expovariate(1.0 / self.service_ms) if self.service_ms > 0 else 0.0) + max(0.0, extra_ms)
        start = time.monotonic()
        try:
            await asyncio.sleep(ms / 1000.0)
        finally:
            self._busy_s += time.monotonic() - start
        return ms

    @property
    def busy_s(self) -> float:
        """Worker-seconds spent serving since this capacity began (a reader that keeps its own
        marks, such as an autoscaler, does not disturb ``utilisation``'s)."""
        return self._busy_s

    def utilisation(self) -> float:
        """Share of worker time spent serving since the previous call (0..1)."""
        now = time.monotonic()
        last_t, last_busy = self._util_mark
        self._util_mark = (now, self._busy_s)
        elapsed = now - last_t
        if elapsed <= 0:
            return 0.0
        return min(1.0, (self._busy_s - last_busy) / (elapsed * self.workers))
