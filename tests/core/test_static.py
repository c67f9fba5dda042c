"""Static files: WhiteNoise serves them through the ASGI app that daphne runs, with DEBUG off.

pytest-django runs with DEBUG off, as a deploy does; a request goes through core.asgi exactly as
daphne hands it over.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings

BASE_DIR = Path(__file__).resolve().parents[2]


async def get(path: str) -> dict:
    """GET path from core.asgi.application; {status, headers, body} with the body's chunks joined."""
    from core.asgi import application

    scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": path, "query_string": b"",
             "headers": [(b"host", b"127.0.0.1")], "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000)}
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=10)
    body = b""
    while True:
        message = await communicator.receive_output(timeout=10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait()
    return {"status": start["status"], "headers": {k.lower(): v for k, v in start["headers"]}, "body": body}


@pytest.mark.parametrize(
    ("path", "file"),
    [("/static/js/lab/main.js", BASE_DIR / "static" / "js" / "lab" / "main.js"),
     ("/static/vendor/uplot/uPlot.iife.min.js", BASE_DIR / "static" / "vendor" / "uplot" / "uPlot.iife.min.js")],
)
async def test_it_serves_the_pages_scripts_with_debug_off(path: str, file: Path) -> None:
    assert settings.DEBUG is False
    response = await get(path)
    assert response["status"] == 200
    assert response["body"] == file.read_bytes()
    headers = response["headers"]
    # A module script is refused unless its type is JavaScript (and nosniff is on).
    assert headers[b"content-type"].startswith(b"text/javascript")


async def test_it_serves_them_with_whitenoise_not_djangos_development_handler() -> None:
    # Django's handler sends no Cache-Control; WhiteNoise's says how long a browser may keep a file.
    response = await get("/static/css/site.css")
    assert response["status"] == 200
    assert b"max-age" in response["headers"][b"cache-control"]


async def test_it_serves_the_admins_own_files() -> None:
    assert (await get("/static/admin/css/base.css"))["status"] == 200
