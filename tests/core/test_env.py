"""Settings helpers: good values parse, bad ones stop start-up with a clear message."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.env import (
    broker_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_origins,
    env_url,
    parse_database_url,
    secret_key_file,
)


def test_it_reads_booleans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "yes")
    assert env_bool("X", False) is True
    monkeypatch.setenv("X", "0")
    assert env_bool("X", True) is False
    monkeypatch.delenv("X")
    assert env_bool("X", True) is True


@pytest.mark.parametrize(
    ("reader", "value"),
    [(lambda: env_bool("X", False), "maybe"), (lambda: env_int("X", 1, min=1), "0"),
     (lambda: env_int("X", 1), "four"), (lambda: env_float("X", 1.0), "soon"),
     (lambda: env_float("X", 0.2, min=0.0, max=1.0), "1.5"), (lambda: env_float("X", 0.2, min=0.0), "nan"),
     (lambda: env_url("X", "redis://a", schemes=("redis",)), "http://a"),
     (lambda: env_origins("X"), "lab.example.org"), (lambda: env_origins("X"), "https://lab.example.org/stage/")],
)
def test_it_fails_loudly_on_bad_values(monkeypatch: pytest.MonkeyPatch, reader, value: str) -> None:
    monkeypatch.setenv("X", value)
    with pytest.raises(ImproperlyConfigured, match="X"):
        reader()


def test_it_splits_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "a, b,,c")
    assert env_list("X", "") == ["a", "b", "c"]


def test_it_reads_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "https://lab.example.org/, http://127.0.0.1:8000")
    assert env_origins("X") == ["https://lab.example.org", "http://127.0.0.1:8000"]
    monkeypatch.delenv("X")
    assert env_origins("X") == []


def test_it_makes_a_secret_key_only_its_owner_can_read(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secret_key"
    key = secret_key_file(path)
    assert len(key) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # nothing left aside


def test_it_keeps_the_secret_key_across_starts(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    assert secret_key_file(path) == secret_key_file(path)
    assert secret_key_file(tmp_path / "another") != secret_key_file(path)


def test_it_refuses_a_short_secret_key(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("short\n")
    with pytest.raises(ImproperlyConfigured, match="secret_key"):
        secret_key_file(tmp_path / "secret_key")


def test_it_parses_sqlite_urls() -> None:
    assert parse_database_url("sqlite:////tmp/x/db.sqlite3") == {
        "ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x/db.sqlite3",
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        "TEST": {"NAME": "/tmp/x/test_db.sqlite3"}}
    assert parse_database_url("sqlite:///var/db.sqlite3")["NAME"] == "var/db.sqlite3"


def test_it_parses_postgres_urls() -> None:
    db = parse_database_url("postgres://scale:p%40ss@db.local:5433/scalelab")
    assert db == {"ENGINE": "django.db.backends.postgresql", "NAME": "scalelab", "USER": "scale",
                  "PASSWORD": "p@ss", "HOST": "db.local", "PORT": "5433"}


def test_a_postgres_url_may_name_a_socket_directory_as_libpq_does() -> None:
    db = parse_database_url("postgres://scalelab@/scalelab?host=/run/shared%20pg")
    assert (db["HOST"], db["PORT"], db["USER"], db["NAME"]) == ("/run/shared pg", "", "scalelab", "scalelab")
    assert "OPTIONS" not in db  # SQLite's timeout and transaction mode are not PostgreSQL's


@pytest.mark.parametrize("url", ["postgres://h/db?host=/run/pg", "postgres:///db?host=relative",
                                 "postgres:///db?sslmode=off", "postgres:///db?host=/a&host=/b"])
def test_it_rejects_postgres_queries_it_does_not_understand(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        parse_database_url(url)


@pytest.mark.parametrize(("redis_url", "broker"), [
    ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
    ("unix:///run/r/redis.sock?db=3", "redis+socket:///run/r/redis.sock?virtual_host=3"),
    ("unix://:p%40w@/run/r/redis.sock", "redis+socket://:p%40w@/run/r/redis.sock"),
])
def test_the_broker_url_names_a_unix_socket_the_way_kombu_reads_it(redis_url: str, broker: str) -> None:
    assert broker_url(redis_url) == broker


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://", "postgres://host/"])
def test_it_rejects_other_database_urls(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        parse_database_url(url)


@pytest.mark.parametrize(("value", "ok"), [("59", False), ("60", True), ("soon", False)])
def test_the_lab_lifetime_has_a_floor(value: str, ok: bool) -> None:
    # Read at import: a fresh interpreter, as the worker and daphne read it.
    env = {**os.environ, "LAB_MAX_SECONDS": value, "DJANGO_SETTINGS_MODULE": "core.settings"}
    result = subprocess.run([sys.executable, "-c", "from django.conf import settings; print(settings.LAB_MAX_SECONDS)"],
                            env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert (result.returncode == 0) is ok, result.stderr
    if ok:
        assert result.stdout.strip() == value
    else:
        assert "LAB_MAX_SECONDS must be" in result.stderr
