"""A throwaway PostgreSQL cluster from Debian's package, reached only through a UNIX socket.

initdb in a fresh temp directory, the server with no TCP listener at all (listen_addresses='')
and its socket in that directory, so that processes in other network namespaces reach it through
the file system. PostgreSQL refuses to run as root, so under root (CI) it runs as the `postgres`
user the Debian package creates. Durability is off: the cluster is gone after the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from core.env import parse_database_url

SUPERUSER = "scalelab"
START_TIMEOUT_S = 30


def pg_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb (Debian's layout), if installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


@dataclass
class Postgres:
    bin_dir: Path
    root: Path  # the cluster's data directory and socket live here

    @property
    def socket_dir(self) -> str:
        return str(self.root)

    def url(self, dbname: str) -> str:
        """A DATABASE_URL for core.env.parse_database_url (libpq's socket-directory form)."""
        return f"postgres://{SUPERUSER}@/{dbname}?host={self.socket_dir}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.socket_dir, user=SUPERUSER, dbname=dbname, autocommit=True,
                               connect_timeout=10)

    def create_database(self) -> str:
        name = f"scalelab_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


def pg_query(database_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
    """Rows of one query, straight from the database a DATABASE_URL names (not through Django)."""
    db = parse_database_url(database_url)
    with psycopg.connect(host=db["HOST"], port=db["PORT"] or None, user=db["USER"], password=db["PASSWORD"] or None,
                         dbname=db["NAME"], connect_timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def _as_owner() -> list[str]:
    # runuser, not su or sudo: no PAM session or password prompt, and it is in util-linux.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(cmd: list[str], timeout: float) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stdout}{result.stderr}")


@contextlib.contextmanager
def postgres_cluster(bin_dir: Path) -> Iterator[Postgres]:
    """Start a cluster; on the way out stop it (immediate, then SIGKILL) and remove its files."""
    # Directly under /tmp: pytest's own tmp dirs are 0700 root's, where `postgres` cannot go.
    root = Path(tempfile.mkdtemp(prefix="scalelab-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    pg = Postgres(bin_dir=bin_dir, root=root)
    started = False
    try:
        _run([*_as_owner(), str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
              "-E", "UTF8", "--locale=C", "--no-sync"], timeout=120)
        options = (f"-c listen_addresses='' -c unix_socket_directories='{root}' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = True  # from here on, stop it whatever happens
        _run([*_as_owner(), str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
              "-t", str(START_TIMEOUT_S), "-o", options, "start"], timeout=START_TIMEOUT_S + 10)
        _wait_ready(pg, log)
        yield pg
    finally:
        if started:
            _stop(pg, data)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(pg: Postgres, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with pg.connect() as conn:
                conn.execute("select 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not answer: {log.read_text(errors='replace')}") from None
            time.sleep(0.1)


def _stop(pg: Postgres, data: Path) -> None:
    with contextlib.suppress(Exception):
        _run([*_as_owner(), str(pg.bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "15",
              "stop"], timeout=25)
        return
    # pg_ctl gave up (or timed out): the postmaster's pid is the first line of its pid file.
    # Its backends notice the postmaster's death and exit by themselves.
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
