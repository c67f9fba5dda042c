"""Scale Lab settings: one file, every knob an environment variable with a safe local default."""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from core.env import (
    broker_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_origins,
    env_str,
    env_url,
    parse_database_url,
    secret_key_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# Off unless a developer turns it on (DEBUG=1) on their own machine: its error pages show code,
# settings and request data to whoever sends a bad request, and a workshop server has a class on
# it. Nothing a local user needs depends on it (WhiteNoise serves static files either way).
DEBUG = env_bool("DEBUG", False)
# Signs sessions and CSRF tokens. Unset, each install makes its own once and keeps it in
# var/secret_key (mode 0600, not in git), so `make run` needs no setup and sessions survive a
# restart. Machines that share a database set the same SECRET_KEY (docs/deploy.md).
SECRET_KEY = env_str("SECRET_KEY", "") or secret_key_file(BASE_DIR / "var" / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
DEFAULT_EXCEPTION_REPORTER_FILTER = "core.errors.SettingsFilter"

# Behind the TLS proxy of docs/deploy.md, which terminates HTTPS and passes plain HTTP to daphne
# on 127.0.0.1. Opt-in, because the header it trusts is only safe when a proxy that sets it
# (overwriting any client's own) stands in front: `proxy_set_header X-Forwarded-Proto $scheme`.
# Without it Django takes every request for plain HTTP and refuses each POST: the browser's
# Origin (https://…) does not match the http:// it sees.
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    if DEBUG:
        raise ImproperlyConfigured(
            "DEBUG=1 shows tracebacks and settings to every visitor: it is for a developer's own machine, "
            "not for a server behind BEHIND_TLS_PROXY"
        )
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Everyone comes through the proxy, so every request is HTTPS; one that is not gets redirected.
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # HSTS for the lab's own host name and names under it (nothing else of the domain). The
    # preload list is a promise for a whole registered domain, which only its owner can make.
    SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 365 * 24 * 3600, min=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SILENCED_SYSTEM_CHECKS = ["security.W021"]  # SECURE_HSTS_PRELOAD, see above
# Origins other than the request's own host that may POST, e.g. when students reach the lab under
# another name or port than the Host header the proxy passes on (https://lab.example.org:8443).
CSRF_TRUSTED_ORIGINS = env_origins("TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "lessons",
    "visualizer",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files, before anything that would touch the session or database for them.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language: the django_language cookie set by the header's switcher, else Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out log-in into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "core.urls"
ASGI_APPLICATION = "core.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "visualizer.context.workshop",
            ],
        },
    },
]

DATABASES = {
    "default": parse_database_url(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in ("UserAttributeSimilarityValidator", "MinimumLengthValidator", "CommonPasswordValidator",
                 "NumericPasswordValidator")
]

# The admin log-in is throttled by django-axes: after AXES_FAILURE_LIMIT wrong passwords for one
# user name from one address, that pair is refused (429) for AXES_COOLOFF_TIME. Its records live
# in the database, so daphne and any other process that logs in share them. User name and address
# together: a guesser is stopped without letting them lock the instructor out from elsewhere.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair before any check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "core.client_ip.client_ip"

LANGUAGE_CODE = env_str("LANGUAGE_CODE", "en")
TIME_ZONE = "UTC"
USE_I18N = True
# English and Bulgarian; no URL prefixes (stage URLs stay stable), the choice lives in a cookie.
LANGUAGES = [("en", "English"), ("bg", "Български")]
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise serves /static/ in every process that serves pages, debug or not, straight from the
# finders (static/ and the apps' own, such as the admin's). There is no build step, so there is no
# collectstatic to forget on a deploy, and no STATIC_ROOT (a stale copy there would be served).
# What that costs: no hashed names (browsers recheck a file after WhiteNoise's 60 s max-age) and
# no pre-compressed copies, for a few hundred kB a class reads once. With DEBUG on it also picks up
# edited files without a restart.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
# Under ASGI Django reads a file response's (synchronous) iterator in a thread, and says so once
# per process; for files this small that costs nothing, so the line would only alarm.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators",
                        module="django.core.handlers.asgi")

# Redis: Celery broker and the labs' pub/sub. Read settings.REDIS_URL at call time (core.redis),
# never at import: the test suite points it at its own redis-server after start-up.
REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:6390/0", schemes=("redis", "rediss", "unix"))

# Labs: worker processes (core.workers starts them: one per core uses the machine), the labs each
# hosts at once on its one event loop (visualizer.hosting; at default traffic 50 labs take about a
# third of a core, see bench/README.md), how long an unwatched lab lives, and how long any lab
# lives, watched or not (so that a few sessions cannot hold every slot for good).
LAB_PROCESSES = env_int("LAB_PROCESSES", os.cpu_count() or 2, min=1, max=64)
LAB_SLOTS = env_int("LAB_SLOTS", 4, min=1, max=128)
LAB_IDLE_SECONDS = env_float("LAB_IDLE_SECONDS", 600.0, min=1.0)
LAB_MAX_SECONDS = env_int("LAB_MAX_SECONDS", 7200, min=60, max=7 * 24 * 3600)
# What one browser may hold: open lab pages (WebSockets) per session, and live labs started from
# one client address (behind a NAT a room shares one: raise it; 0 = no cap).
SOCKETS_PER_SESSION = env_int("SOCKETS_PER_SESSION", 10, min=1, max=1000)
LABS_PER_ADDRESS = env_int("LABS_PER_ADDRESS", 10, min=0, max=10000)
# Workshops: the grid calls a participant stuck after this long with no step passed. A workshop's
# hot pool, unless its instructor sets its size, is sized to the room: this share of its participant
# cap (rounded up), at most WORKSHOP_POOL_MAX labs, since each holds a worker slot while it waits
# (docs/deploy.md). A share or a maximum of 0 turns hot start off by default.
WORKSHOP_STUCK_MINUTES = env_float("WORKSHOP_STUCK_MINUTES", 5.0, min=0.1)
WORKSHOP_POOL_SHARE = env_float("WORKSHOP_POOL_SHARE", 0.2, min=0.0, max=1.0)
WORKSHOP_POOL_MAX = env_int("WORKSHOP_POOL_MAX", 10, min=0, max=200)

# The same Redis, named the way kombu wants a UNIX socket (redis+socket://) when REDIS_URL is one.
CELERY_BROKER_URL = broker_url(REDIS_URL)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a lab holds its slot for minutes: never hoard tasks
# Not even one: tasks are acked as they start, so a running task no longer counts against the
# prefetch, and a worker whose slots were all busy took the next lab and held it while another
# worker had a free slot (tests/visualizer/test_several_hosts.py). Take a task only into a free
# slot (Redis brokers only).
CELERY_WORKER_DISABLE_PREFETCH = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_ACKS_LATE = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A Redis restart must not end the worker (after 100 failed tries it would: None is for ever), nor
# the labs it runs: their tasks run on, and the labs reconnect by themselves (core.engine.runner).
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO" if DEBUG else "WARNING"},
    "loggers": {"django": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
