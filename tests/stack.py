"""The whole product as separate processes, as `make run` starts it: the lab workers (core.workers) and
(optionally) daphne, on a SQLite file (or a PostgreSQL database) and a Redis database of their own.

Used by the worker and browser tests and by the full-stack benchmarks, because a worker and daphne
cannot see pytest-django's test database.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
import redis

from core.engine import keys
from tests.conftest import redis_server_start
from tests.postgres import pg_query

BASE_DIR = Path(__file__).resolve().parent.parent
CONTENT = BASE_DIR / "lessons" / "content"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# Celery's start-up banner and its warning about root (CI runs as root): the same lines in every
# worker log, which would crowd out what a failure needs.
_NOISE = re.compile(r"^\s*$|^[-* ]*(-{3,}|\*{3,})|\.> |SecurityWarning|not recommended|--uid option|"
                    r"User information|_warn_or_raise_security_error")


def log_tail(directory: Path, pattern: str = "*.log", lines: int = 25) -> str:
    """The end of each process log in ``directory``: what a failure's report needs to say why (a
    CI run keeps nothing else of a stack)."""
    out = []
    for path in sorted(directory.glob(pattern)):
        text = [line for line in path.read_text(errors="replace").splitlines() if not _NOISE.search(line)][-lines:]
        out.append(f"--- the end of {path.name}" + ("\n" + "\n".join(text) if text else " (empty)"))
    return "\n".join(out)


class RestartableRedis:
    """A redis-server of one test's own on a fixed port, to kill and start again (keeping nothing
    on disk, as the bundled one runs): what a Redis restart does to the labs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = redis_server_start(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def start(self) -> None:
        self.proc = redis_server_start(self.port)


# As the Procfile starts it: through core.daphne_serve, with daphne's frame cap at the consumer's own
# (visualizer.consumers.MAX_MESSAGE_BYTES), so autobahn closes a too-big frame with 1009 before
# daphne buffers it, and its message cap at 4 MB, since autobahn holds what we send to that one too
# (test_daphne_limits.py checks that the numbers agree).
DAPHNE = ("-m", "core.daphne_serve")
DAPHNE_LIMITS = ("--websocket-max-message-size", "4194304", "--websocket-max-frame-size", "16384")


def _worker_start(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """core.workers as the Procfile starts it: LAB_PROCESSES Celery workers of LAB_SLOTS labs each."""
    return subprocess.Popen(
        [sys.executable, "-m", "core.workers", "--loglevel=warning", "--without-heartbeat"],
        cwd=BASE_DIR, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)


@dataclass
class Stack:
    env: dict[str, str]
    db_path: Path
    redis: redis.Redis
    worker: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[bytes] | None = None
    url: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    slots: int = 1
    processes: int = 1
    worker_log: IO[bytes] | None = None
    database_url: str = ""

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code).strip()

    def lab_state(self, lab_id: str) -> str:
        if self.database_url.startswith("postgres"):
            return pg_query(self.database_url, "select state from visualizer_lab where id = %s", (lab_id,))[0][0]
        with sqlite3.connect(self.db_path) as db:
            return db.execute("select state from visualizer_lab where id = ?",
                              (lab_id.replace("-", ""),)).fetchone()[0]

    def status(self, lab_id: str) -> dict:
        raw = self.redis.get(keys.status_key(lab_id))
        return json.loads(raw) if raw else {}

    def pool(self) -> list[psutil.Process]:
        """The worker processes that host labs (each hosts up to ``slots`` on its own loop)."""
        assert self.worker is not None
        try:
            return psutil.Process(self.worker.pid).children()
        except psutil.NoSuchProcess:
            return []

    def pool_ready(self) -> bool:
        """Every worker process is up and connected to the broker (Celery connects as it gets ready)."""
        port = int(self.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        procs = self.pool()
        if len(procs) != self.processes:
            return False
        try:
            return all(any(c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                           for c in p.net_connections(kind="tcp")) for p in procs)
        except psutil.NoSuchProcess:
            return False

    def wait_pool(self, timeout: float = 30) -> list[psutil.Process]:
        wait_for(self.pool_ready, timeout, "the worker processes to connect to the broker")
        return self.pool()

    def worker_restart(self) -> None:
        """Start new workers once the old ones have died (a SIGKILL, say); wait until they are ready."""
        assert self.worker is not None and self.worker_log is not None
        self.worker.wait(timeout=15)  # reap it: only a dead worker is replaced
        new = _worker_start(self.env, self.worker_log)
        self.procs[self.procs.index(self.worker)] = new
        self.worker = new
        self.wait_pool()


def _stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def run_stack(tmp_path: Path, redis_url: str, *, lessons: list[Path] | None = None,
              web: bool = False, slots: int = 1, processes: int = 1, idle_seconds: int = 120,
              redis_db: int = 1, asgi: str = "core.asgi:application",
              database_url: str | None = None, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Migrate, load lessons (all shipped ones by default), start the lab workers (``processes`` of
    ``slots`` labs each) and maybe daphne (serving ``asgi``: a test may serve the product's consumer
    with a seam of its own).

    On a SQLite file in tmp_path unless database_url names another (empty) database. ``env`` adds to
    every process's environment (a benchmark's own TMPDIR, say, to see what the stack leaves there)."""
    worker_redis = re.sub(r"/\d+$", "", redis_url) + f"/{redis_db}"
    db_path = tmp_path / "db.sqlite3"
    database_url = database_url or f"sqlite:///{db_path}"
    env = {**os.environ, **(env or {}), "REDIS_URL": worker_redis, "DATABASE_URL": database_url,
           "LAB_SLOTS": str(slots), "LAB_PROCESSES": str(processes), "LAB_IDLE_SECONDS": str(idle_seconds),
           "DJANGO_SETTINGS_MODULE": "core.settings"}
    client = redis.Redis.from_url(worker_redis, decode_responses=True)
    client.flushdb()  # tasks queued by earlier runs must never reach this worker
    stack = Stack(env=env, db_path=db_path, redis=client, database_url=database_url)
    # Each process logs to a file beside the database, to read when something hangs.
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("worker", "daphne")}  # noqa: SIM115
    try:
        stack.manage("migrate", "-v", "0")
        stack.manage("lessons", "load", *(str(p) for p in lessons or []))
        stack.slots, stack.processes, stack.worker_log = slots, processes, logs["worker"]
        stack.worker = _worker_start(env, logs["worker"])
        stack.procs.append(stack.worker)
        if web:
            port = free_port()
            stack.web = subprocess.Popen(
                [sys.executable, *DAPHNE, "-b", "127.0.0.1", "-p", str(port), *DAPHNE_LIMITS,
                 asgi],
                cwd=BASE_DIR, env=env, start_new_session=True,
                stdout=logs["daphne"], stderr=subprocess.STDOUT)
            stack.procs.append(stack.web)
            stack.url = f"http://127.0.0.1:{port}"

            def web_up() -> bool:
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port)) == 0

            wait_for(web_up, 30, "daphne to listen")
        stack.wait_pool()
        yield stack
    except BaseException as exc:
        exc.add_note(log_tail(tmp_path))  # the processes write their logs themselves: nothing to flush
        raise
    finally:
        # Cold shutdown (SIGQUIT) for the workers: a running lab must not block it.
        for proc in reversed(stack.procs):
            _stop(proc, signal.SIGQUIT if proc is stack.worker else signal.SIGTERM)
        client.flushdb()
        client.close()
        for log in logs.values():
            log.close()
