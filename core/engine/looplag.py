"""How late the lab's event loop runs: the sign that the machine, not the model, is the limit.

Every node of a lab shares one event loop. While it keeps up, latencies are the modelled servers'
plus real socket time; once the loop itself falls behind (too much traffic for one process, or a
busy machine), every request also waits for the loop, and the numbers stop describing the
servers. A probe that asks to wake every ``interval`` seconds measures by how much it oversleeps;
the frame carries the worst of the last second, and the page warns above a threshold.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

INTERVAL_S = 0.05
# Past this lateness the lab's latencies measure the machine, not the modelled servers: the page
# warns (ENGINE_LAG_WARN_MS in static/js/lab/main.js) and `lessons prove` calls the machine busy.
BUSY_MS = 200.0


class LoopLag:
    def __init__(self, interval: float = INTERVAL_S, window_s: float = 1.0) -> None:
        self.interval = interval
        self._late: deque[float] = deque(maxlen=max(1, round(window_s / interval)))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._probe(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=1.0)

    async def _probe(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.interval)
            self._late.append(max(0.0, time.monotonic() - asked - self.interval))

    @property
    def lag_ms(self) -> float:
        """The worst oversleep in the last window, in ms (0 before the first probe)."""
        return round(max(self._late, default=0.0) * 1000, 1)
