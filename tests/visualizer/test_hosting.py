"""One loop hosts every lab of a process: a lab that fails, or one slow to stop, spares the others."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from visualizer import hosting


@pytest.fixture(autouse=True)
def fresh_shutdown() -> Iterator[None]:
    yield
    hosting._abandoned.clear()  # a test's shutdown must not end the next test's runs


def test_labs_run_side_by_side_on_one_loop_thread_and_a_failure_stays_its_own() -> None:
    threads: list[str] = []
    release = threading.Event()

    async def lab(n: int) -> int:
        threads.append(threading.current_thread().name)
        while not release.is_set():
            await asyncio.sleep(0.01)
        return n

    async def crash() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("a node blew up")

    with ThreadPoolExecutor(4) as pool:  # as Celery's task threads
        labs = [pool.submit(hosting.run, lab(n)) for n in range(3)]
        failed = pool.submit(hosting.run, crash())
        with pytest.raises(RuntimeError, match="blew up"):
            failed.result(5)
        assert not any(f.done() for f in labs)  # the siblings run on
        release.set()
        assert [f.result(5) for f in labs] == [0, 1, 2]
    assert threads == ["labs-loop"] * 3


def test_a_shutdown_stops_every_lab_and_does_not_wait_long_for_a_stuck_one() -> None:
    stopped: dict[str, float] = {}

    async def lab(name: str, stop_takes: float) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            # A lab's stop: quick for one, far past the shutdown's bound for the other.
            try:
                await asyncio.sleep(stop_takes)
            except asyncio.CancelledError:
                await asyncio.sleep(stop_takes)
            stopped[name] = time.monotonic()

    with ThreadPoolExecutor(2) as pool:
        quick = pool.submit(hosting.run, lab("quick", 0.1))
        stuck = pool.submit(hosting.run, lab("stuck", 30))
        while hosting.running() < 2:
            time.sleep(0.01)
        began = time.monotonic()
        hosting.shutdown(timeout=1.0)
        assert time.monotonic() - began < 3  # bounded by the timeout, not by the stuck lab
        assert stopped["quick"] - began < 0.5  # its stop did not wait for its sibling's
        with pytest.raises(hosting.ShutDown, match="stopped"):
            quick.result(1)
        with pytest.raises(hosting.ShutDown, match="before this lab ended"):
            stuck.result(3)  # its task thread is let go: the process may exit
    for task in list(hosting._tasks):  # the stuck one, for the next test's loop
        hosting.loop().call_soon_threadsafe(task.cancel)


def test_a_waiting_lab_beats_through_a_stall_of_its_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A room's labs booting at once can hold the shared loop for seconds, longer than a heartbeat
    lives; the lab's task thread beats for it meanwhile, so no page takes it for lost."""
    beats: list[float] = []

    async def stalls() -> str:
        await asyncio.sleep(0.2)  # the loop turns once, then is held
        time.sleep(3.5)  # a busy loop: nothing else on it runs, the engine's own beat included
        return "done"

    assert hosting.run(stalls(), beat=lambda: beats.append(time.monotonic())) == "done"
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert len(beats) >= 4 and max(gaps) < 1.5, gaps


def test_a_hung_loop_gets_no_beats_so_its_labs_are_found_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosting, "STALL_S", 1.0)
    beats: list[float] = []

    async def hangs() -> float:
        await asyncio.sleep(0.2)
        began = time.monotonic()
        time.sleep(3.5)  # longer than STALL_S: hung, not busy
        return began

    began = hosting.run(hangs(), beat=lambda: beats.append(time.monotonic()))
    # None from STALL_S after the loop's last turn (plus a beat's wait) until the loop runs again.
    late = [b for b in beats if began + hosting.STALL_S + hosting.BEAT_S + 0.5 < b < began + 3.3]
    assert beats and not late, (began, beats)
