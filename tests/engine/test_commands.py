import pytest

from core.engine.commands import CommandError, validate_command


@pytest.mark.parametrize(
    "bad, says",
    [
        ("kill web", "JSON object"),
        ({"action": "explode"}, "unknown action"),
        ({"action": "kill"}, "missing node"),
        ({"action": "kill", "node": "web", "force": True}, "unexpected field force"),
        ({"action": "kill", "node": "<script>"}, "node id"),
        ({"action": "kill", "node": "ghost"}, "unknown node 'ghost'"),
        ({"action": "traffic", "rate": "lots"}, "must be a number"),
        ({"action": "traffic", "rate": -1}, "between 0"),
        ({"action": "traffic", "rate": float("nan")}, "must be a number"),
    ],
)
def test_it_rejects_bad_commands_with_a_reason(bad, says):
    with pytest.raises(CommandError, match=says):
        validate_command(bad, node_ids=["web", "dns"])


def test_it_normalises_a_good_command():
    assert validate_command({"action": "traffic", "rate": 12, "id": 3}) == {"action": "traffic", "rate": 12.0}
