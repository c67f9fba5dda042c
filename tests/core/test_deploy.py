"""Deploying as docs/deploy.md says: behind its TLS proxy, with DEBUG at its default (off).

Settings are read once per process, so each case runs Django in a subprocess with the environment
an operator would have: the `export` lines of docs/deploy.md, or nothing at all (`make run`).
Requests go through Django's test client in that process, headers set as the nginx example does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
DEPLOY_DOC = BASE_DIR / "docs" / "deploy.md"
REDIS_PASSWORD = "s3cret-redis-pw"
# What a deploy's environment must not inherit from the test run or the developer's shell.
SETTINGS_VARS = ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "BEHIND_TLS_PROXY", "TRUSTED_ORIGINS", "HSTS_SECONDS")


def documented_env() -> dict[str, str]:
    """The variables docs/deploy.md tells an operator to export."""
    found = re.findall(r"^export (\w+)=(\S+)$", DEPLOY_DOC.read_text(), flags=re.MULTILINE)
    return {name: value.strip("'\"") for name, value in found}


def django_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    return {**env, "DJANGO_SETTINGS_MODULE": "core.settings", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6390/0", **extra}


def run_django(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    prelude = ("import django, json\ndjango.setup()\nfrom django.core.management import call_command\n"
               "call_command('migrate', verbosity=0)\nfrom django.test import Client\n")
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=120)


def observe(code: str, env: dict[str, str]) -> dict:
    result = run_django(code, env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# As nginx hands a request over: the browser's Host, and the scheme it used.
BEHIND_PROXY = """
from lessons.models import Lesson
Lesson.objects.create(slug="one", stage=1, title="One")
client = Client(enforce_csrf_checks=True, HTTP_HOST="lab.example.org", HTTP_X_FORWARDED_PROTO="https")
home = client.get("/")
stage = client.get("/stage/one/")
posted = client.post("/i18n/setlang/", {"language": "bg", "next": "/",
                                        "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
                     HTTP_ORIGIN="https://lab.example.org", HTTP_REFERER="https://lab.example.org/")
plain = Client(HTTP_HOST="lab.example.org").get("/stage/one/")
print(json.dumps({
    "home": home.status_code, "post": posted.status_code, "post_location": posted.get("Location"),
    "language": posted.cookies["django_language"].value if "django_language" in posted.cookies else None,
    "csrf_cookie_secure": bool(home.cookies["csrftoken"]["secure"]),
    "session_cookie_secure": bool(stage.cookies["sessionid"]["secure"]),
    "hsts": home.get("Strict-Transport-Security"), "nosniff": home.get("X-Content-Type-Options"),
    "plain": plain.status_code, "plain_location": plain.get("Location"),
}))
"""


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    env = documented_env()
    assert env.get("BEHIND_TLS_PROXY") == "1" and env.get("ALLOWED_HOSTS") == "lab.example.org", env
    return observe(BEHIND_PROXY, django_env(tmp_path_factory.mktemp("proxy"), env))


def test_it_accepts_a_post_through_the_tls_proxy(behind_proxy: dict) -> None:
    assert behind_proxy["home"] == 200
    assert behind_proxy["post"] == 302, "the origin check refused the POST"
    assert behind_proxy["language"] == "bg"


def test_it_marks_cookies_secure_behind_the_proxy(behind_proxy: dict) -> None:
    assert behind_proxy["csrf_cookie_secure"] is True
    assert behind_proxy["session_cookie_secure"] is True


def test_it_sends_hsts_and_nosniff_behind_the_proxy(behind_proxy: dict) -> None:
    assert behind_proxy["hsts"].startswith("max-age=31536000")
    assert behind_proxy["nosniff"] == "nosniff"


def test_it_redirects_plain_http_to_https_behind_the_proxy(behind_proxy: dict) -> None:
    assert behind_proxy["plain"] == 301
    assert behind_proxy["plain_location"] == "https://lab.example.org/stage/one/"


def test_check_deploy_is_clean_with_the_documented_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env=django_env(tmp_path, documented_env()), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_it_refuses_to_start_with_debug_behind_the_proxy(tmp_path: Path) -> None:
    result = run_django("", django_env(tmp_path, {**documented_env(), "DEBUG": "1"}))
    assert result.returncode != 0
    assert "DEBUG=1" in result.stderr


BAD_HOST = """
from django.conf import settings
response = Client(HTTP_HOST="evil.example").get("/")
print(json.dumps({"debug": settings.DEBUG, "status": response.status_code, "body": response.content.decode()}))
"""


@pytest.fixture(scope="module")
def bad_host_by_default(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return observe(BAD_HOST, django_env(tmp_path_factory.mktemp("default"), {}))


def test_debug_is_off_by_default(bad_host_by_default: dict) -> None:
    assert bad_host_by_default["debug"] is False


def test_it_answers_a_bad_host_with_a_plain_400(bad_host_by_default: dict) -> None:
    assert bad_host_by_default["status"] == 400
    assert "Traceback" not in bad_host_by_default["body"]
    assert "DisallowedHost" not in bad_host_by_default["body"]


def test_no_error_page_shows_the_redis_password(bad_host_by_default: dict) -> None:
    assert REDIS_PASSWORD not in bad_host_by_default["body"]
