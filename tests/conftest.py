"""Test-wide fixtures: a private redis-server (the bundled binary) unless REDIS_URL is given, and a
PostgreSQL cluster for the tests that ask for one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from tests.postgres import Postgres, pg_bin_dir, postgres_cluster

if TYPE_CHECKING:
    from tests.stack import RestartableRedis

REDIS_SERVER = Path(sys.executable).parent / "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_start(port: int) -> subprocess.Popen[bytes]:
    """Start the bundled redis-server on 127.0.0.1:port and wait until it answers PING."""
    proc = subprocess.Popen(
        [str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.02)
        finally:
            client.close()


@pytest.fixture(scope="session", autouse=True)
def redis_url() -> Iterator[str]:
    """The Redis every test uses; settings and the Celery app are pointed at it."""
    from django.conf import settings

    from core.celery import app
    from core.env import broker_url

    proc = None
    url = os.environ.get("REDIS_URL")
    if not url:
        proc = redis_server_start(free_port())
        url = f"redis://127.0.0.1:{proc.args[2]}/0"
        os.environ["REDIS_URL"] = url
    settings.REDIS_URL = url
    app.conf.broker_url = broker_url(url)  # kombu's name for a unix:// one
    try:
        yield url
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
            os.environ.pop("REDIS_URL", None)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of the session's own (tests.postgres); each test makes its database."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        # Never a skip (as for the browser): `make test` is the whole suite, so a missing server is
        # a failure that says how to get one, never a quietly smaller run.
        pytest.fail("PostgreSQL is not installed (/usr/lib/postgresql/*/bin): "
                    "apt-get install -y postgresql (.ci/run installs it)")
    with postgres_cluster(bin_dir) as pg:
        yield pg


@pytest.fixture
def own_redis() -> Iterator[RestartableRedis]:
    """A redis-server of the test's own, to kill and start again (a Redis restart)."""
    from tests.stack import RestartableRedis  # tests.stack imports this module

    server = RestartableRedis()
    yield server
    server.kill()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Lesson proofs first, browser tests last.

    Browser tests last: Playwright's sync API keeps an event loop running in the main thread for
    the rest of the session, which asyncio tests after it cannot share. Proofs first: they measure
    real throughput (a hot shard's utilisation, a balancer's spread), and run after the other ~600
    tests in the same process, two of their steps failed in 2 of 2 full runs while passing alone
    and as a whole file every time; the cause is not pinned yet (see the issue 10 closing note).
    """
    items.sort(key=lambda item: (0 if "tests/lessons/test_prove.py" in str(item.fspath) else
                                 2 if "tests/browser/" in str(item.fspath) else 1))
