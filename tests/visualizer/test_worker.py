"""A real Celery worker hosts a lab on loopback, and stopping it leaves nothing behind.

The stack runs in subprocesses (migrate, worker, service calls) sharing one temporary SQLite file,
because the worker cannot see pytest-django's test database.
"""

from __future__ import annotations

import ipaddress
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from core.engine import keys, scratch
from tests.stack import CONTENT, Stack, run_stack, wait_for

BASE_DIR = Path(__file__).resolve().parent.parent.parent
FIXTURE = BASE_DIR / "tests" / "lessons" / "fixtures" / "valid.md"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

pytestmark = pytest.mark.slow


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


def owners(network: str, tries: int = 20) -> set[int]:
    """The processes holding sockets on the network.

    psutil maps sockets to processes by scanning every process's fds and then reading /proc/net, so
    a socket opened in between (a client's DNS query, say) has no owner yet: read again until each
    one has.
    """
    for _ in range(tries):
        pids = {c.pid for c in on_network(network)}
        if None not in pids:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"sockets on {network} with no owner after {tries} reads")


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with run_stack(tmp_path, redis_url, lessons=[FIXTURE]) as stack:
        yield stack


def lab_start(stack: Stack, session_key: str = "worker-test", slug: str = "fixture-single") -> tuple[str, str]:
    lab_id, network = stack.shell(
        "from lessons.models import Lesson\n"
        "from visualizer.services import lab_start\n"
        f"lab = lab_start(session_key='{session_key}', lesson=Lesson.objects.get(slug='{slug}'))\n"
        "print('LAB', lab.id, lab.network)"
    ).splitlines()[-1].split()[1:]
    return lab_id, network


def lab_stop(stack: Stack, lab_id: str) -> None:
    stack.shell(
        "from visualizer.models import Lab\n"
        "from visualizer.services import lab_stop\n"
        f"lab_stop(lab=Lab.objects.get(pk='{lab_id}'))"
    )


def lab_start_running(stack: Stack, session_key: str = "worker-test", slug: str = "fixture-single") -> tuple[str, str]:
    """Start a lab through the services, as the consumer does; wait until it runs."""
    lab_id, network = lab_start(stack, session_key, slug)

    def running() -> bool:
        status = stack.status(lab_id)
        assert status.get("state") != "failed", status
        return status.get("state") == "running"

    wait_for(running, 30, "the lab to run")
    return lab_id, network


def test_it_hosts_a_lab_on_loopback_and_stop_frees_everything(stack: Stack) -> None:
    pool_before = {p.pid for p in stack.pool()}
    lab_id, network = lab_start_running(stack)
    sockets = on_network(network)
    assert {c.laddr.port for c in sockets if c.status == psutil.CONN_LISTEN} >= {8080}
    assert any(c.laddr.port == 8053 and c.type == 2 for c in sockets)  # the DNS server's UDP socket
    # Everything the lab's process binds is on loopback.
    lab_sockets = bound_sockets(pool_before)
    assert lab_sockets
    assert all(ipaddress.ip_address(c.laddr.ip) in LOOPBACK for c in lab_sockets), lab_sockets

    lab_stop(stack, lab_id)
    wait_for(lambda: not on_network(network), 15, f"every socket on {network} to close")
    wait_for(lambda: stack.lab_state(lab_id) == "stopped", 15, "the lab row to say stopped")
    assert not bound_sockets(pool_before)
    assert {p.pid for p in stack.pool()} == pool_before  # no extra children, nothing replaced


def test_a_worker_that_dies_takes_its_lab_with_it(stack: Stack) -> None:
    lab_id, network = lab_start_running(stack)
    [pool_process] = stack.pool()
    pool_process.kill()  # as the OOM killer would
    wait_for(lambda: not on_network(network), 15, f"every socket on {network} to close")
    # Nobody refreshes the status any more: it expires, and the page shows the lab as gone.
    assert 0 < stack.redis.ttl(f"scalelab:lab:{lab_id}:status") <= 15
    assert not psutil.pid_exists(pool_process.pid) or pool_process.status() == psutil.STATUS_ZOMBIE


def test_a_lab_waits_in_the_queue_while_every_slot_is_busy(stack: Stack) -> None:
    first, _ = lab_start_running(stack, "alice")
    second, _ = lab_start(stack, "bob")  # the only slot is taken
    time.sleep(1.5)
    status = stack.status(second)
    assert (status["state"], status["slots"]) == ("queued", 1)
    lab_stop(stack, first)
    wait_for(lambda: stack.status(second).get("state") == "running", 30, "the queued lab to run")
    lab_stop(stack, second)


@pytest.fixture
def stage2_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with run_stack(tmp_path, redis_url, lessons=[CONTENT / "02-web-and-data-tiers.md"]) as stack:
        yield stack


def test_one_pool_process_hosts_lab_after_lab_and_each_stop_frees_everything(stage2_stack: Stack) -> None:
    # Each lab runs in turn on the same worker process's lab loop, with a redis-server child that
    # is killed, restarted and stopped: what `lessons prove` hung on, through Celery.
    stack = stage2_stack
    [pool] = stack.pool()

    def redis_children() -> list[psutil.Process]:
        return [c for c in pool.children() if c.name().startswith("redis-server")]

    def node_dirs() -> list[Path]:
        return list(Path(tempfile.gettempdir()).glob(f"{scratch.PREFIX}{pool.pid}-*"))

    for i in range(3):
        lab_id, network = lab_start_running(stack, f"student-{i}", "web-and-data-tiers")
        assert len(redis_children()) == 1 and node_dirs()
        for command in ({"action": "traffic", "rate": 30}, {"action": "kill", "node": "kv"},
                        {"action": "restart", "node": "kv"}, {"action": "add", "like": "web"},
                        {"action": "kill", "node": "db"}, {"action": "restart", "node": "db"},
                        {"action": "remove", "node": "web-2"}):
            stack.redis.publish(keys.in_channel(lab_id), json.dumps(command))
            time.sleep(0.4)
        lab_stop(stack, lab_id)
        wait_for(lambda network=network: not on_network(network), 10, f"every socket on {network} to close")
        wait_for(lambda: not redis_children(), 10, "the lab's redis-server to be reaped")
        wait_for(lambda: not node_dirs(), 10, "the lab's node directories to be removed")
        wait_for(lambda lab_id=lab_id: stack.lab_state(lab_id) == "stopped", 15, "the lab row to say stopped")
    assert [p.pid for p in stack.pool()] == [pool.pid]  # the same process hosted all three
