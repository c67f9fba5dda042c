"""Typed readers for environment variables that fail loudly on bad values.

A typo in a setting should stop the process at start-up, not surface later as odd behaviour.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int, *, min: int | None = None, max: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if (min is not None and value < min) or (max is not None and value > max):
        raise ImproperlyConfigured(f"{name} must be between {min} and {max}, got {value}")
    return value


def env_float(name: str, default: float, *, min: float | None = None, max: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if value != value:  # NaN: every comparison below would let it through
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}")
    if min is not None and value < min:
        raise ImproperlyConfigured(f"{name} must be at least {min}, got {value}")
    if max is not None and value > max:
        raise ImproperlyConfigured(f"{name} must be at most {max}, got {value}")
    return value


def env_list(name: str, default: str) -> list[str]:
    raw = os.environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    raw = os.environ.get(name, default).strip()
    if urlsplit(raw).scheme not in schemes:
        raise ImproperlyConfigured(f"{name} must start with one of {', '.join(schemes)}, got {raw!r}")
    return raw


def broker_url(redis_url: str) -> str:
    """Celery's broker URL for a REDIS_URL: the same, except for a UNIX socket.

    redis-py reads unix:///path/redis.sock?db=1; kombu knows no "unix" transport and wants
    redis+socket:///path/redis.sock?virtual_host=1 for the same socket and database.
    """
    parts = urlsplit(redis_url)
    if parts.scheme != "unix":
        return redis_url
    query = [("virtual_host" if key == "db" else key, value)
             for key, value in parse_qsl(parts.query, keep_blank_values=True)]
    # By hand: urlunsplit drops the empty host, and kombu needs the "//" (redis+socket:///path).
    return f"redis+socket://{parts.netloc}{parts.path}" + (f"?{urlencode(query)}" if query else "")


def env_origins(name: str, default: str = "") -> list[str]:
    """Comma-separated origins such as https://lab.example.org (scheme required, no path)."""
    origins = env_list(name, default)
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ImproperlyConfigured(f"{name}: each origin is scheme://host[:port], got {origin!r}")
    return [origin.rstrip("/") for origin in origins]


def secret_key_file(path: Path) -> str:
    """The key kept in path, made (random, mode 0600) the first time it is asked for.

    Lets `make run` start with no setup while every install still gets a key of its own, stable
    across restarts (so sessions survive them). Several processes may start at once: the file
    appears whole or not at all (written aside, then hard-linked into place), and the loser of
    the race reads the winner's key.
    """
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50) + "\n")
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        finally:
            aside.unlink()
        key = path.read_text().strip()
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path}: the secret key there is too short; delete the file to make a new one")
    return key


def parse_database_url(url: str, *, name: str = "DATABASE_URL") -> dict[str, Any]:
    """Turn sqlite:///path or postgres://user:pw@host:port/db into a DATABASES entry.

    Hand-written because these two forms are all we support; a dependency would be overkill.
    As in libpq's own URLs, ?host=/a/directory names a UNIX socket's directory instead of a host:
    postgres://scalelab@/scalelab?host=/run/postgresql (machines sharing one file system).
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///relative or sqlite:////absolute; the path follows the third slash.
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise ImproperlyConfigured(f"{name}: sqlite URL needs a path, e.g. sqlite:///var/db.sqlite3")
        file = Path(unquote(path))
        # Several processes write (daphne, every worker): a writer takes the lock when its
        # transaction begins (IMMEDIATE) and waits for it rather than failing at once. The test
        # database is a file beside it, so that tests see the same locking as a deploy does.
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(file),
                "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
                "TEST": {"NAME": str(file.with_name(f"test_{file.name}"))}}
    if parts.scheme in ("postgres", "postgresql"):
        db = parts.path.lstrip("/")
        if not db:
            raise ImproperlyConfigured(f"{name}: postgres URL needs a database name")
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(f"{name}: bad port in {url!r}") from None
        query = parse_qs(parts.query, keep_blank_values=True)
        if set(query) - {"host"} or len(query.get("host", [])) > 1:
            raise ImproperlyConfigured(f"{name}: the only query parameter understood is one host=, got {url!r}")
        host = query["host"][0] if "host" in query else parts.hostname or ""
        if "host" in query and (parts.hostname or not host.startswith("/")):
            raise ImproperlyConfigured(f"{name}: host= is a socket directory (/…) and the URL then has no host")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(db),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": host,
            "PORT": str(port or ""),
        }
    raise ImproperlyConfigured(f"{name} must be sqlite:///… or postgres://…, got {url!r}")
