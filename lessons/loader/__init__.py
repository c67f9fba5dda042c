"""Read lesson files (YAML front matter + Markdown body) and report errors as `file:line: field: reason`.

Pure reading and validation; writing rows is `lessons_load`. Line numbers come from walking the
YAML node tree (yaml.compose) along each error's field path, so an author lands on the exact line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from lessons.loader.blocks import hint_lines, parse_predict, step_texts
from lessons.loader.body import TRANSLATION_BLOCKS, split_body
from lessons.loader.files import display_path, lesson_files, lesson_translations
from lessons.loader.front import check_texts, read_front, split_front
from lessons.loader.lesson import LessonData, validate_lesson
from lessons.loader.markdown import render_markdown
from lessons.loader.report import LessonError, Report

TRANSLATION_FIELDS = ("id", "lang", "title", "summary", "objectives")
LANGUAGES = ("en", "bg")  # the main file is English; a sibling NN-id.<lang>.md translates it

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
    lesson = validate_lesson(data, body, body_line, report)
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


