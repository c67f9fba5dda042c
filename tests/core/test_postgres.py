"""Django's data in PostgreSQL (DATABASE_URL=postgres://…): the migrations, the lesson loader, a
whole stack a student uses over a WebSocket, and many starts at once, against a real server.

Each test gets a fresh database on the session's cluster (tests.postgres); the processes under
test are separate ones, as in a deploy, and what they wrote is read back with psycopg directly.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.postgres import Postgres, pg_query
from tests.stack import CONTENT, run_stack
from tests.student import Student

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def database_url(postgres: Postgres) -> str:
    return postgres.url(postgres.create_database())


def manage(database_url: str, redis_url: str, *args: str, timeout: float = 120) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "DJANGO_SETTINGS_MODULE": "core.settings"}
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_migrations_and_the_lesson_loader_run_on_postgres(database_url: str, redis_url: str) -> None:
    manage(database_url, redis_url, "migrate", "-v", "0")
    manage(database_url, redis_url, "lessons", "load")
    shipped = {p.name for p in CONTENT.glob("*.md") if p.name.count(".") == 1}  # not translations
    assert pg_query(database_url, "select count(*) from lessons_lesson")[0][0] == len(shipped)
    assert pg_query(database_url, "select count(*) from django_migrations where app = 'visualizer'")[0][0] >= 3
    # The live-lab constraints are PostgreSQL partial unique indexes, not just Django's idea of them.
    indexes = dict(pg_query(database_url, "select indexname, indexdef from pg_indexes"
                            " where tablename = 'visualizer_lab'"))
    for name, column in (("one_live_lab_per_session", "session_key"), ("one_live_lab_per_network", "network")):
        assert f"UNIQUE INDEX {name}" in indexes[name] and f"({column})" in indexes[name], indexes
        assert "WHERE" in indexes[name] and "'queued'" in indexes[name], indexes[name]
    assert "No changes detected" in manage(database_url, redis_url, "makemigrations", "--check", "--dry-run")


def test_the_dedupe_migration_keeps_the_newest_live_lab_on_postgres(database_url: str, redis_url: str) -> None:
    # Rows as they could be before 0003: one session with three live labs, two sessions on one network.
    manage(database_url, redis_url, "migrate", "lessons", "-v", "0")
    manage(database_url, redis_url, "migrate", "visualizer", "0002", "-v", "0")
    manage(database_url, redis_url, "lessons", "load", str(CONTENT / "01-single-server.md"))
    rows = [(f"00000000-0000-0000-0000-00000000000{i}", session, network, f"2025-01-0{i} 10:00+00")
            for i, (session, network) in enumerate(
                [("alice", "127.1.1"), ("alice", "127.1.2"), ("alice", "127.1.3"), ("bob", "127.2.1"),
                 ("carol", "127.2.1")], start=1)]
    for row in rows:
        pg_query(database_url, "insert into visualizer_lab (id, session_key, lesson_id, network, state, task_id,"
                 " created, updated) values (%s, %s, (select id from lessons_lesson where slug = 'single-server'),"
                 " %s, 'running', '', %s, now()) returning id", row)
    manage(database_url, redis_url, "migrate", "-v", "0")
    live = pg_query(database_url, "select session_key, network from visualizer_lab"
                    " where state in ('queued', 'starting', 'running') order by session_key")
    assert live == [("alice", "127.1.3"), ("carol", "127.2.1")]


# 20 sessions starting at once, and 5 starts racing within one more session: what a room does when
# the instructor says "start your labs". Threads in one process, one database connection each.
CONCURRENT_STARTS = """
import threading
from django.db import connection
from lessons.models import Lesson
from visualizer.services import lab_start

lesson = Lesson.objects.get(slug="single-server")
barrier = threading.Barrier(25)
errors = []

def start(session):
    try:
        barrier.wait(timeout=30)
        lab_start(session_key=session, lesson=lesson)
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

threads = [threading.Thread(target=start, args=(s,)) for s in [f"s{i:02}" for i in range(20)] + ["racer"] * 5]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=60)
print("ERRORS", errors)
"""


def test_twenty_five_concurrent_starts_hold_one_live_lab_per_session_and_network(
        database_url: str, redis_url: str) -> None:
    worker_redis = redis_url.rsplit("/", 1)[0] + "/6"  # a database no worker reads: tasks only queue there
    manage(database_url, worker_redis, "migrate", "-v", "0")
    manage(database_url, worker_redis, "lessons", "load", str(CONTENT / "01-single-server.md"))
    try:
        out = manage(database_url, worker_redis, "shell", "-c", CONCURRENT_STARTS, timeout=180)
    finally:
        with redis.Redis.from_url(worker_redis) as r:
            r.flushdb()
    assert "ERRORS []" in out, out
    live = pg_query(database_url, "select session_key, network from visualizer_lab"
                    " where state in ('queued', 'starting', 'running')")
    sessions = [s for s, _ in live]
    assert sorted(sessions) == sorted({*[f"s{i:02}" for i in range(20)], "racer"})  # each exactly once
    assert len({n for _, n in live}) == len(live)  # no two live labs on one network


@pytest.mark.slow
def test_a_student_over_a_websocket_leaves_lab_and_progress_in_postgres(
        tmp_path: Path, redis_url: str, database_url: str) -> None:
    with run_stack(tmp_path, redis_url, lessons=[CONTENT / "01-single-server.md"], web=True, redis_db=5,
                   database_url=database_url) as stack:

        async def scenario() -> tuple[str, str]:
            async with Student(stack.url, "single-server") as student:
                await student.send({"action": "start"})
                running = await student.until(lambda m: m["type"] == "status" and m.get("state") == "running",
                                              60, "the lab to run")
                # The first step passes once traffic flows for 3 s; the consumer records it.
                await student.until(lambda m: m["type"] == "progress" and "start" in m["progress"],
                                    60, "the first step's progress")
                return student.session_key, running["lab"]

        session_key, lab_id = asyncio.run(scenario())
        assert stack.lab_state(lab_id) == "running"
    assert pg_query(database_url, "select l.session_key, s.slug from visualizer_lab l"
                    " join lessons_lesson s on s.id = l.lesson_id where l.id = %s", (lab_id,)) == [
        (session_key, "single-server")]
    steps = pg_query(database_url, "select step_id from visualizer_progress where session_key = %s", (session_key,))
    assert ("start",) in steps, steps
    assert pg_query(database_url, "select count(*) from django_session where session_key = %s",
                    (session_key,)) == [(1,)]
    assert not (tmp_path / "db.sqlite3").exists()  # nothing fell back to the default SQLite file
