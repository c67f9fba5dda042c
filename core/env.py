"""Typed readers for environment variables that fail loudly on bad values.

A typo in a setting should stop the process at start-up, not surface later as odd behaviour.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

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


def env_float(name: str, default: float, *, min: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if min is not None and value < min:
        raise ImproperlyConfigured(f"{name} must be at least {min}, got {value}")
    return value


def env_list(name: str, default: str) -> list[str]:
    raw = os.environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    raw = os.environ.get(name, default).strip()
    if urlsplit(raw).scheme not in schemes:
        raise ImproperlyConfigured(f"{name} must start with one of {', '.join(schemes)}, got {raw!r}")
    return raw


def parse_database_url(url: str, *, name: str = "DATABASE_URL") -> dict[str, Any]:
    """Turn sqlite:///path or postgres://user:pw@host:port/db into a DATABASES entry.

    Hand-written because these two forms are all we support; a dependency would be overkill.
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
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(db),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
        }
    raise ImproperlyConfigured(f"{name} must be sqlite:///… or postgres://…, got {url!r}")
