"""The main (English) lesson file: its front matter fields, its steps, and the LessonData they make."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.engine.spec import SpecError, parse_topology
from lessons.loader.blocks import main_steps
from lessons.loader.body import MAIN_BLOCKS, Step, split_body
from lessons.loader.front import check_texts
from lessons.loader.markdown import render_markdown
from lessons.loader.report import Report

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
FIELDS = ("id", "stage", "title", "summary", "version", "minutes", "objectives", "topology")
REQUIRED = ("id", "stage", "title", "summary", "version", "minutes", "objectives")


@dataclass(frozen=True)
class LessonData:
    """A validated lesson file (with its translations), ready to upsert."""

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
    # [{id, title, check (source or None), hints (English texts), solution, predict}]
    steps: list[dict[str, Any]] = field(default_factory=list)
    # {"en": {title, summary, objectives, body_html (intro), steps: {id: {title, html,
    #  instructor_html, hints, predict}}}, "bg": {...}}
    i18n: dict[str, Any] = field(default_factory=dict)
    # The source texts, kept so that the editor can show them and `lessons export` can write them.
    source: str = ""
    source_translations: dict[str, str] = field(default_factory=dict)


def validate_lesson(data: dict[Any, Any], body: str, body_line: int, report: Report) -> LessonData | None:
    """The lesson that a main file's front matter and body make, or None with errors added."""
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
    check_texts(data, report)
    topology: dict[str, Any] | None = None
    if data.get("topology") is not None:
        try:
            topology = parse_topology(data["topology"]).to_dict()
        except SpecError as exc:
            for error in exc.errors:
                report.add(error.path, error.reason)
    front_ok = not report.errors
    intro, raw_steps = split_body(body, body_line, report, blocks=MAIN_BLOCKS)
    steps, texts = main_steps(raw_steps, topology if front_ok else None, report, check_refs=front_ok)
    if report.errors:
        return None
    title, summary = data["title"].strip(), data["summary"].strip()
    objectives = [o.strip() for o in data["objectives"]]
    return LessonData(
        slug=slug,
        stage=data["stage"],
        title=title,
        summary=summary,
        version=data["version"],
        minutes=data["minutes"],
        objectives=objectives,
        body_md=body,
        body_html=_full_html(intro, raw_steps),
        topology=topology,
        source_path=report.file,
        steps=steps,
        i18n={
            "en": {
                "title": title,
                "summary": summary,
                "objectives": objectives,
                "body_html": render_markdown("".join(intro)),
                "steps": texts,
            }
        },
    )


def _full_html(intro: list[str], steps: list[Step]) -> str:
    """The whole English text without special blocks: what the page showed before steps existed."""
    parts = ["".join(intro)]
    for step in steps:
        parts.append(f"\n## {step.title} {{#{step.id}}}\n\n" + "".join(step.md))
    return render_markdown("".join(parts))
