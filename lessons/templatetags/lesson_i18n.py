"""`{{ lesson|localized:"title" }}`: a lesson's text in the page's language, falling back to English.

A lesson may carry ``i18n = {"en": {"title": ..., "summary": ...}, "bg": {...}}``; the plain model
fields are the English text. A missing language, key or empty value falls back to the field.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.translation import get_language

register = template.Library()


@register.filter
def localized(lesson: Any, key: str) -> Any:
    default = getattr(lesson, key, "")
    table = getattr(lesson, "i18n", None)
    if not isinstance(table, dict):
        return default
    lang = (get_language() or "en").split("-")[0]
    texts = table.get(lang)
    if isinstance(texts, dict):
        value = texts.get(key)
        if value:
            return value
    return default
