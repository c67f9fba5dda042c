"""A lesson's steps as the stage page shows them: text in the request's language, English fallback.

The page gets each step's title, rendered (already sanitised) text, hint texts and predict
question; checks and solutions stay on the server. The hint texts go to the browser so that it can
show the hint whose index the engine's verdict names.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import get_language


def page_language() -> str:
    return (get_language() or "en").split("-")[0]


def steps_for_page(lesson: Any, lang: str | None = None, *, instructor: bool = False) -> list[dict[str, Any]]:
    """[{id, title, html, hints, predict, has_check}] in lang (default: the active language).

    With instructor=True (staff only: never for students) each step also has its instructor_html.
    """
    lang = lang or page_language()
    table = getattr(lesson, "i18n", None)
    table = table if isinstance(table, dict) else {}

    def texts(code: str) -> dict[str, Any]:
        entry = table.get(code)
        steps = entry.get("steps") if isinstance(entry, dict) else None
        return steps if isinstance(steps, dict) else {}

    mine, english = texts(lang), texts("en")
    out = []
    for step in getattr(lesson, "steps", None) or []:
        if not isinstance(step, dict) or not step.get("id"):
            continue
        sid = step["id"]
        own = mine.get(sid) if isinstance(mine.get(sid), dict) else {}
        en = english.get(sid) if isinstance(english.get(sid), dict) else {}

        def pick(key: str, default: Any, own: dict[str, Any] = own, en: dict[str, Any] = en) -> Any:
            return own.get(key) or en.get(key) or default

        predict = _predict(own.get("predict")) or _predict(en.get("predict")) or _predict(step.get("predict"))
        unit = next((str(p["unit"]) for p in (own.get("predict"), en.get("predict"), step.get("predict"))
                     if isinstance(p, dict) and p.get("unit")), "")
        out.append({
            "id": sid,
            "title": pick("title", step.get("title") or sid),
            "html": pick("html", ""),
            "hints": [str(h) for h in pick("hints", step.get("hints") or [])],
            "predict": predict,
            "predict_unit": unit,
            "has_check": bool(step.get("check")),
        })
        if instructor:
            out[-1]["instructor_html"] = pick("instructor_html", "")
    return out


def _predict(value: Any) -> str:
    """A predict block's question: plain text, or the `question` of {question, measure, unit}."""
    if isinstance(value, dict):
        value = value.get("question")
    return value.strip() if isinstance(value, str) else ""
