"""Any JSON value a browser may send gets a valid command or a CommandError, never a crash."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from core.engine.commands import ACTIONS, CommandError, validate_command
from visualizer.consumers import QUOTE_CHARS, _quote

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(["node", "like", "peer", "rate", "ms", "value", "size", "step", "write_ratio", "zipf_s",
                          "mb", "s", "n", "id", "region", "mode", "extra"])
COMMANDS = st.fixed_dictionaries({"action": st.sampled_from(sorted(ACTIONS)) | st.text(max_size=8)}).flatmap(
    lambda base: st.dictionaries(FIELDS, JSON, max_size=4).map(lambda rest: {**rest, **base}))


@settings(max_examples=600, deadline=None)
@given(st.one_of(JSON, COMMANDS))
def test_validation_returns_a_command_or_says_why(value: object) -> None:
    try:
        command = validate_command(value)
    except CommandError as exc:
        assert str(exc)
    else:
        assert command["action"] in ACTIONS
        json.dumps(command)  # what is published to the lab is plain JSON
    quoted = _quote(value)  # what an error frame echoes: the value if small, else a short prefix
    assert quoted == value or (isinstance(quoted, str) and len(quoted) <= QUOTE_CHARS)
    json.dumps(quoted)
