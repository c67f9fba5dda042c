"""Read lesson files (YAML front matter + Markdown body) and report errors as `file:line: field: reason`.

Pure reading and validation; writing rows is `lessons_load`. Line numbers come from walking the
YAML node tree (yaml.compose) along each error's field path, so an author lands on the exact line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import markdown
import nh3
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from core.engine.spec import SpecError, format_path, parse_topology

FieldPath = tuple[str | int, ...]
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
FIELDS = ("id", "stage", "title", "summary", "version", "minutes", "objectives", "topology")
REQUIRED = ("id", "stage", "title", "summary", "version", "minutes", "objectives")

ALLOWED_TAGS = {
    "a", "abbr", "blockquote", "br", "code", "dd", "div", "dl", "dt", "em", "figcaption", "figure",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "img", "kbd", "li", "ol", "p", "pre", "span",
    "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "td": {"align"},
    "th": {"align"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    **{f"h{i}": {"id"} for i in range(1, 7)},
}


@dataclass(frozen=True)
class LessonError:
    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


@dataclass(frozen=True)
class LessonData:
    """A validated lesson file, ready to upsert."""

    slug: str
    stage: int
    title: str
    summary: str
    version: int
    minutes: int
    objectives: list[str]
    body_md: str
    body_html: str
    topology: dict[str, Any] | None
    source_path: str


@dataclass
class _Report:
    file: str
    root: Node | None = None
    offset: int = 1  # lines before the YAML text (the opening '---')
    errors: list[LessonError] = field(default_factory=list)

    def add(self, path: FieldPath, reason: str) -> None:
        self.errors.append(LessonError(self.file, self.line_of(path), format_path(path) or "front matter", reason))

    def line_of(self, path: FieldPath) -> int:
        """1-based file line of the field at path, or of its nearest existing parent."""
        node = self.root
        if node is None:
            return 1
        line = node.start_mark.line
        for part in path:
            if isinstance(node, MappingNode):
                for key, value in node.value:
                    if isinstance(key, ScalarNode) and key.value == str(part):
                        line, node = key.start_mark.line, value
                        break
                else:
                    break
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line
            else:
                break
        return line + 1 + self.offset


def lesson_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories into their *.md files, sorted, so errors come out in a stable order."""
    out: list[Path] = []
    for path in paths:
        out.extend(sorted(path.glob("*.md")) if path.is_dir() else [path])
    return out


def lesson_parse(path: Path, *, display: str | None = None) -> tuple[LessonData | None, list[LessonError]]:
    """Parse and validate one lesson file; returns (lesson, []) or (None, errors)."""
    report = _Report(display or str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        report.errors.append(LessonError(report.file, 1, "file", f"cannot read: {exc}"))
        return None, report.errors
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        report.add((), "the file must start with a '---' line opening the YAML front matter")
        return None, report.errors
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if end is None:
        report.add((), "no closing '---' line after the front matter")
        return None, report.errors
    front = "".join(lines[1:end])
    body = "".join(lines[end + 1:])
    try:
        report.root = yaml.compose(front, Loader=yaml.SafeLoader)
        data = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 + report.offset if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        report.errors.append(LessonError(report.file, line, "front matter", f"invalid YAML: {problem}"))
        return None, report.errors
    if report.root is not None:
        _check_duplicate_keys(report.root, (), report)
    if not isinstance(data, dict):
        report.add((), "the front matter must be a mapping of fields")
        return None, report.errors
    lesson = _validate(data, body, path, report)
    return (lesson, []) if not report.errors else (None, report.errors)


def lessons_check(
    paths: Iterable[Path], *, relative_to: Path | None = None
) -> tuple[list[LessonData], list[LessonError]]:
    """Validate every file (and that ids are unique across them); returns lessons and all errors."""
    lessons: list[LessonData] = []
    errors: list[LessonError] = []
    seen: dict[str, str] = {}
    for path in lesson_files(paths):
        display = _display(path, relative_to)
        lesson, file_errors = lesson_parse(path, display=display)
        errors.extend(file_errors)
        if lesson is None:
            continue
        if lesson.slug in seen:
            report = _Report(display, root=yaml.compose(_front(path), Loader=yaml.SafeLoader))
            report.add(("id",), f"duplicate id {lesson.slug!r} (also in {seen[lesson.slug]})")
            errors.extend(report.errors)
            continue
        seen[lesson.slug] = display
        lessons.append(lesson)
    return lessons, errors


def render_markdown(text: str) -> str:
    """Markdown to HTML, then an allow-list sanitiser: lesson text is trusted-ish, pages are not."""
    html = markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists", "toc"])
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES)


def _validate(data: dict[Any, Any], body: str, path: Path, report: _Report) -> LessonData | None:
    for key in data:
        if key not in FIELDS:
            report.add((str(key),), f"unknown field (expected {', '.join(FIELDS)})")
    for key in REQUIRED:
        if key not in data:
            report.add((), f"missing required field {key!r}")
    slug = data.get("id")
    if "id" in data and not (isinstance(slug, str) and SLUG.match(slug)):
        report.add(("id",), f"must be lower-case letters, digits and '-', got {slug!r}")
    for name in ("stage", "version", "minutes"):
        value = data.get(name)
        if name in data and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            report.add((name,), f"must be a positive integer, got {value!r}")
    for name in ("title", "summary"):
        value = data.get(name)
        if name in data and (not isinstance(value, str) or not value.strip()):
            report.add((name,), f"must be non-empty text, got {value!r}")
    objectives = data.get("objectives")
    if "objectives" in data:
        if not isinstance(objectives, list) or not objectives:
            report.add(("objectives",), "must be a non-empty list of text")
        else:
            for i, item in enumerate(objectives):
                if not isinstance(item, str) or not item.strip():
                    report.add(("objectives", i), f"must be non-empty text, got {item!r}")
    topology: dict[str, Any] | None = None
    if data.get("topology") is not None:
        try:
            topology = parse_topology(data["topology"]).to_dict()
        except SpecError as exc:
            for error in exc.errors:
                report.add(error.path, error.reason)
    if report.errors:
        return None
    return LessonData(
        slug=slug,
        stage=data["stage"],
        title=data["title"].strip(),
        summary=data["summary"].strip(),
        version=data["version"],
        minutes=data["minutes"],
        objectives=[o.strip() for o in objectives],
        body_md=body,
        body_html=render_markdown(body),
        topology=topology,
        source_path=report.file,
    )


def _check_duplicate_keys(node: Node, path: FieldPath, report: _Report) -> None:
    # safe_load silently keeps the last of two equal keys; an author almost never means that.
    if isinstance(node, MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                line = key.start_mark.line + 1 + report.offset
                report.errors.append(LessonError(report.file, line, format_path((*path, name)), "duplicate key"))
            seen.add(name)
            _check_duplicate_keys(value, (*path, name), report)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, (*path, i), report)


def _front(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    end = next(i for i in range(1, len(lines)) if lines[i].rstrip() == "---")
    return "".join(lines[1:end])


def _display(path: Path, relative_to: Path | None) -> str:
    if relative_to is not None:
        try:
            return str(path.resolve().relative_to(relative_to.resolve()))
        except ValueError:
            pass
    return str(path)
