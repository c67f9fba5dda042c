"""Words the engine declares (core.engine.kinds), translated for the page in the request's language."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext

from core.engine.kinds import EVENTS


def event_texts() -> dict[str, dict[str, Any]]:
    """How the event log words every event the engine emits: {kind: {"text", "otherwise"?}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, event in EVENTS.items():
        entry: dict[str, Any] = {"text": gettext(event.text)}
        if event.otherwise:
            entry["otherwise"] = [event.otherwise[0], gettext(event.otherwise[1])]
        out[name] = entry
    return out
