"""A translation (`NN-id.<lang>.md`): its texts, checked against the English lesson it translates."""

from __future__ import annotations

from typing import Any

from lessons.loader.blocks import hint_lines, parse_predict, step_texts
from lessons.loader.body import TRANSLATION_BLOCKS, split_body
from lessons.loader.front import check_texts, split_front
from lessons.loader.lesson import LessonData
from lessons.loader.markdown import render_markdown
from lessons.loader.report import Report

TRANSLATION_FIELDS = ("id", "lang", "title", "summary", "objectives")
LANGUAGES = ("en", "bg")  # the main file is English; a sibling NN-id.<lang>.md translates it


def validate_translation(lang: str, text: str, lesson: LessonData, report: Report) -> dict[str, Any] | None:
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
