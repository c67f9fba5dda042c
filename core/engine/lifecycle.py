"""Bounded waits for the engine's own tasks and children: a stop always ends, and says when it forced.

Why this module exists. A lab is many tasks in one event loop, and a task told to stop with
``cancel()`` is not certain to stop: on Python 3.11, ``asyncio.wait_for`` returns normally, losing
the cancellation, when the cancel arrives in the same loop turn as the awaited call completes
(CPython gh-86296, fixed in 3.12 by rebuilding wait_for on ``asyncio.timeout``). Libraries the
nodes use wrap their socket calls in ``wait_for`` (redis-py's ``send_packed_command`` with a
``socket_timeout``, dnspython's queries), so a node's background loop could lose its cancellation
once in thousands of stops, go on forever, and leave whoever awaited it waiting forever: a lab
that never stopped, a step that never finished.

So, everywhere in the engine:

- a background loop is started by a ``Background`` and asks ``alive()`` every turn: once stopped it
  ends at its next turn even if its cancellation was lost;
- waiting for tasks to end, for a child process to exit, or for a peer, is bounded, and a bound
  that expires is logged with the owner and what it waited for (``wait_ended``, ``reap``);
- the engine's own timeouts use ``asyncio.timeout``, which keeps a cancellation that races them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger("core.engine")
TASK_END_S = 1.0  # how long a stopped background task may take to end
REAP_S = 2.0  # how long a SIGKILLed child may take to be reported dead

Alive = Callable[[], bool]
_detached: set[asyncio.Future[Any]] = set()


def detach(aw: Awaitable[Any]) -> None:
    """Let ``aw`` run to its end without anyone waiting (a reference is kept until it is done):
    for the part of a close that need not hold up a forced stop."""
    fut = asyncio.ensure_future(aw)
    _detached.add(fut)
    fut.add_done_callback(_detached.discard)


async def wait_ended(tasks: Iterable[asyncio.Task[Any]], *, who: str, what: str,
                     timeout: float = TASK_END_S, cancel: bool = True) -> bool:
    """Cancel ``tasks`` (unless ``cancel`` is false: then they may finish their work) and wait at
    most ``timeout`` for them to end; never raises for them.

    True if they all ended. Otherwise logs which did not (they are left cancelled: a task started
    by ``Background`` then ends at its next turn) and returns False."""
    pending = [t for t in tasks if not t.done()]
    if cancel:
        for task in pending:
            task.cancel()
    if not pending:
        return True
    _, still = await asyncio.wait(pending, timeout=timeout)
    for task in still:
        task.cancel()
    if still:
        names = ", ".join(sorted(t.get_name() for t in still))
        log.warning("%s: gave up after %.1f s waiting for %s to end (%s)", who, timeout, what, names)
        return False
    return True


class Background:
    """The background loops of one owner (a node, the lab), each told apart by a generation.

    ``start(fn, name)`` runs ``fn(alive)``; the loop must check ``alive()`` every turn. ``stop()``
    makes every ``alive`` false, cancels, and waits bounded; ``force()`` does the first two at once."""

    def __init__(self, who: str) -> None:
        self.who = who
        self._gen = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, fn: Callable[[Alive], Coroutine[Any, Any, None]], name: str) -> asyncio.Task[None]:
        gen = self._gen

        def alive() -> bool:
            return self._gen == gen

        task = asyncio.create_task(fn(alive), name=f"{self.who}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    async def stop(self, *, timeout: float = TASK_END_S) -> bool:
        """End every loop; True if they all ended within ``timeout``."""
        self._gen += 1
        return await wait_ended(list(self._tasks), who=self.who, what="its background tasks", timeout=timeout)

    def force(self) -> None:
        """End every loop without waiting (they end at their next turn)."""
        self._gen += 1
        for task in list(self._tasks):
            task.cancel()


async def wait_child(proc: asyncio.subprocess.Process, *, timeout: float) -> bool:
    """Wait at most ``timeout`` for ``proc`` to exit (as reported by asyncio); True if it did."""
    if proc.returncode is not None:
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await proc.wait()
        return True
    return False


def reap(pid: int, *, who: str, timeout: float = REAP_S) -> bool:
    """SIGKILL ``pid`` and collect its exit status synchronously, waiting at most ``timeout``.

    For the forced path only (it may block the loop for up to ``timeout``; a SIGKILLed process
    normally exits within milliseconds). True if the process is gone (reaped here or elsewhere)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (asyncio's child watcher got there first)
            return True
        if done:
            return True
        if time.monotonic() >= deadline:
            log.warning("%s: child %d did not exit %.1f s after SIGKILL", who, pid, timeout)
            return False
        time.sleep(0.01)
