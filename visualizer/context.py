"""Every page of a workshop's participant shows the workshop's banner (templates/base.html)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from visualizer.workshops import live_state, participant_for_session


def workshop(request: HttpRequest) -> dict[str, Any]:
    session = getattr(request, "session", None)
    participant = participant_for_session(session.session_key if session is not None else None)
    if participant is None:
        return {}
    return {"participant": participant, "workshop_live": live_state(participant.workshop)}
