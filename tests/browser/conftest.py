"""Browser tests: Playwright driving Debian's Chromium against the real stack (daphne + worker).

They always run: a machine without /usr/bin/chromium gets a usage error saying how to install it
(.ci/run does), never a skip, so no run of `make test` is quietly smaller than the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, log_tail, run_stack

CHROMIUM = Path("/usr/bin/chromium")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Never a skip: `make test` is the whole suite, so a missing browser is an error that says how
    # to get one (.ci/run installs it), never a quietly smaller run.
    if not CHROMIUM.exists() and any("tests/browser/" in str(item.fspath) for item in items):
        raise pytest.UsageError("/usr/bin/chromium is missing: apt-get install -y chromium (.ci/run installs it)")


# What the page showed when a test failed: its lab's state, the lag warning, totals, the event log.
PAGE_STATE = """() => {
  const text = (id) => { const e = document.getElementById(id); return e ? e.textContent.trim() : null; };
  const state = document.querySelector("[data-testid=lab-state]");
  return { url: location.href, state: state && state.dataset.state, lag: text("engine-lag"),
           totals: [...document.querySelectorAll(".stat")].map((e) => e.textContent.trim()).join(" | "),
           events: (text("events") || "").slice(-600) };
}"""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed browser test reports what its page showed and the end of its stack's logs: a CI run
    keeps nothing else to say why."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    page, live = funcargs.get("page"), funcargs.get("live")
    if page is not None:
        try:
            report.sections.append(("what the page showed", repr(page.evaluate(PAGE_STATE))))
        except Exception as exc:  # the page may be what failed
            report.sections.append(("what the page showed", f"could not be read: {exc!r}"))
    if isinstance(live, Stack):
        report.sections.append(("the stack's logs", log_tail(live.db_path.parent)))


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
