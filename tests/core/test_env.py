"""Settings helpers: good values parse, bad ones stop start-up with a clear message."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.env import env_bool, env_float, env_int, env_list, env_url, parse_database_url


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
     (lambda: env_url("X", "redis://a", schemes=("redis",)), "http://a")],
)
def test_it_fails_loudly_on_bad_values(monkeypatch: pytest.MonkeyPatch, reader, value: str) -> None:
    monkeypatch.setenv("X", value)
    with pytest.raises(ImproperlyConfigured, match="X"):
        reader()


def test_it_splits_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "a, b,,c")
    assert env_list("X", "") == ["a", "b", "c"]


def test_it_parses_sqlite_urls() -> None:
    assert parse_database_url("sqlite:////tmp/x/db.sqlite3") == {
        "ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x/db.sqlite3"}
    assert parse_database_url("sqlite:///var/db.sqlite3")["NAME"] == "var/db.sqlite3"


def test_it_parses_postgres_urls() -> None:
    db = parse_database_url("postgres://scale:p%40ss@db.local:5433/scalelab")
    assert db == {"ENGINE": "django.db.backends.postgresql", "NAME": "scalelab", "USER": "scale",
                  "PASSWORD": "p@ss", "HOST": "db.local", "PORT": "5433"}


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://", "postgres://host/"])
def test_it_rejects_other_database_urls(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        parse_database_url(url)
