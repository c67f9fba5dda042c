"""`manage.py lessons prove`: every shipped lesson's steps can be completed by their solutions."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from lessons.loader import lessons_check
from lessons.prove import StepResult, prove_again, prove_steps
from tests.engine.topologies import stage1

CONTENT = Path(__file__).resolve().parent.parent.parent / "lessons" / "content"


def provable() -> list[str]:
    lessons, errors = lessons_check([CONTENT])
    assert not errors
    return [lesson.slug for lesson in lessons if lesson.topology and getattr(lesson, "steps", None)]


def test_at_least_one_shipped_lesson_has_steps_to_prove() -> None:
    assert "single-server" in provable()


@pytest.mark.parametrize("slug", provable())
def test_every_shipped_lesson_with_steps_proves(slug: str) -> None:
    out = io.StringIO()
    try:
        call_command("lessons", "prove", slug, stdout=out, stderr=out)
    except CommandError as exc:  # show which step failed, and what it measured
        pytest.fail(f"{exc}\n{out.getvalue()}")
    text = out.getvalue()
    assert f"{slug}: proving" in text and "1 lesson(s) proved" in text
    last_run = text.rsplit("proving it again", 1)[-1]  # a first run on a busy machine may have failed
    assert "FAIL" not in last_run


def test_a_step_whose_solution_does_not_satisfy_its_check_fails() -> None:
    steps = [
        {"id": "start", "check": "event(lab_started)", "solution": []},
        {"id": "read", "check": None, "solution": []},
        {"id": "never", "check": "event(node_killed, node=dns)", "solution": [{"action": "kill", "node": "web"}]},
        {"id": "bad", "check": "event(node_killed, node=web)", "solution": [{"action": "kill", "node": "ghost"}]},
    ]
    seen: list[str] = []
    results = asyncio.run(prove_steps(stage1().to_dict(), steps, step_timeout=1.0,
                                      report=lambda r: seen.append(str(r))))
    assert [r.outcome for r in results] == ["PASS", "SKIP", "FAIL", "FAIL"]
    assert not prove_again(results)  # failures on a quiet loop are the lesson's own
    assert "did not pass within 1 s" in results[2].detail
    assert "unknown node 'ghost'" in results[3].detail
    assert seen[0].startswith("start: PASS in ")


def test_a_failed_step_says_what_the_lab_showed() -> None:
    """The report names the dead node and the failed hop it caused, so a flaky run can be read."""
    steps = [{"id": "served", "check": "metric(totals.ok_rps) > 5 for 1s",
              "solution": [{"action": "kill", "node": "web"}, {"action": "wait", "seconds": 1}]}]
    [result] = asyncio.run(prove_steps(stage1(rate=30).to_dict(), steps, step_timeout=2.0))
    assert result.outcome == "FAIL"
    showed = result.detail.split("the lab showed: ", 1)[1]
    assert showed.startswith("down web")
    assert ">web: connection refused x" in showed


def test_a_step_that_failed_while_the_machine_was_busy_says_so_and_earns_a_second_run() -> None:
    """Another process holding the CPU makes the lab's loop run late; a failure then is not the
    lesson's, and `lessons prove` runs the lesson again rather than fail the suite by chance."""
    steps = [{"id": "never", "check": "event(node_killed, node=dns)", "solution": []}]

    async def starved() -> list[StepResult]:
        async def hog() -> None:  # the loop can run nothing else while this sleeps
            while True:
                time.sleep(0.3)
                await asyncio.sleep(0.05)

        task = asyncio.create_task(hog())
        try:
            return await prove_steps(stage1(rate=10).to_dict(), steps, step_timeout=2.0)
        finally:
            task.cancel()

    [result] = asyncio.run(starved())
    assert result.outcome == "FAIL" and result.lag_ms >= 200
    assert result.machine_busy and "the machine was busy: the lab's event loop ran up to" in result.detail
    assert prove_again([result])
    assert not prove_again([result, StepResult("quiet", "FAIL", 1.0, "", lag_ms=3.0)])
    assert not prove_again([StepResult("ok", "PASS", 1.0, lag_ms=900.0)])


def test_an_unknown_lesson_id_is_an_error() -> None:
    with pytest.raises(CommandError, match="no such lesson: nope"):
        call_command("lessons", "prove", "nope", stdout=io.StringIO())
