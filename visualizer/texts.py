"""Words the engine declares (core.engine.kinds), translated for the page in the request's language."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext

from core.engine.kinds import EVENTS, KINDS


def event_texts() -> dict[str, dict[str, Any]]:
    """How the event log words every event the engine emits: {kind: {"text", "otherwise"?}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, event in EVENTS.items():
        entry: dict[str, Any] = {"text": gettext(event.text)}
        if event.otherwise:
            entry["otherwise"] = [event.otherwise[0], gettext(event.otherwise[1])]
        out[name] = entry
    return out


def kind_texts() -> dict[str, str]:
    """The words of every kind's menu and box lines (Kind.commands, Kind.lines): {English: translated}.
    The topology carries them in English; the page looks each up here."""
    words: set[str] = set()
    for kind in KINDS.values():
        words.update(kind.lines)
        words.update(w for w in (kind.tier_title, kind.title) if w)
        for command in kind.commands.values():
            words.add(command.label)
            for f in command.fields.values():
                words.update(w for w in (f.label, *f.labels.values()) if w)
    return {w: gettext(w) for w in sorted(words)}
