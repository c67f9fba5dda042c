"""A real Celery worker hosts a lab on loopback, and stopping it leaves nothing behind.

The stack runs in subprocesses (migrate, worker, service calls) sharing one temporary SQLite file,
because the worker cannot see pytest-django's test database.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis

from core.engine import keys

BASE_DIR = Path(__file__).resolve().parent.parent.parent
FIXTURE = BASE_DIR / "tests" / "lessons" / "fixtures" / "valid.md"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("core.engine.runner") is None,
                       reason="the lab engine (core.engine.runner) has not landed yet"),
]


@dataclass
class Stack:
    env: dict[str, str]
    db_path: Path
    redis: redis.Redis
    worker: subprocess.Popen[bytes]

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code).strip()

    def lab_state(self, lab_id: str) -> str:
        with sqlite3.connect(self.db_path) as db:
            return db.execute("select state from visualizer_lab where id = ?",
                              (lab_id.replace("-", ""),)).fetchone()[0]

    def status(self, lab_id: str) -> dict:
        raw = self.redis.get(keys.status_key(lab_id))
        return json.loads(raw) if raw else {}

    def pool(self) -> list[psutil.Process]:
        return psutil.Process(self.worker.pid).children(recursive=True)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def bound_sockets(pids: set[int] | None = None) -> list[psutil._common.sconn]:
    """Listening TCP and bound UDP sockets (optionally of the given processes)."""
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if pids is not None and conn.pid not in pids:
            continue
        if conn.status == psutil.CONN_LISTEN or (conn.type == 2 and not conn.raddr):  # 2 = SOCK_DGRAM
            out.append(conn)
    return out


def on_network(network: str) -> list[psutil._common.sconn]:
    return [c for c in bound_sockets() if c.laddr and c.laddr.ip.startswith(network + ".")]


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    # A Redis database of its own, so tasks queued by other tests never reach this worker.
    worker_redis = re.sub(r"/\d+$", "", redis_url) + "/1"
    db_path = tmp_path / "db.sqlite3"
    env = {**os.environ, "REDIS_URL": worker_redis, "DATABASE_URL": f"sqlite:///{db_path}",
           "LAB_SLOTS": "1", "LAB_IDLE_SECONDS": "120", "DJANGO_SETTINGS_MODULE": "core.settings"}
    client = redis.Redis.from_url(worker_redis, decode_responses=True)
    client.flushdb()
    worker = None
    try:
        stack = Stack(env=env, db_path=db_path, redis=client, worker=None)  # type: ignore[arg-type]
        stack.manage("migrate", "-v", "0")
        stack.manage("lessons", "load", str(FIXTURE))
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "core", "worker", "-P", "prefork", "-c", "1",
             "--loglevel=warning", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=BASE_DIR, env=env, start_new_session=True,
        )
        stack.worker = worker
        wait_for(lambda: len(stack.pool()) == 1, 30, "the worker's pool process")
        yield stack
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGQUIT)  # cold shutdown: a running lab must not block it
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        client.flushdb()
        client.close()


def test_it_hosts_a_lab_on_loopback_and_stop_frees_everything(stack: Stack) -> None:
    pool_before = {p.pid for p in stack.pool()}
    lab_id, network = stack.shell(
        "from lessons.models import Lesson\n"
        "from visualizer.services import lab_start\n"
        "lab = lab_start(session_key='worker-test', lesson=Lesson.objects.get(slug='fixture-single'))\n"
        "print('LAB', lab.id, lab.network)"
    ).splitlines()[-1].split()[1:]

    def running() -> bool:
        status = stack.status(lab_id)
        assert status.get("state") != "failed", status
        return status.get("state") == "running"

    wait_for(running, 30, "the lab to run")
    sockets = on_network(network)
    assert {c.laddr.port for c in sockets if c.status == psutil.CONN_LISTEN} >= {8080}
    assert any(c.laddr.port == 8053 and c.type == 2 for c in sockets)  # the DNS server's UDP socket
    # Everything the lab's process binds is on loopback.
    lab_sockets = bound_sockets(pool_before)
    assert lab_sockets
    assert all(ipaddress.ip_address(c.laddr.ip) in LOOPBACK for c in lab_sockets), lab_sockets

    stack.shell(
        "from visualizer.models import Lab\n"
        "from visualizer.services import lab_stop\n"
        f"lab_stop(lab=Lab.objects.get(pk='{lab_id}'))"
    )
    wait_for(lambda: not on_network(network), 15, f"every socket on {network} to close")
    wait_for(lambda: stack.lab_state(lab_id) == "stopped", 15, "the lab row to say stopped")
    assert not bound_sockets(pool_before)
    assert {p.pid for p in stack.pool()} == pool_before  # no extra children, nothing replaced
