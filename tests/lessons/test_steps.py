"""Lesson steps: check/solution/predict/instructor blocks, translations, and each error with its line."""

from __future__ import annotations

import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lessons.loader import lesson_files, lesson_parse, lesson_parse_text, lessons_check
from lessons.models import Lesson

FIXTURES = Path(__file__).parent / "fixtures"
MAIN = (FIXTURES / "steps.md").read_text()
BG = (FIXTURES / "steps.bg.md").read_text()


def line_of(text: str, needle: str, nth: int = 1) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


def errors_of(main: str, bg: str | None = None) -> list:
    translations = {"bg": (bg, "lesson.bg.md")} if bg is not None else None
    lesson, errors = lesson_parse_text(main, display="lesson.md", translations=translations)
    assert lesson is None and errors
    return errors


def variant(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_it_reads_steps_with_their_blocks() -> None:
    lesson, errors = lesson_parse(FIXTURES / "steps.md")
    assert errors == []
    assert [s["id"] for s in lesson.steps] == ["start", "break", "read"]
    start, brk, read = lesson.steps
    assert start["check"].startswith("metric(totals.rps) > 0 for 3s")
    assert start["hints"] == ["Give it some traffic."]
    assert start["solution"] == [{"action": "wait", "seconds": 4.0}]
    assert brk["solution"][:2] == [{"action": "traffic", "rate": 10.0}, {"action": "kill", "node": "web"}]
    assert brk["predict"] == {
        "question": "How many errors per second?",
        "measure": "metric(totals.err_rps)",
        "unit": "req/s",
    }
    assert (read["check"], read["hints"], read["solution"], read["predict"]) == (None, [], [], None)


def test_it_keeps_special_blocks_out_of_the_student_text() -> None:
    lesson, _ = lesson_parse(FIXTURES / "steps.md")
    en = lesson.i18n["en"]
    assert en["body_html"] == '<h1 id="lesson-steps">Steps</h1>\n<p>The intro, before any step.</p>'
    for html in [lesson.body_html] + [s["html"] for s in en["steps"].values()]:
        assert "metric(" not in html and "wait 4s" not in html and "free slot" not in html
    assert en["steps"]["start"]["instructor_html"] == "<p>Labs wait for a free slot.</p>"
    assert "an ordinary code block" in en["steps"]["break"]["html"]
    assert '<h2 id="lesson-break">Break it</h2>' in lesson.body_html


def test_it_reads_the_bulgarian_translation() -> None:
    lesson, _ = lesson_parse(FIXTURES / "steps.md")
    bg = lesson.i18n["bg"]
    assert (bg["title"], bg["objectives"]) == ("Стъпки и проверки", ["Стартирайте лабораторията"])
    assert bg["steps"]["break"]["hints"] == ["Убийте web.", "Няма трафик."]
    assert bg["steps"]["break"]["predict"] == {"question": "Колко грешки в секунда?", "unit": "req/s"}
    assert bg["steps"]["break"]["instructor_html"] == "<p>Бележка за преподавателя.</p>"
    assert bg["steps"]["start"]["instructor_html"] == "<p>Labs wait for a free slot.</p>"  # falls back
    assert "<strong>Старт</strong>" in bg["steps"]["start"]["html"]


def test_it_lists_translations_with_their_main_file(tmp_path: Path) -> None:
    for name in ("steps.md", "steps.bg.md"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    assert lesson_files([tmp_path]) == [tmp_path / "steps.md"]
    assert lesson_files([tmp_path / "steps.bg.md"]) == [tmp_path / "steps.md"]


@pytest.mark.parametrize(
    ("old", "new", "needle", "field", "reason"),
    [
        (
            "metric(totals.rps) > 0 for 3s",
            "metric(totals.rps) > 0 for 3",
            "for 3",
            "steps.start.check",
            "needs a unit: ms, s or m (e.g. 10s) (at '3', column 28)",
        ),
        (
            'when metric(web.up) == 1 say "Kill web."',
            'when metric(web.up) == 1 sya "Kill web."',
            "sya",
            "steps.break.check",
            "expected 'say",
        ),
        (
            "metric(totals.rps) > 0 for 3s",
            "metric(wbe.rps) > 0 for 3s",
            "wbe.rps",
            "steps.start.check",
            "no node with id 'wbe' (at 'wbe.rps', column 8)",
        ),
        (
            "metric(totals.rps) > 0 for 3s",
            "metric(dns.util) > 0 for 3s",
            "dns.util",
            "steps.start.check",
            "unknown metric 'util' for dns node 'dns'",
        ),
        (
            "event(node_killed, node=web)",
            "event(node_killed, node=wbe)",
            "node=wbe",
            "steps.break.check",
            "no node with id 'wbe'",
        ),
        (
            "metric(totals.rps) > 0 for 3s",
            "(" * 300 + "metric(totals.rps) > 0" + ")" * 300 + " for 3s",
            "(((",
            "steps.start.check",
            "parentheses nested more than 20 deep (at '(', column 21)",
        ),
        ("kill web\n", "kil web\n", "kil web", "steps.break.solution", "unknown action"),
        ("kill web\n", "kill wbe\n", "kill wbe", "steps.break.solution", "unknown node 'wbe'"),
        ("traffic 10\n", "traffic web 10\n", "traffic web", "steps.break.solution", "not a client"),
        ("## Read {#read}", "## Read {#start}", "## Read {#start}", "steps.start", "duplicate step id 'start'"),
        ("## Read {#read}", "## Read {#Read Me}", "{#Read Me}", "steps", "lower-case"),
        ("## Read {#read}", "## Read", "## Read", "steps", "every level-2 heading starts a step"),
        (
            "The intro, before any step.",
            "```check\nmetric(web.rps) > 1\n```",
            "```check",
            "check",
            "must be inside a step",
        ),
        (
            "```instructor\nLabs",
            "~~~check\nmetric(web.rps) > 1\n~~~\n\n```instructor\nLabs",
            "~~~check",
            "steps.start.check",
            "at most one",
        ),
        (
            "measure: metric(totals.err_rps)",
            "measure: metric(totals.errors)",
            "measure:",
            "steps.break.predict.measure",
            "unknown metric 'errors'",
        ),
        ("question: How many errors per second?\n", "", "```predict", "steps.break.predict", "missing `question"),
        ("unit: req/s", "colour: red", "colour:", "steps.break.predict.colour", "unknown field"),
        ("unit: req/s", "unit: &u req/s", "unit:", "steps.break.predict.unit", "anchors and aliases"),
        (
            "A step without a check.",
            "A step without a check.\n\n```instructor\nunclosed",
            ("```instructor", 2),
            "instructor",
            "never closed",
        ),
    ],
)
def test_it_reports_each_step_error_with_its_line(
    old: str, new: str, needle: str | tuple[str, int], field: str, reason: str
) -> None:
    text = variant(MAIN, old, new)
    needle, nth = needle if isinstance(needle, tuple) else (needle, 1)
    errors = errors_of(text)
    assert len(errors) == 1, [str(e) for e in errors]
    (error,) = errors
    assert (error.line, error.field) == (line_of(text, needle, nth), field), str(error)
    assert reason in error.reason


def test_it_points_into_a_multi_line_check() -> None:
    text = variant(
        MAIN,
        'when metric(web.up) == 1 say "Kill web."',
        'when metric(web.up) == 1 say "Kill web."\n\nwhen metric(web.bogus) == 1 say "x"',
    )
    (error,) = errors_of(text)
    assert error.line == line_of(text, "web.bogus") and "column 13" in error.reason


def test_it_needs_a_topology_for_checks() -> None:
    start, end = MAIN.index("topology:"), MAIN.index("---\n# Steps")
    text = MAIN[:start] + MAIN[end:]
    errors = errors_of(text)
    assert {e.field for e in errors} >= {"steps.start.check"}
    assert any("needs the lesson's topology" in e.reason for e in errors)


@pytest.mark.parametrize(
    ("old", "new", "needle", "field", "reason"),
    [
        ("## Прочетете {#read}", "## Прочетете {#reed}", "{#reed}", "steps.reed", "no step {#reed}"),
        (
            "## Прочетете {#read}",
            "## Прочетете {#reed}",
            "# Стъпки",
            "steps",
            "missing the main file's step(s) {#read}",
        ),
        (
            "Дайте малко трафик.\n",
            "Дайте малко трафик.\nОще един.\n",
            "```hints",
            "steps.start.hints",
            "2 hint(s) here but the check has 1",
        ),
        (
            "```hints\n- Убийте web.\n- Няма трафик.\n```\n",
            "",
            "{#break}",
            "steps.break.hints",
            "0 hint(s) here but the check has 2",
        ),
        ("lang: bg", "lang: bg\ntopology: {}", "topology:", "topology", "the topology lives in the main file"),
        ("lang: bg", "lang: de", "lang:", "lang", "must be 'bg'"),
        ("id: fixture-steps", "id: other", "id:", "id", "must be the main file's id"),
        ("Увод.", "Увод.\n\n```check\nmetric(web.rps) > 1\n```", "```check", "check", "a translation has no ```check"),
        (
            "```predict\nquestion: Колко грешки в секунда?\n```\n",
            "",
            "{#break}",
            "steps.break.predict",
            "translate it here",
        ),
        (
            "question: Колко грешки в секунда?",
            "question: Колко?\nmeasure: metric(web.rps)",
            "measure:",
            "steps.break.predict.measure",
            "lives in the main file",
        ),
        ("title: Стъпки и проверки\n", "", "lang:", "front matter", "missing required field 'title'"),
    ],
)
def test_it_reports_each_translation_error_with_its_line(
    old: str, new: str, needle: str, field: str, reason: str
) -> None:
    text = variant(BG, old, new)
    errors = errors_of(MAIN, text)
    assert any(e.file == "lesson.bg.md" and e.field == field and reason in e.reason for e in errors), [
        str(e) for e in errors
    ]
    error = next(e for e in errors if e.field == field and reason in e.reason)
    expected = line_of(text, needle) if needle != "lang:" or field != "front matter" else 2
    assert error.line == expected, str(error)


def test_it_reports_translated_steps_out_of_order() -> None:
    a, b = BG.index("## Старт {#start}"), BG.index("## Счупете го {#break}")
    c = BG.index("## Прочетете {#read}")
    text = BG[:a] + BG[b:c] + BG[a:b] + BG[c:]
    errors = errors_of(MAIN, text)
    assert [(e.line, e.field) for e in errors] == [(line_of(text, "{#break}"), "steps.break")]
    assert "expected {#start} here" in errors[0].reason


def test_lessons_check_prints_step_errors_as_file_line_field_reason(tmp_path: Path) -> None:
    (tmp_path / "steps.md").write_text(variant(MAIN, "kill web\n", "kill wbe\n"))
    (tmp_path / "steps.bg.md").write_text(BG)
    err = StringIO()
    with pytest.raises(Exception, match="1 error"):
        call_command("lessons", "check", str(tmp_path), stderr=err)
    line = line_of((tmp_path / "steps.md").read_text(), "kill wbe")
    assert (
        err.getvalue()
        .strip()
        .endswith(f"steps.md:{line}: steps.break.solution: kill: unknown node 'wbe' (at 'wbe', column 6)")
    )


@pytest.mark.django_db
def test_lessons_load_stores_steps_and_texts_and_keeps_the_row(tmp_path: Path) -> None:
    (tmp_path / "steps.md").write_text(MAIN)
    (tmp_path / "steps.bg.md").write_text(BG)
    call_command("lessons", "load", str(tmp_path), stdout=StringIO())
    lesson = Lesson.objects.get(slug="fixture-steps")
    assert [s["id"] for s in lesson.steps] == ["start", "break", "read"]
    assert set(lesson.i18n) == {"en", "bg"}
    (tmp_path / "steps.md").write_text(variant(MAIN, "Press **Start**.", "Press the **Start lab** button."))
    call_command("lessons", "load", str(tmp_path), stdout=StringIO())
    again = Lesson.objects.get(slug="fixture-steps")
    assert again.pk == lesson.pk
    assert "Start lab" in again.i18n["en"]["steps"]["start"]["html"]


# Garbage never crashes the loader ---------------------------------------------------------------

YAMLISH = st.sampled_from(
    [
        "id: x",
        "id:",
        "stage: 1",
        "stage: -1",
        "title: [",
        "title: {a: b}",
        "objectives:",
        "  - a",
        "  - 1",
        "topology:",
        "  nodes:",
        "    - id: web",
        "      kind: web",
        "  edges: [[a, b]]",
        "- x",
        "? [a]",
        ": b",
        "&a [*a]",
        "!!python/object:os.system x",
        "'",
        '"',
        "\t",
        "lang: bg",
        "version: 1e9",
        "minutes: .inf",
        "x: !!binary AAAA",
        "{",
        "}",
        "---",
        "...",
        "%YAML 1.1",
        "a: &x 1\nb: *y",
        "ключ: стойност",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(YAMLISH, max_size=12).map("\n".join) | st.text(max_size=120))
def test_it_reports_garbage_front_matter_clearly(front: str) -> None:
    for text in (f"---\n{front}\n---\n# Body\n", front):
        lesson, errors = lesson_parse_text(
            text, display="g.md", translations={"bg": (f"---\n{front}\n---\n", "g.bg.md")}
        )
        assert (lesson is None) == bool(errors)
        for e in errors:
            assert e.line >= 1 and e.field and e.reason and str(e).startswith(("g.md:", "g.bg.md:"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list('metric(web.rps)>=<! 01s"\n#andorwhensay,{}`')), max_size=60))
def test_it_reports_garbage_checks_inside_the_block(check: str) -> None:
    text = variant(MAIN, "metric(totals.rps) > 0 for 3s\n", check.replace("```", "`") + "\n")
    _lesson, errors = lesson_parse_text(text, display="g.md")
    first, last = line_of(text, "```check"), line_of(text, "```solution") - 1
    for e in errors:
        assert e.field.startswith(("steps.start", "steps")) and e.reason
        if e.field == "steps.start.check":
            assert first < e.line < last


def test_lessons_check_passes_every_shipped_lesson_and_translation() -> None:
    root = Path(__file__).parents[2] / "lessons" / "content"
    lessons, errors = lessons_check([root])
    assert errors == []
    single = next(lesson for lesson in lessons if lesson.slug == "single-server")
    assert len(single.steps) >= 5 and all(s["check"] and s["solution"] for s in single.steps)
    assert set(single.i18n) == {"en", "bg"}
    assert single.i18n["bg"]["steps"].keys() == single.i18n["en"]["steps"].keys()


def test_the_complete_example_in_the_authoring_guide_is_valid() -> None:
    import re

    guide = (Path(__file__).parents[2] / "docs" / "authoring.md").read_text()
    main, bg = re.findall(r"````markdown\n(.*?)\n````", guide, re.S)
    lesson, errors = lesson_parse_text(
        main + "\n", display="example.md", translations={"bg": (bg + "\n", "example.bg.md")}
    )
    assert errors == []
    assert [s["id"] for s in lesson.steps] == ["start", "saturate"]
    assert set(lesson.i18n) == {"en", "bg"}


def test_a_node_one_step_adds_may_be_named_by_later_steps_and_not_after_its_removal() -> None:
    from lessons.loader import lesson_parse_text

    later = "A step without a check.\n\n```solution\nkill web-2\n```\n"
    added = variant(MAIN, "traffic 10\nkill web\n", "traffic 10\nadd web\n")
    added = variant(added, "A step without a check.\n", later)
    _, errors = lesson_parse_text(added, display="lesson.md")
    assert not errors, [str(e) for e in errors]
    # Once an earlier step removed it, a later step cannot name it.
    removed = variant(added, "add web\n", "add web\nremove web-2\n")
    errors = errors_of(removed)
    assert [e.field for e in errors] == ["steps.read.solution"] and "unknown node 'web-2'" in errors[0].reason
