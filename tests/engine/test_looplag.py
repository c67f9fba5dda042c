"""The frame says when the lab's own event loop falls behind (the machine, not the model)."""

from __future__ import annotations

import asyncio
import time

from core.engine.lab import Lab
from tests.engine.topologies import stage1


async def test_a_blocked_loop_shows_as_engine_lag_and_a_free_one_does_not(network):
    async with Lab(stage1(), network=network) as lab:
        await asyncio.sleep(0.3)
        assert lab.frame()["engine"]["lag_ms"] < 150  # nothing to do: on time (generous for CI)
        time.sleep(0.4)  # the whole loop stalls, as under a load one process cannot carry
        await asyncio.sleep(0.1)
        assert lab.frame()["engine"]["lag_ms"] >= 300
        await asyncio.sleep(1.3)  # the window has moved past the stall
        assert lab.frame()["engine"]["lag_ms"] < 150
    assert lab.loop_lag._task is None  # stopped with the lab
