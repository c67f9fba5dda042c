"""Read lesson files (YAML front matter + Markdown body) and report errors as `file:line: field: reason`.

Pure reading and validation; writing rows is `lessons_load`. Line numbers come from walking the
YAML node tree (yaml.compose) along each error's field path, so an author lands on the exact line.

One module a job: ``parse`` (a file or text with its translations; many files, ids unique),
``files`` (finding lesson files and their translations), ``front`` (the YAML front matter),
``lesson`` (the main file's fields and the LessonData it makes), ``body`` (intro and steps),
``blocks`` (a step's check, solution, predict and hints blocks), ``safe_yaml`` (the YAML reader:
no anchors or aliases), ``translation`` (a translation checked against its English lesson),
``markdown`` (rendering and sanitising), ``report`` (LessonError and the field-path-to-line report).
"""

from __future__ import annotations

from lessons.loader.files import lesson_files, lesson_translations
from lessons.loader.lesson import LessonData
from lessons.loader.markdown import render_markdown
from lessons.loader.parse import lesson_parse, lesson_parse_text, lessons_check
from lessons.loader.report import LessonError
from lessons.loader.translation import LANGUAGES

__all__ = [
    "LANGUAGES",
    "LessonData",
    "LessonError",
    "lesson_files",
    "lesson_parse",
    "lesson_parse_text",
    "lesson_translations",
    "lessons_check",
    "render_markdown",
]
