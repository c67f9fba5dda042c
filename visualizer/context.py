"""Every page of a workshop's participant shows the workshop's banner (templates/base.html)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from visualizer.models import Participant
from visualizer.workshops import live_state, participant_for_session

_NOT_LOOKED_UP = object()


def participant_of(request: HttpRequest) -> Participant | None:
    """The request's session's participant in an open workshop, looked up once per request (the
    stage view and this context processor both ask)."""
    found = getattr(request, "_scalelab_participant", _NOT_LOOKED_UP)
    if found is _NOT_LOOKED_UP:
        session = getattr(request, "session", None)
        found = participant_for_session(session.session_key if session is not None else None)
        request._scalelab_participant = found  # type: ignore[attr-defined]
    return found  # type: ignore[return-value]


def workshop(request: HttpRequest) -> dict[str, Any]:
    participant = participant_of(request)
    if participant is None:
        return {}
    return {"participant": participant, "workshop_live": live_state(participant.workshop)}
