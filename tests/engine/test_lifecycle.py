"""Bounded waits (core.engine.lifecycle): why a cancel is not enough, and what ends a loop anyway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time

import pytest

from core.engine.lifecycle import Background, reap, wait_child, wait_ended


async def lose_a_cancel(inner: asyncio.Future[None], victim: asyncio.Task[object]) -> None:
    """Complete ``inner`` and cancel ``victim`` in the same loop turn: the race 3.11 loses."""
    inner.set_result(None)
    victim.cancel()


async def test_wait_for_loses_a_cancel_that_races_completion_on_python_3_11():
    # The root cause of the hangs: on 3.11 a task blocked in wait_for whose awaited call completes
    # in the same turn as its cancel carries on as if nobody had cancelled it. 3.12 rebuilt wait_for
    # on asyncio.timeout and keeps the cancel: then the engine's defences are merely redundant.
    inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def victim() -> str:
        await asyncio.wait_for(inner, 5)
        return "carried on"

    task = asyncio.create_task(victim())
    await asyncio.sleep(0)
    await lose_a_cancel(inner, task)
    if sys.version_info < (3, 12):
        assert await task == "carried on"
    else:
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_asyncio_timeout_keeps_a_cancel_that_races_completion():
    # What the engine uses instead of wait_for.
    inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def victim() -> str:
        async with asyncio.timeout(5):
            await inner
        await asyncio.sleep(0)  # with the cancel lost, this would return normally
        return "carried on"

    task = asyncio.create_task(victim())
    await asyncio.sleep(0)
    await lose_a_cancel(inner, task)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_it_ends_a_background_loop_that_lost_its_cancellation(caplog):
    turns = 0
    inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def loop(alive) -> None:
        nonlocal turns
        while alive():
            turns += 1
            await asyncio.wait_for(inner if turns == 1 else asyncio.sleep(0.05), 5)

    background = Background("node x")
    task = background.start(loop, "refresh")
    await asyncio.sleep(0)
    stopping = asyncio.create_task(background.stop(timeout=2.0))
    await asyncio.sleep(0)  # stop() has cancelled the loop...
    inner.set_result(None)  # ...in the turn its awaited call completes: 3.11 loses the cancel
    began = time.monotonic()
    assert await stopping is True
    assert time.monotonic() - began < 1.0
    assert task.done()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_it_gives_up_on_a_task_that_never_ends_and_says_so(caplog):
    async def stubborn() -> None:
        for _ in range(40):  # ignores every cancel for 2 s
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    began = time.monotonic()
    assert await wait_ended([task], who="node kv (127.1.2.91)", what="its refresher", timeout=0.3) is False
    assert time.monotonic() - began < 0.6
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "node kv (127.1.2.91)" in record.getMessage()
    assert "its refresher" in record.getMessage()
    assert "stubborn" in record.getMessage()
    await asyncio.wait([task], timeout=5)


async def test_it_bounds_the_wait_for_a_child_and_reaps_it_itself():
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    assert await wait_child(proc, timeout=0.2) is False  # still running
    assert reap(proc.pid, who="test") is True
    with pytest.raises(ChildProcessError):  # collected: no zombie left
        os.waitpid(proc.pid, 0)
    assert await wait_child(proc, timeout=5.0) is True  # asyncio hears of it too


def test_it_reaps_a_child_that_asyncio_never_heard_of():
    proc = subprocess.Popen(["sleep", "30"])
    assert reap(proc.pid, who="test") is True
    proc.returncode = -9  # reaped above: keep Popen from looking again
