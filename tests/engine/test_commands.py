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


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"action": "slow", "node": "web"}, "missing ms"),
        ({"action": "slow", "node": "web", "ms": "lots"}, "ms must be a number"),
        ({"action": "slow", "node": "web", "ms": 10**6}, "between 0 and"),
        ({"action": "algorithm", "node": "lb"}, "missing value"),
        ({"action": "algorithm", "node": "lb", "value": "fastest"}, "must be one of round_robin"),
        ({"action": "algorithm", "node": "lb", "value": ["random"]}, "must be one of"),
    ],
)
def test_it_checks_the_slow_and_algorithm_fields(bad, says):
    with pytest.raises(CommandError, match=says):
        validate_command(bad, node_ids=["web", "lb"])


def test_slow_and_algorithm_normalise():
    slow = {"action": "slow", "node": "web", "ms": 200}
    assert validate_command(slow) == {**slow, "ms": 200.0}
    cmd = {"action": "algorithm", "node": "lb", "value": "ip_hash"}
    assert validate_command(cmd) == cmd
