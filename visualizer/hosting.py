"""One event loop per worker process, hosting every lab the process runs.

A worker is a Celery thread pool (``-P threads -c LAB_SLOTS``, see core.workers): each task thread
hands its lab's coroutine to this loop and blocks until the lab ends, so Celery still counts one
slot per running lab, while the labs share one loop. Measured against a thread and an
``asyncio.run`` per lab (bench/hosting_bench.py): half the CPU for 50 labs at default traffic and a
quicker start, for the same memory, because 50 loops in one process spend their time handing the
GIL round. The price: a lab that blocked the loop would stall its siblings, so nothing in the
engine may block it (blocking work goes to threads, as the SQL nodes do), and every lab is its
own task, so one that crashes or hangs in its stop holds up no other.

The loop's thread lives as long as the process: it forks the labs' redis-server children, whose
PR_SET_PDEATHSIG fires when the forking *thread* exits (core.engine.nodes.redisproc).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
SHUTDOWN_S = 10.0  # how long a worker's shutdown waits for its labs' bounded stops
IO_THREADS = 32  # the loop's default executor: every lab's asyncio.to_thread calls share it
BEAT_S = 1.0  # how often a waiting task thread calls its lab's ``beat``
# A loop that has not turned for this long is hung, not busy: its labs' task threads stop beating
# for them, so their pages find them lost. Shorter stalls (a room's labs booting at once) are
# bridged by the threads' beats.
STALL_S = 30.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_tasks: set[asyncio.Task[Any]] = set()
_abandoned = threading.Event()  # set once a shutdown has waited SHUTDOWN_S: the waiters give up
_turned = time.monotonic()  # when the loop last ran its turn marker (_turn)


def _turn() -> None:
    global _turned
    _turned = time.monotonic()
    asyncio.get_running_loop().call_later(BEAT_S, _turn)


class ShutDown(Exception):
    """The worker's shutdown stopped this lab, or gave up waiting for it to (the process is about to
    exit, which closes whatever the lab still holds)."""


def loop() -> asyncio.AbstractEventLoop:
    """This process's lab loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new = asyncio.new_event_loop()
            new.set_default_executor(concurrent.futures.ThreadPoolExecutor(IO_THREADS, "labs-io"))
            new.call_soon(_turn)
            threading.Thread(target=new.run_forever, name="labs-loop", daemon=True).start()
            _loop = new
        return _loop


async def _hosted(coro: Coroutine[Any, Any, T]) -> T:
    task = asyncio.current_task()
    assert task is not None
    _tasks.add(task)
    try:
        return await coro
    finally:
        _tasks.discard(task)


def run(coro: Coroutine[Any, Any, T], *, beat: Callable[[], None] | None = None) -> T:
    """Run ``coro`` on the lab loop and wait for its result in this (task) thread.

    While it waits, the thread calls ``beat`` every BEAT_S as long as the loop keeps turning (within
    STALL_S): the lab's heartbeat then says "this process hosts it" even while the shared loop is
    seconds behind, as when a room's labs all start at once, where the engine's own beat, on that
    loop, would lapse and the lab be taken for lost. Raises ShutDown when a shutdown stopped it
    (or gave up on it)."""
    future = asyncio.run_coroutine_threadsafe(_hosted(coro), loop())
    while True:
        if beat is not None and time.monotonic() - _turned < STALL_S:
            beat()
        try:
            return future.result(timeout=BEAT_S)
        except concurrent.futures.CancelledError:
            raise ShutDown("stopped by the worker's shutdown") from None
        except concurrent.futures.TimeoutError:
            if _abandoned.is_set():
                raise ShutDown("the worker shut down before this lab ended") from None


def running() -> int:
    """How many coroutines the loop hosts now."""
    return len(_tasks)


async def _cancel_all(timeout: float) -> int:
    tasks = list(_tasks)
    for task in tasks:
        task.cancel()  # each lab's own stop runs (bounded) in its finally
    if not tasks:
        return 0
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    return len(pending)


def shutdown(timeout: float = SHUTDOWN_S) -> None:
    """Stop every hosted lab at once and wait, bounded, for their stops; then let the task threads
    go (Celery waits for them before the process exits, warm shutdown or cold)."""
    with _lock:
        current = _loop
    if current is None or current.is_closed():
        return
    started = time.monotonic()
    try:
        left = asyncio.run_coroutine_threadsafe(_cancel_all(timeout), current).result(timeout + 1)
    except (concurrent.futures.TimeoutError, RuntimeError) as exc:
        left = -1
        log.warning("labs: shutdown could not wait for the labs: %r", exc)
    if left:
        log.warning("labs: %s lab(s) had not stopped %.1f s into the shutdown; leaving them to the exit",
                    "some" if left < 0 else left, time.monotonic() - started)
        _abandoned.set()
