"""Several worker "machines" on one: each a Linux network namespace with a loopback of its own.

A lab's nodes bind 127.A.B.x on the machine whose worker runs it; in a namespace that is its own
loopback, which neither the root namespace nor the other "host" sees. What the hosts share is
what real machines would reach over the network: the one Redis and the one PostgreSQL, here
through UNIX sockets on the shared file system, so that nothing listens beyond loopback and no
virtual ethernet is needed. daphne stays in the root namespace, as the web machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import psutil
import redis

from tests.conftest import REDIS_SERVER
from tests.stack import BASE_DIR, DAPHNE, DAPHNE_LIMITS, _stop, _worker_start, free_port, wait_for

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")  # where `ip netns add` keeps a namespace (a bind-mounted nsfs file)
T = TypeVar("T")


def netns_available() -> str | None:
    """Why two namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    return None


@contextlib.contextmanager
def netns(name: str) -> Iterator[str]:
    """A fresh network namespace with its loopback up; deleted on the way out, whatever happened."""
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=15)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=15)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)


def in_netns(name: str, call: Callable[[], T]) -> T:
    """call() from a thread that has joined namespace name, so that what it starts lives there.

    As `ip netns exec` does (setns on /run/netns/<name>), but around a Python call: the worker is
    started by tests.stack._worker_start, unchanged. A network namespace belongs to a thread, so
    the test's own threads stay where they are.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {name}")
            finally:
                os.close(fd)
            result.append(call())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join(timeout=60)
    if error:
        raise error[0]
    assert result, f"starting in {name} did not finish"
    return result[0]


def listening(namespace: str | None) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket in a namespace (None: the root one), per ss."""
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    out = subprocess.run([*prefix, "ss", "-ltnH"], check=True, capture_output=True, text=True, timeout=15).stdout
    found = set()
    for line in out.splitlines():
        local = line.split()[3]  # State Recv-Q Send-Q Local:Port Peer:Port
        address, _, port = local.rpartition(":")
        found.add((address.strip("[]"), int(port)))
    return found


@contextlib.contextmanager
def unix_redis(directory: Path) -> Iterator[str]:
    """The bundled redis-server on a UNIX socket only (--port 0: no TCP at all); yields its URL."""
    sock = directory / "redis.sock"
    proc = subprocess.Popen([str(REDIS_SERVER), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"unix://{sock}?db=0"
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {proc.returncode}")
            with contextlib.suppress(redis.ConnectionError, FileNotFoundError), redis.Redis.from_url(url) as r:
                return bool(r.ping())
            return False

        wait_for(up, 10, "redis-server on its UNIX socket")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Host:
    namespace: str
    worker: subprocess.Popen[bytes]

    def pids(self) -> set[int]:
        """core.workers and every process under it (the Celery worker that hosts labs, its children)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            return {self.worker.pid, *(p.pid for p in psutil.Process(self.worker.pid).children(recursive=True))}
        return set()


@dataclass
class Room:
    env: dict[str, str]
    url: str
    redis: redis.Redis
    hosts: list[Host] = field(default_factory=list)

    def host_of(self, pid: int) -> Host | None:
        return next((h for h in self.hosts if pid in h.pids()), None)


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@contextlib.contextmanager
def run_room(tmp_path: Path, *, redis_url: str, database_url: str, lessons: list[Path], hosts: int,
             slots: int) -> Iterator[Room]:
    """daphne in the root namespace and one worker in each of `hosts` fresh namespaces.

    Everything is stopped and every namespace deleted on the way out, even when a start failed.
    """
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LAB_SLOTS": str(slots),
           "LAB_PROCESSES": "1", "LAB_IDLE_SECONDS": "120", "DJANGO_SETTINGS_MODULE": "core.settings"}
    manage(env, "migrate", "-v", "0")
    manage(env, "lessons", "load", *(str(p) for p in lessons))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    tag = f"scalelab-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
    with contextlib.ExitStack() as namespaces:
        try:
            port = free_port()
            log = open(tmp_path / "daphne.log", "wb")  # noqa: SIM115
            logs.append(log)
            web = subprocess.Popen([sys.executable, *DAPHNE, "-b", "127.0.0.1", "-p", str(port), *DAPHNE_LIMITS,
                                    "core.asgi:application"], cwd=BASE_DIR, env=env, start_new_session=True,
                                   stdout=log, stderr=subprocess.STDOUT)
            procs.append(web)
            room = Room(env=env, url=f"http://127.0.0.1:{port}", redis=client)
            for i in range(hosts):
                name = namespaces.enter_context(netns(f"{tag}-{i}"))
                log = open(tmp_path / f"worker-{i}.log", "wb")  # noqa: SIM115
                logs.append(log)
                worker = in_netns(name, lambda log=log: _worker_start(env, log))
                procs.append(worker)
                room.hosts.append(Host(namespace=name, worker=worker))
            wait_for(lambda: listening(None) >= {("127.0.0.1", port)}, 30, "daphne to listen")
            for host in room.hosts:
                # core.workers and the one Celery worker it starts (hosting every lab on one loop)
                wait_for(lambda host=host: len(host.pids()) == 2, 30, f"{host.namespace}'s lab worker")
            yield room
        finally:
            # Cold shutdown (SIGQUIT) for the workers: a running lab must not block it. Then the
            # namespaces go (ExitStack), once nothing runs in them any more.
            for proc in reversed(procs):
                _stop(proc, signal.SIGTERM if proc is procs[0] else signal.SIGQUIT)
            client.close()
            for log in logs:
                log.close()
