"""Events are declared once, with their wording (core.engine.kinds.EVENTS), and only those are sent."""

from __future__ import annotations

import pytest

from core.engine.kinds import EVENTS, KINDS, LAB_EVENTS
from core.engine.telemetry import EVENT_KINDS, Telemetry


def test_an_undeclared_event_is_refused():
    with pytest.raises(ValueError, match="not declared"):
        Telemetry().event(0.0, "node_down", node="web")


def test_a_kinds_events_are_its_own():
    owners: dict[str, str] = {}
    for name, kind in KINDS.items():
        for event in kind.events:
            assert event not in LAB_EVENTS and event not in owners, f"{event} declared twice"
            owners[event] = name
    assert set(EVENTS) == set(LAB_EVENTS) | set(owners) == EVENT_KINDS
