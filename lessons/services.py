"""Writes for lessons: upsert validated lesson files into the database, save edits, export files."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from django.db import transaction

from lessons.loader import LessonData, LessonError, lesson_parse_text
from lessons.models import Lesson


@transaction.atomic
def lessons_load(*, lessons: list[LessonData], force: bool = False) -> list[tuple[Lesson, bool]]:
    """Upsert lessons by slug (the front matter id); returns (lesson, created) pairs.

    The caller validates every file first: loading is all or nothing. A lesson edited in the
    browser and not exported since is kept as it is (and returned unchanged) unless ``force``.
    """
    out = []
    for data in lessons:
        fields = asdict(data)
        slug = fields.pop("slug")
        kept = Lesson.objects.filter(slug=slug, edited_in_browser=True).exclude(source=data.source).first()
        if kept is not None and not force:
            out.append((kept, False))
            continue
        fields["edited_in_browser"] = False
        out.append(Lesson.objects.update_or_create(slug=slug, defaults=fields))
    return out


def lesson_source_parse(
    lesson: Lesson, *, source: str, translations: dict[str, str]
) -> tuple[LessonData | None, list[LessonError]]:
    """Validate an edited source (and its translations) exactly as `lessons check` would the files.

    Errors name the lesson's own files (`lessons/content/01-….md:12: …`). The id cannot change in
    the editor: it is the row's key (and the students' progress's); rename in git instead.
    """
    display = lesson.source_path or f"{lesson.slug}.md"
    main = Path(display)
    source = _normalise(source)
    alone, _ = lesson_parse_text(source, display=display)
    if alone is not None and alone.slug != lesson.slug:
        line = next((n for n, text in enumerate(source.splitlines(), 1) if text.startswith("id:")), 1)
        return None, [LessonError(display, line, "id", f"must stay {lesson.slug!r}: the id keys students' progress")]
    texts = {
        lang: (_normalise(text), str(main.with_name(f"{main.stem}.{lang}.md"))) for lang, text in translations.items()
    }
    data, errors = lesson_parse_text(source, display=display, translations=texts)
    return data, errors


@transaction.atomic
def lesson_source_save(
    lesson: Lesson, *, source: str, translations: dict[str, str]
) -> tuple[Lesson | None, list[LessonError]]:
    """Validate, then update the lesson's row from the edited source; nothing changes on any error.

    Step ids are kept by the text, so progress (keyed by step id) stays attached.
    """
    data, errors = lesson_source_parse(lesson, source=source, translations=translations)
    if data is None:
        return None, errors
    [(saved, _)] = lessons_load(lessons=[data], force=True)
    saved.edited_in_browser = True
    saved.save(update_fields=["edited_in_browser"])
    return saved, []


def lessons_export(*, lessons: list[Lesson], to: Path) -> list[Path]:
    """Write each lesson's stored source (and translations) to `to`, under its file's name."""
    missing = [lesson.slug for lesson in lessons if not lesson.source]
    if missing:  # all or nothing
        raise ValueError(f"no stored source for {', '.join(missing)} (load with `lessons load` first)")
    written: list[Path] = []
    to.mkdir(parents=True, exist_ok=True)
    for lesson in lessons:
        main = to / (Path(lesson.source_path).name if lesson.source_path else f"{lesson.slug}.md")
        main.write_text(lesson.source, encoding="utf-8")
        written.append(main)
        for lang, text in sorted((lesson.source_translations or {}).items()):
            path = main.with_name(f"{main.stem}.{lang}.md")
            path.write_text(text, encoding="utf-8")
            written.append(path)
    # The files now hold the edits: a later `lessons load` may update these rows again.
    Lesson.objects.filter(pk__in=[lesson.pk for lesson in lessons]).update(edited_in_browser=False)
    return written


def _normalise(text: str) -> str:
    """A browser's textarea sends CRLF line ends; the files (and git) have LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")
