"""Read lesson files (YAML front matter + Markdown body) and report errors as `file:line: field: reason`.

Pure reading and validation; writing rows is `lessons_load`. Line numbers come from walking the
YAML node tree (yaml.compose) along each error's field path, so an author lands on the exact line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from core.engine.spec import SpecError, parse_topology
from lessons.loader.blocks import hint_lines, main_steps, parse_predict, step_texts
from lessons.loader.body import MAIN_BLOCKS, TRANSLATION_BLOCKS, Step, split_body
from lessons.loader.files import display_path, lesson_files, lesson_translations
from lessons.loader.front import check_texts, read_front, split_front
from lessons.loader.markdown import render_markdown
from lessons.loader.report import LessonError, Report

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
FIELDS = ("id", "stage", "title", "summary", "version", "minutes", "objectives", "topology")
REQUIRED = ("id", "stage", "title", "summary", "version", "minutes", "objectives")
TRANSLATION_FIELDS = ("id", "lang", "title", "summary", "objectives")
LANGUAGES = ("en", "bg")  # the main file is English; a sibling NN-id.<lang>.md translates it

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


def lesson_parse(path: Path, *, display: str | None = None) -> tuple[LessonData | None, list[LessonError]]:
    """Parse and validate one lesson file and its translations; returns (lesson, []) or (None, errors)."""
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [LessonError(display, 1, "file", f"cannot read: {exc}")]
    translations: dict[str, tuple[str, str]] = {}
    errors: list[LessonError] = []
    for lang, tpath in lesson_translations(path).items():
        tdisplay = str(Path(display).with_name(tpath.name))
        try:
            translations[lang] = (tpath.read_text(encoding="utf-8"), tdisplay)
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(LessonError(tdisplay, 1, "file", f"cannot read: {exc}"))
    lesson, parse_errors = lesson_parse_text(text, display=display, translations=translations)
    errors.extend(parse_errors)
    return (lesson, []) if not errors else (None, errors)


def lesson_parse_text(
    text: str, *, display: str, translations: dict[str, tuple[str, str]] | None = None
) -> tuple[LessonData | None, list[LessonError]]:
    """Parse a lesson from its source text; translations maps a language to (text, display name).

    The same validation as `lessons check`, for an editor that has text rather than a file.
    """
    report = Report(display)
    split = split_front(text, report)
    if split is None:
        return None, report.errors
    data, body, body_line = split
    lesson = _validate(data, body, body_line, report)
    if lesson is not None:
        for lang, (ttext, tdisplay) in sorted((translations or {}).items()):
            treport = Report(tdisplay)
            texts = _translation(lang, ttext, lesson, treport)
            report.errors.extend(treport.errors)
            if texts is not None:
                lesson.i18n[lang] = texts
                lesson.source_translations[lang] = ttext
    if lesson is not None:
        lesson = replace(lesson, source=text)
    return (lesson, []) if not report.errors else (None, report.errors)


def lessons_check(
    paths: Iterable[Path], *, relative_to: Path | None = None
) -> tuple[list[LessonData], list[LessonError]]:
    """Validate every file (and that ids are unique across them); returns lessons and all errors."""
    lessons: list[LessonData] = []
    errors: list[LessonError] = []
    seen: dict[str, str] = {}
    for path in lesson_files(paths):
        display = display_path(path, relative_to)
        lesson, file_errors = lesson_parse(path, display=display)
        errors.extend(file_errors)
        if lesson is None:
            continue
        if lesson.slug in seen:
            report = Report(display, root=yaml.compose(read_front(path), Loader=yaml.SafeLoader))
            report.add(("id",), f"duplicate id {lesson.slug!r} (also in {seen[lesson.slug]})")
            errors.extend(report.errors)
            continue
        seen[lesson.slug] = display
        lessons.append(lesson)
    return lessons, errors


def _validate(data: dict[Any, Any], body: str, body_line: int, report: Report) -> LessonData | None:
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


def _translation(lang: str, text: str, lesson: LessonData, report: Report) -> dict[str, Any] | None:
    """Validate one translation against its main lesson; its texts, or None with errors added."""
    split = split_front(text, report)
    if split is None:
        return None
    data, body, body_line = split
    if lang not in LANGUAGES or lang == "en":
        report.add(
            (),
            f"unsupported language {lang!r} in the file name (supported: "
            f"{', '.join(x for x in LANGUAGES if x != 'en')})",
        )
    for key in data:
        if key not in TRANSLATION_FIELDS:
            why = " (the topology lives in the main file)" if key == "topology" else ""
            report.add((str(key),), f"unknown field in a translation (expected {', '.join(TRANSLATION_FIELDS)}){why}")
    for key in TRANSLATION_FIELDS:
        if key not in data:
            report.add((), f"missing required field {key!r}")
    if "id" in data and data["id"] != lesson.slug:
        report.add(("id",), f"must be the main file's id {lesson.slug!r}, got {data['id']!r}")
    if "lang" in data and data["lang"] != lang:
        report.add(("lang",), f"must be {lang!r}, as in the file name, got {data['lang']!r}")
    check_texts(data, report)
    intro, raw = split_body(body, body_line, report, blocks=TRANSLATION_BLOCKS)
    main = {s["id"]: s for s in lesson.steps}
    main_order = [s["id"] for s in lesson.steps]
    ids = [s.id for s in raw]
    for step in raw:
        if step.id not in main:
            report.at(step.line, f"steps.{step.id}", f"no step {{#{step.id}}} in the main file")
    missing = [s for s in main_order if s not in ids]
    if missing:
        report.at(body_line, "steps", "missing the main file's step(s) " + ", ".join(f"{{#{s}}}" for s in missing))
    common = [s for s in ids if s in main]
    if not missing and common != main_order:
        for step, want in zip(raw, main_order, strict=False):
            if step.id != want:
                report.at(
                    step.line,
                    f"steps.{step.id}",
                    f"steps must come in the main file's order: expected {{#{want}}} here",
                )
                break
    texts: dict[str, Any] = {}
    for step in raw:
        if step.id not in main:
            continue
        name = f"steps.{step.id}"
        want_hints = main[step.id]["hints"]
        block = step.blocks.get("hints")
        hints = hint_lines(block.text) if block else []
        if len(hints) != len(want_hints):
            report.at(
                block.line if block else step.line,
                f"{name}.hints",
                f"{len(hints)} hint(s) here but the check has {len(want_hints)}: translate each `when … say` "
                "text, one per line, in a ```hints block",
            )
        predict = None
        block = step.blocks.get("predict")
        if block is not None:
            predict = parse_predict(block, f"{name}.predict", report, topology=None, main=False)
            if main[step.id]["predict"] is None:
                report.at(block.line, f"{name}.predict", "the main file's step has no ```predict block")
        elif main[step.id]["predict"] is not None:
            report.at(step.line, f"{name}.predict", "the main file's step has a ```predict block: translate it here")
        if (
            predict is not None
            and main[step.id]["predict"]
            and "unit" not in predict
            and "unit" in main[step.id]["predict"]
        ):
            predict["unit"] = main[step.id]["predict"]["unit"]
        translated = step_texts(step, hints, predict)
        if "instructor" not in step.blocks:  # notes for staff fall back to the main file's
            translated["instructor_html"] = lesson.i18n["en"]["steps"][step.id]["instructor_html"]
        texts[step.id] = translated
    if report.errors:
        return None
    return {
        "title": data["title"].strip(),
        "summary": data["summary"].strip(),
        "objectives": [o.strip() for o in data["objectives"]],
        "body_html": render_markdown("".join(intro)),
        "steps": texts,
    }


def _full_html(intro: list[str], steps: list[Step]) -> str:
    """The whole English text without special blocks: what the page showed before steps existed."""
    parts = ["".join(intro)]
    for step in steps:
        parts.append(f"\n## {step.title} {{#{step.id}}}\n\n" + "".join(step.md))
    return render_markdown("".join(parts))


