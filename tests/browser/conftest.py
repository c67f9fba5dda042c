"""Browser tests: Playwright driving Debian's Chromium against the real stack (daphne + worker).

They always run: a machine without /usr/bin/chromium gets a usage error saying how to install it
(.ci/run does), never a skip, so no run of `make test` is quietly smaller than the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, run_stack

CHROMIUM = Path("/usr/bin/chromium")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Never a skip: `make test` is the whole suite, so a missing browser is an error that says how
    # to get one (.ci/run installs it), never a quietly smaller run.
    if not CHROMIUM.exists() and any("tests/browser/" in str(item.fspath) for item in items):
        raise pytest.UsageError("/usr/bin/chromium is missing: apt-get install -y chromium (.ci/run installs it)")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "headless": True,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"],
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    """The shipped lessons served by daphne, labs hosted by a Celery worker."""
    with run_stack(tmp_path_factory.mktemp("live"), redis_url, web=True, slots=2, redis_db=2) as stack:
        yield stack
