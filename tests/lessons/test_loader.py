"""The lesson loader: valid files parse; every error names file, YAML line, field and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lessons.loader import lesson_parse, lessons_check

FIXTURES = Path(__file__).parent / "fixtures"
VALID = (FIXTURES / "valid.md").read_text()


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing needle."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def parse_variant(tmp_path: Path, old: str, new: str) -> tuple[str, list]:
    assert old in VALID, old
    text = VALID.replace(old, new, 1)
    path = tmp_path / "lesson.md"
    path.write_text(text)
    lesson, errors = lesson_parse(path)
    assert lesson is None
    return text, errors


def test_it_parses_a_valid_file() -> None:
    lesson, errors = lesson_parse(FIXTURES / "valid.md")
    assert errors == []
    assert lesson is not None
    assert (lesson.slug, lesson.stage, lesson.version, lesson.minutes) == ("fixture-single", 1, 1, 10)
    assert lesson.objectives == ["Resolve a name with DNS", "See one server saturate"]
    assert [n["id"] for n in lesson.topology["nodes"]] == ["dns", "web", "browser", "phone"]
    assert lesson.topology["nodes"][1]["params"]["service_ms"] == 25.0
    assert lesson.topology["edges"][0] == ["browser", "dns"]


def test_it_renders_markdown_and_strips_scripts() -> None:
    lesson, _ = lesson_parse(FIXTURES / "valid.md")
    assert "<strong>resolve</strong>" in lesson.body_html
    assert "<h1" in lesson.body_html
    assert "<script" not in lesson.body_html


def test_it_allows_a_lesson_without_topology() -> None:
    lesson, errors = lesson_parse(FIXTURES / "later.md")
    assert errors == [] and lesson.topology is None


@pytest.mark.parametrize(
    ("old", "new", "needle", "field", "reason"),
    [
        ("minutes: 10", "minutes: 10\ncolour: blue", "colour:", "colour", "unknown field"),
        ("stage: 1", "stage: one", "stage:", "stage", "positive integer"),
        ("version: 1", "version: 0", "version:", "version", "positive integer"),
        ("id: fixture-single", "id: Fixture Single", "id:", "id", "lower-case"),
        ("  - See one server saturate", "  - 42", "  - 42", "objectives[1]", "non-empty text"),
        ("kind: web", "kind: webb", "kind: webb", "topology.nodes[1].kind", "unknown kind 'webb'"),
        ("workers: 4", "workers: 0", "workers: 0", "topology.nodes[1].params.workers", "at least 1"),
        ("workers: 4", "workers: many", "workers: many", "topology.nodes[1].params.workers",
         "must be int"),
        ("queue_limit: 64", "queue_limit: 64\n        colour: 1", "colour: 1",
         "topology.nodes[1].params.colour", "unknown parameter"),
        ("{flavor: web, rate: 4}", "{flavor: tablet, rate: 4}", "flavor: tablet",
         "topology.nodes[2].params.flavor", "must be one of"),
        ("host: 53", "host: 300", "host: 300", "topology.nodes[0].host", "1-254"),
        ("    - [phone, web]", "    - [phone, wbe]", "[phone, wbe]", "topology.edges[3][1]",
         "no node with id 'wbe'"),
        ("  domain: www.scalelab.test", "  domain: www.scalelab.test\n  colour: red", "colour: red",
         "topology.colour", "unknown field"),
    ],
)
def test_it_reports_the_line_and_field_of_each_error(
    tmp_path: Path, old: str, new: str, needle: str, field: str, reason: str
) -> None:
    text, errors = parse_variant(tmp_path, old, new)
    assert len(errors) == 1, [str(e) for e in errors]
    error = errors[0]
    assert (error.line, error.field) == (line_of(text, needle), field)
    assert reason in error.reason
    assert str(error).startswith(f"{tmp_path / 'lesson.md'}:{error.line}: {field}: ")


def test_it_falls_back_to_the_parent_line_for_a_missing_field(tmp_path: Path) -> None:
    text, errors = parse_variant(tmp_path, "      params: {ttl: 5}\n", "      params: {ttl: 5}\n"
                                 "    - kind: web\n      host: 99\n")
    (error,) = errors
    assert error.field == "topology.nodes[1].id"
    assert error.line == line_of(text, "host: 99") - 1  # the "- kind: web" item that lacks an id


def test_it_reports_a_missing_required_field_at_the_top(tmp_path: Path) -> None:
    _, errors = parse_variant(tmp_path, "minutes: 10\n", "")
    (error,) = errors
    assert (error.line, error.field) == (2, "front matter")
    assert "'minutes'" in error.reason


def test_it_reports_every_error_not_just_the_first(tmp_path: Path) -> None:
    text = VALID.replace("stage: 1", "stage: x").replace("workers: 4", "workers: 999")
    path = tmp_path / "many.md"
    path.write_text(text)
    _, errors = lesson_parse(path)
    assert {e.field for e in errors} == {"stage", "topology.nodes[1].params.workers"}


def test_it_reports_yaml_syntax_errors_with_a_line(tmp_path: Path) -> None:
    text, errors = parse_variant(tmp_path, "title: One server and a name", "title: [unclosed")
    (error,) = errors
    assert error.field == "front matter"
    assert "invalid YAML" in error.reason
    assert error.line >= line_of(text, "[unclosed")


def test_it_reports_duplicate_keys(tmp_path: Path) -> None:
    text, errors = parse_variant(tmp_path, "minutes: 10", "minutes: 10\nminutes: 12")
    (error,) = errors
    assert (error.line, error.field, error.reason) == (line_of(text, "minutes: 12"), "minutes", "duplicate key")


def test_it_needs_front_matter(tmp_path: Path) -> None:
    path = tmp_path / "plain.md"
    path.write_text("# Just text\n")
    _, errors = lesson_parse(path)
    assert [(e.line, e.field) for e in errors] == [(1, "front matter")]


def test_it_rejects_duplicate_ids_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(VALID)
    (tmp_path / "b.md").write_text(VALID)
    lessons, errors = lessons_check([tmp_path])
    assert len(lessons) == 1
    (error,) = errors
    assert error.file.endswith("b.md") and error.line == 2 and "duplicate id" in error.reason


# Hostile YAML -----------------------------------------------------------------------------------

# Nine levels of anchors, each level a list of ten aliases of the one before: a billion strings.
BOMB = "\n".join(['a0: &a0 "lol"'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)])
# Run in a child process with a memory and time limit, so that a loader that expands the bomb fails
# the test instead of taking the machine's memory for minutes. It times the load alone (imports and
# interpreter start-up come first) and prints the seconds on the first line, then the errors.
BOMB_CHILD = """
import pathlib, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from lessons.loader import lesson_parse
started = time.perf_counter()
_, errors = lesson_parse(pathlib.Path(sys.argv[1]))
print(time.perf_counter() - started)
print("\\n".join(str(e) for e in errors))
"""


def test_it_refuses_an_alias_bomb_at_once_and_does_not_print_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.md"
    text = VALID.replace("minutes: 10\n", f"minutes: 10\n{BOMB}\n", 1)
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, str(path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seconds, *errors = result.stdout.splitlines()
    assert float(seconds) < 1.0  # "an error in well under a second"
    assert errors == [
        f"{path}:{line_of(text, 'a0: &a0')}: a0: invalid YAML: anchors and aliases (&name, *name) are not "
        "allowed in a lesson: write the value out"
    ]


@pytest.mark.parametrize(
    ("old", "new", "needle", "field"),
    [
        ("      params: {ttl: 5}", "      params: {ttl: &five 5}", "&five", "topology.nodes[0].params.ttl"),
        ("  - See one server saturate", "  - *nowhere", "*nowhere", "objectives[1]"),
        ("id: fixture-single", "id: fixture-single\n<<: *base", "<<:", "<<"),
    ],
)
def test_it_refuses_anchors_and_aliases_with_their_line_and_field(
    tmp_path: Path, old: str, new: str, needle: str, field: str
) -> None:
    text, errors = parse_variant(tmp_path, old, new)
    (error,) = errors
    assert (error.line, error.field) == (line_of(text, needle), field)
    assert "anchors and aliases" in error.reason


def test_it_reports_a_number_too_long_to_read(tmp_path: Path) -> None:
    text, errors = parse_variant(tmp_path, "version: 1", "version: " + "9" * 5000)
    (error,) = errors
    assert (error.line, error.field) == (line_of(text, "version:"), "front matter")
    assert error.reason == "invalid YAML: this number is too long"
