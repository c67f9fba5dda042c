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


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"action": "add"}, "missing like"),
        ({"action": "add", "like": "ghost"}, "unknown node 'ghost'"),
        ({"action": "add", "like": "web", "node": "web"}, "unexpected field node"),
        ({"action": "remove", "node": 3}, "node must be a node id"),
        ({"action": "partition", "node": "web"}, "missing peer"),
        ({"action": "partition", "node": "web", "peer": "web"}, "cut off from itself"),
        ({"action": "partition", "node": "web", "peer": "Ghost!"}, "peer must be a node id"),
        ({"action": "delay", "node": "db", "ms": -5}, "between 0 and"),
        ({"action": "mix"}, "give write_ratio"),
        ({"action": "mix", "write_ratio": 1.5}, "write_ratio must be between 0 and 1"),
        ({"action": "mix", "zipf_s": "hot"}, "zipf_s must be a number"),
    ],
)
def test_it_checks_the_scaling_partition_and_replication_fields(bad, says):
    with pytest.raises(CommandError, match=says):
        validate_command(bad, node_ids=["web", "db"])


@pytest.mark.parametrize(
    "good",
    [
        {"action": "add", "like": "web"},
        {"action": "remove", "node": "web"},
        {"action": "partition", "node": "web", "peer": "db"},
        {"action": "heal", "node": "web"},
        {"action": "heal", "node": "web", "peer": "db"},
        {"action": "promote", "node": "db"},
        {"action": "delay", "node": "db", "ms": 300.0},
        {"action": "mix", "node": "web", "write_ratio": 0.2},
        {"action": "mix", "zipf_s": 1.1},
    ],
)
def test_scaling_partition_and_replication_commands_normalise(good):
    assert validate_command(good, node_ids=["web", "db"]) == good


def test_a_lesson_solution_may_add_a_node_and_name_it_on_later_lines():
    from core.engine.checks import SolutionSyntaxError, parse_solution

    text = "add web-1\npartition web-4 db\nheal web-4\nremove web-4\ndelay db 300"
    assert parse_solution(text, node_ids=["web-1", "web-2", "web-3", "db"]) == [
        {"action": "add", "like": "web-1"},
        {"action": "partition", "node": "web-4", "peer": "db"},
        {"action": "heal", "node": "web-4"},
        {"action": "remove", "node": "web-4"},
        {"action": "delay", "node": "db", "ms": 300.0},
    ]
    with pytest.raises(SolutionSyntaxError, match="unknown node 'web-4'"):
        parse_solution("remove web-4", node_ids=["web-1", "db"])
