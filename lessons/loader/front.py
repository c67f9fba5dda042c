"""Front matter: cut it from the body, parse its YAML (no aliases, no duplicate keys), check its texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from core.engine.spec import format_path
from lessons.loader.report import FieldPath, LessonError, Report
from lessons.loader.safe_yaml import AliasRefused, yaml_load


def split_front(text: str, report: Report) -> tuple[dict[Any, Any], str, int] | None:
    """(front matter data, body, file line of the body's first line), or None with errors added."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        report.add((), "the file must start with a '---' line opening the YAML front matter")
        return None
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if end is None:
        report.add((), "no closing '---' line after the front matter")
        return None
    front = "".join(lines[1:end])
    body = "".join(lines[end + 1 :])
    try:
        report.root, data = yaml_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 + report.offset if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        where = (format_path(exc.path) if isinstance(exc, AliasRefused) else "") or "front matter"
        report.errors.append(LessonError(report.file, line, where, f"invalid YAML: {problem}"))
        return None
    except RecursionError:
        report.errors.append(LessonError(report.file, 1, "front matter", "invalid YAML: nested too deeply"))
        return None
    if report.root is not None:
        _check_duplicate_keys(report.root, (), report)
    if not isinstance(data, dict):
        report.add((), "the front matter must be a mapping of fields")
        return None
    return data, body, end + 2


def _check_duplicate_keys(node: Node, path: FieldPath, report: Report) -> None:
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


def check_texts(data: dict[Any, Any], report: Report) -> None:
    """title, summary and objectives: the fields that a main file and its translations both have."""
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


def read_front(path: Path) -> str:
    """The front matter of a file that has parsed already, so its closing '---' is there."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    end = next(i for i in range(1, len(lines)) if lines[i].rstrip() == "---")
    return "".join(lines[1:end])
