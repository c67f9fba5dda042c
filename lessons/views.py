"""Pages: the course's stages and a stage's editor (the stage page itself, with its live lab, is
visualizer.views: this app does not depend on the lab's)."""

from __future__ import annotations

from types import SimpleNamespace

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from lessons.loader import LANGUAGES, render_markdown
from lessons.models import Lesson
from lessons.services import lesson_source_parse, lesson_source_save
from lessons.steps import steps_for_page


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html", {"lessons": Lesson.objects.order_by("stage", "slug")})


@staff_member_required
def lesson_edit(request: HttpRequest, slug: str) -> HttpResponse:
    """The instructor's editor: the source beside its rendered preview.

    "Save" validates like `lessons check` and updates the row only when there is no error (the
    textareas keep what was sent either way); "Preview" renders without saving.
    """
    lesson = get_object_or_404(Lesson, slug=slug)
    langs = [lang for lang in LANGUAGES if lang != "en"]
    source = lesson.source
    translations = {lang: text for lang, text in (lesson.source_translations or {}).items() if lang in langs}
    errors: list[str] = []
    saved = False
    preview_of = lesson
    if request.method == "POST":
        source = request.POST.get("source", "")
        translations = {lang: request.POST[f"source_{lang}"] for lang in langs
                        if request.POST.get(f"source_{lang}", "").strip()}
        if "save" in request.POST:
            result, found = lesson_source_save(lesson, source=source, translations=translations)
            if result is not None:
                lesson, preview_of, saved = result, result, True
        else:
            data, found = lesson_source_parse(lesson, source=source, translations=translations)
            if data is not None:
                preview_of = SimpleNamespace(**{**data.__dict__, "runnable": data.topology is not None})
        errors = [str(e) for e in found]
        if errors:
            preview_of = None
    return render(
        request,
        "lessons/edit.html",
        {
            "lesson": lesson,
            "source": source,
            "translations": [(lang, translations.get(lang, "")) for lang in langs],
            "errors": errors,
            "saved": saved,
            "preview": preview_of,
            "preview_steps": steps_for_page(preview_of, instructor=True) if preview_of is not None else [],
            # With errors, the Markdown after the front matter still renders (sanitised) as a rough preview.
            "rough_html": render_markdown(_body_of(source)) if errors else "",
        },
    )


def _body_of(text: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is not None:
            return "\n".join(lines[end + 1:])
    return text
