"""`manage.py lessons check` and `lessons load`: all errors reported, nothing loaded on any error."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from lessons.models import Lesson

FIXTURES = Path(__file__).parent / "fixtures"
VALID, LATER, INVALID = (FIXTURES / n for n in ("valid.md", "later.md", "invalid.md"))


def run(*args: str | Path) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("lessons", *map(str, args), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_checks_valid_files() -> None:
    out, err = run("check", VALID, LATER)
    assert "2 lesson file(s) OK" in out and err == ""


def test_it_prints_every_error_and_fails() -> None:
    err = StringIO()
    with pytest.raises(CommandError, match="1 error"):
        call_command("lessons", "check", str(VALID), str(INVALID), stderr=err)
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("invalid.md:13: topology.nodes[0].params.workers: must be at least 1, got 0")


@pytest.mark.django_db
def test_it_loads_and_then_updates_by_id() -> None:
    out, _ = run("load", VALID, LATER)
    assert "created fixture-single (stage 1, runnable)" in out
    assert "created fixture-later (stage 2, no lab yet)" in out
    lesson = Lesson.objects.get(slug="fixture-single")
    assert lesson.topology["domain"] == "www.scalelab.test" and "<script" not in lesson.body_html
    assert Lesson.objects.get(slug="fixture-later").topology is None

    out, _ = run("load", VALID)
    assert "updated fixture-single" in out
    assert Lesson.objects.count() == 2


@pytest.mark.django_db
def test_it_loads_nothing_when_any_file_is_invalid() -> None:
    with pytest.raises(CommandError, match="nothing was loaded"):
        call_command("lessons", "load", str(VALID), str(INVALID), stderr=StringIO())
    assert Lesson.objects.count() == 0


def test_it_accepts_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(VALID.read_text())
    out, _ = run("check", tmp_path)
    assert "1 lesson file(s) OK" in out
