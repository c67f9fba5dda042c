"""Reading lessons: one file or text with its translations, or many files with unique ids."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from lessons.loader.files import display_path, lesson_files, lesson_translations
from lessons.loader.front import read_front, split_front
from lessons.loader.lesson import LessonData, validate_lesson
from lessons.loader.report import LessonError, Report
from lessons.loader.safe_yaml import yaml_load
from lessons.loader.translation import validate_translation


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
            texts = validate_translation(lang, ttext, lesson, treport)
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
            report = Report(display, root=yaml_load(read_front(path))[0])
            report.add(("id",), f"duplicate id {lesson.slug!r} (also in {seen[lesson.slug]})")
            errors.extend(report.errors)
            continue
        seen[lesson.slug] = display
        lessons.append(lesson)
    return lessons, errors
