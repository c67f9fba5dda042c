"""The check language: parsing (with the offending token), solutions, and evaluation over frame streams."""

from __future__ import annotations

import gzip
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.engine.checks import (
    CheckSyntaxError,
    Evaluator,
    SolutionSyntaxError,
    metric_problem,
    parse_check,
    parse_solution,
)
from core.engine.checks.syntax import MAX_NESTING

RECORDED = Path(__file__).parent / "fixtures" / "single-server-solution.jsonl.gz"


def frame(
    t: float,
    *,
    totals: dict[str, Any] | None = None,
    nodes: dict[str, Any] | None = None,
    edges: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "frame",
        "t": t,
        "totals": totals or {},
        "nodes": nodes or {},
        "edges": edges or {},
        "events": events or [],
    }


def web(t: float, p95: float | None, **extra: Any) -> dict[str, Any]:
    return frame(t, nodes={"web": {"up": True, "p95_ms": p95, **extra}}, **{})


def run(check: str, frames: list[dict[str, Any]]) -> tuple[list[float], Evaluator]:
    """Times of the frames with which the step passed (at most one: passes are sticky)."""
    ev = Evaluator({"s": parse_check(check)})
    return [f["t"] for f in frames if ev.feed(f)], ev


# Parsing ----------------------------------------------------------------------------------------


def test_it_parses_metrics_events_and_hints() -> None:
    check = parse_check(
        "metric(totals.err_rps) > 1 for 2s within 15s after event(node_killed, node=web)\n"
        'when metric(web.up) == 1 say "Kill \\"web\\" first"\n'
        'when metric(browser>web.rps) == 0 say "No traffic"  # a comment\n'
    )
    assert [h.text for h in check.hints] == ['Kill "web" first', "No traffic"]
    assert [h.line for h in check.hints] == [2, 3]
    assert check.node_refs() == {"web", "browser"}
    assert check.metric_refs() == {"totals.err_rps", "web.up", "browser>web.rps"}


def test_it_lets_a_condition_span_lines_and_use_parentheses() -> None:
    check = parse_check(
        "(metric(web.p95_ms) > 200\n and metric(web.err_rps) > 5) for 3s\nor event(node_killed, node=web, rate=3)"
    )
    assert check.metric_refs() == {"web.p95_ms", "web.err_rps"}
    assert check.hints == ()


@pytest.mark.parametrize(
    ("text", "line", "col", "token", "reason"),
    [
        ("", 1, 1, "", "empty check"),
        ("metric(web.p95_ms) >", 1, 21, "", "expected a number"),
        ("metric(web.p95_ms) > 300 for 10", 1, 30, "10", "needs a unit"),
        ("metric(web.p95_ms) > 300 for 10h", 1, 30, "10h", "unknown duration unit 'h'"),
        ("metric(web) > 3", 1, 8, "web", "expected a metric name"),
        ("metric(web.p95_ms) => 3", 1, 20, "=", "expected a comparison"),
        ("metric(web.p95_ms) > 3 and", 1, 27, "", "stops too early"),
        ("metric(web.p95_ms) > 3 xor metric(web.rps) > 1", 1, 24, "xor", "expected 'and', 'or'"),
        ("(metric(web.rps) > 1", 1, 21, "", "to close the '(' at line 1, col 1"),
        ("metric(web.rps) > 1 within 5s after metric(web.rps) > 2", 1, 37, "metric", "needs an event"),
        ("event(node_killed node=web)", 1, 19, "node", "expected ',' or ')'"),
        ("event(node_killed, node)", 1, 24, ")", "expected '=' after node"),
        ('when metric(web.rps) > 1 say "x"', 1, 1, "when", "condition comes first"),
        ("metric(web.rps) > 1\nwhen metric(web.rps) > 1 say nothing", 2, 30, "nothing", "double quotes"),
        ('metric(web.rps) > 1\nwhen metric(web.rps) > 1 "x"', 2, 26, '"x"', "expected 'say"),
        ('metric(web.rps) > 1\n\nwhen metric(web.rps) > 1 say "open', 3, 30, '"open', "unterminated string"),
        ("metric(web.rps) > 1 ; metric(web.rps) > 2", 1, 21, ";", "unexpected character"),
        ("metric(web.rps) > 1e3", 1, 19, "1e3", "expected a number"),
    ],
)
def test_it_points_at_the_offending_token(text: str, line: int, col: int, token: str, reason: str) -> None:
    with pytest.raises(CheckSyntaxError) as info:
        parse_check(text)
    err = info.value
    assert (err.line, err.col, err.token) == (line, col, token)
    assert reason in err.reason


def test_it_refuses_300_nested_parentheses_at_the_first_one_too_deep() -> None:
    with pytest.raises(CheckSyntaxError) as info:
        parse_check("(" * 300 + "metric(web.rps) > 1" + ")" * 300)
    err = info.value
    assert (err.line, err.col, err.token) == (1, MAX_NESTING + 1, "(")
    assert err.reason == f"parentheses nested more than {MAX_NESTING} deep"


def test_it_refuses_deep_nesting_in_a_hint_too() -> None:
    deep = "(" * (MAX_NESTING + 1) + "metric(web.rps) > 1" + ")" * (MAX_NESTING + 1)
    with pytest.raises(CheckSyntaxError) as info:
        parse_check(f'metric(web.rps) > 1\nwhen {deep} say "x"')
    assert (info.value.line, info.value.col) == (2, 6 + MAX_NESTING)


def test_the_deepest_check_allowed_parses_and_evaluates_in_a_small_stack() -> None:
    # The worst a level can hold: an 'or', an 'and', a 'within' and a 'for' around the level below.
    level = "({} for 1s within 10s after event(node_killed, node=web) and metric(web.up) == 0 or metric(web.up) == 1)"
    text = "metric(web.up) == 1"
    for _ in range(MAX_NESTING):
        text = level.format(text)
    frames = [frame(t / 4, nodes={"web": {"up": 1}}) for t in range(12)]
    frames[1]["events"] = [{"t": 0.25, "kind": "node_killed", "node": "web"}]
    limit = sys.getrecursionlimit()
    # 400 frames above this test's own: a worker's or a view's stack is well within the rest of 1000.
    sys.setrecursionlimit(len(inspect.stack()) + 400)
    try:
        check = parse_check(text)
        passed, ev = run(text, frames)
        assert repr(check) and check == parse_check(text)
    finally:
        sys.setrecursionlimit(limit)
    assert passed == [0.0] and ev.verdict("s").passed


CHECK_WORDS = st.sampled_from(
    [
        "metric",
        "event",
        "(",
        ")",
        ",",
        "=",
        ">",
        ">=",
        "==",
        "!=",
        "<",
        "and",
        "or",
        "for",
        "within",
        "after",
        "when",
        "say",
        '"hint"',
        '"open',
        "web.p95_ms",
        "totals.rps",
        "browser>web.rps",
        "node_killed",
        "node",
        "web",
        "10s",
        "500ms",
        "2m",
        "3",
        "0.5",
        "-1",
        "10x",
        "\n",
        "#",
        "é",
        "{",
        "1e9",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(CHECK_WORDS, max_size=25).map(" ".join) | st.text(max_size=80))
def test_it_raises_only_check_syntax_errors_on_garbage(text: str) -> None:
    try:
        check = parse_check(text)
    except CheckSyntaxError as err:
        assert err.line >= 1 and err.col >= 1 and err.reason
        assert err.line <= text.count("\n") + 1
    else:  # whatever parses can be evaluated without crashing
        ev = Evaluator({"s": check})
        ev.feed(frame(1.0, totals={"rps": 3}, events=[{"t": 1.0, "kind": "node_killed", "node": "web"}]))
        ev.verdict("s")


# Metric names against a topology ----------------------------------------------------------------

TOPOLOGY = {
    "nodes": [{"id": "web", "kind": "web"}, {"id": "dns", "kind": "dns"}, {"id": "browser", "kind": "client"}],
    "edges": [["browser", "web"], ["browser", "dns"]],
}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("web.p95_ms", None),
        ("web.util", None),
        ("browser.dropped", None),
        ("dns.up", None),
        ("totals.ok_rps", None),
        ("browser>web.err_rps", None),
        ("wbe.rps", "no node with id 'wbe'"),
        ("dns.util", "unknown metric 'util' for dns node 'dns'"),
        ("totals.util", "unknown metric 'util' for totals"),
        ("web>browser.rps", "no edge web>browser"),
        ("browser>web.p95_ms", "unknown metric 'p95_ms' for an edge"),
        ("web.slow_ms", None),
        ("dns.slow_ms", None),
        ("browser.slow_ms", "unknown metric 'slow_ms' for client node 'browser'"),
    ],
)
def test_it_knows_which_metrics_a_topology_has(name: str, problem: str | None) -> None:
    found = metric_problem(name, TOPOLOGY)
    assert (found is None) if problem is None else (found is not None and problem in found)


# Solutions --------------------------------------------------------------------------------------


def test_it_parses_solutions_into_diagram_commands() -> None:
    text = "traffic 150\ntraffic phone 30\n\n# comment\nkill web\nrestart web\nwait 6s\nwait 500ms\n"
    assert parse_solution(text, node_ids=["web", "phone"]) == [
        {"action": "traffic", "rate": 150.0},
        {"action": "traffic", "node": "phone", "rate": 30.0},
        {"action": "kill", "node": "web"},
        {"action": "restart", "node": "web"},
        {"action": "wait", "seconds": 6.0},
        {"action": "wait", "seconds": 0.5},
    ]


def test_lb_gauges_are_metrics() -> None:
    topology = {"nodes": [{"id": "lb", "kind": "lb"}, {"id": "web-1", "kind": "web"}], "edges": [["lb", "web-1"]]}
    assert metric_problem("lb.in_flight", topology) is None
    assert metric_problem("lb.slow_ms", topology) is None
    assert "unknown metric 'conns'" in (metric_problem("lb.conns", topology) or "")  # a map, not a number


def test_it_parses_slow_and_algorithm_actions() -> None:
    text = "slow web-3 200\nslow web-3 0\nalgorithm lb least_connections\nalgorithm lb ip_hash  # sticky\n"
    assert parse_solution(text, node_ids=["lb", "web-3"]) == [
        {"action": "slow", "node": "web-3", "ms": 200.0},
        {"action": "slow", "node": "web-3", "ms": 0.0},
        {"action": "algorithm", "node": "lb", "value": "least_connections"},
        {"action": "algorithm", "node": "lb", "value": "ip_hash"},
    ]


@pytest.mark.parametrize(
    ("text", "line", "token", "reason"),
    [
        ("slow web-3", 1, "slow", "missing ms"),
        ("slow web-3 99999", 1, "99999", "between 0 and"),
        ("slow web-3 200 300", 1, "300", "unexpected"),
        ("slow wbe 200", 1, "wbe", "unknown node 'wbe'"),
        ("algorithm lb", 1, "algorithm", "missing value"),
        ("algorithm lb fastest", 1, "fastest", "value must be one of"),
        ("algorithm lb round_robin random", 1, "random", "unexpected word"),
        ("algorithm lb 3", 1, "3", "unexpected"),
        ("kill web-3 200", 1, "200", "unexpected"),
        ("traffic lb least_connections", 1, "least_connections", "unexpected word"),
    ],
)
def test_it_reports_bad_slow_and_algorithm_lines(text: str, line: int, token: str, reason: str) -> None:
    with pytest.raises(SolutionSyntaxError) as info:
        parse_solution(text, node_ids=["lb", "web-3"])
    assert (info.value.line, info.value.token) == (line, token)
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("text", "line", "token", "reason"),
    [
        ("kill web\nexplode web", 2, "explode", "unknown action"),
        ("start", 1, "start", "unknown action"),
        ("kill wbe", 1, "wbe", "unknown node 'wbe'"),
        ("traffic", 1, "traffic", "missing rate"),
        ("traffic 9000", 1, "9000", "between 0 and"),
        ("wait 6", 1, "6", "duration"),
        ("wait", 1, "wait", "wait DURATION"),
        ("kill web web2", 1, "web2", "unexpected word"),
        ("traffic 5 ; kill web", 1, ";", "unexpected character"),
    ],
)
def test_it_reports_bad_solution_lines(text: str, line: int, token: str, reason: str) -> None:
    with pytest.raises(SolutionSyntaxError) as info:
        parse_solution(text, node_ids=["web", "phone"])
    assert (info.value.line, info.value.token) == (line, token)
    assert reason in info.value.reason


# Evaluation -------------------------------------------------------------------------------------


def test_it_needs_a_condition_to_hold_for_its_whole_duration() -> None:
    frames = [web(t / 4, 300 if t != 6 else 100) for t in range(0, 40)]  # one dip at t=1.5
    passed, ev = run("metric(web.p95_ms) > 200 for 3s", frames)
    assert passed == [4.75]  # the run restarted at 1.75 after the dip
    assert ev.verdict("s").passed


def test_it_breaks_a_run_across_a_gap_in_frames() -> None:
    frames = [web(0.0, 300), web(1.0, 300), web(10.0, 300), web(11.0, 300), web(13.0, 300)]
    passed, _ = run("metric(web.p95_ms) > 200 for 3s", frames)
    assert passed == [13.0]


def test_it_treats_a_null_metric_as_false() -> None:
    passed, ev = run("metric(web.p95_ms) < 100", [web(0.0, None), web(0.25, None)])
    assert passed == []
    assert "null" in ev.verdict("s").detail
    assert run("metric(web.p95_ms) != 100", [web(0.0, None)])[0] == []
    assert run("metric(ghost.rps) == 0", [web(0.0, None)])[0] == []


def test_it_keeps_a_passed_step_passed() -> None:
    ev = Evaluator({"s": parse_check("metric(totals.rps) > 10")})
    assert ev.feed(frame(0.0, totals={"rps": 20})) == ["s"]
    assert ev.feed(frame(0.25, totals={"rps": 0})) == []
    assert ev.verdict("s").passed and ev.verdict("s").hint is None


def test_it_reads_nodes_edges_totals_and_up_as_a_number() -> None:
    f = frame(0.0, totals={"rps": 5}, nodes={"web": {"up": False}}, edges={"browser>dns": {"rps": 0.4}})
    assert run("metric(web.up) == 0 and metric(browser>dns.rps) > 0 and metric(totals.rps) == 5", [f])[0] == [0.0]


def test_it_passes_within_a_window_after_an_event_only() -> None:
    check = "metric(browser.err_rps) > 0 within 5s after event(node_killed, node=dns)"
    errors = {"browser": {"err_rps": 2.0}}
    before = [frame(0.0, nodes=errors)]  # errors before the kill do not count
    kill = [
        frame(1.0, events=[{"t": 0.9, "kind": "node_killed", "node": "web"}]),  # another node
        frame(2.0, events=[{"t": 1.9, "kind": "node_killed", "node": "dns"}]),
    ]
    late = [frame(7.5, nodes=errors)]  # 5.6 s after the kill: too late
    passed, ev = run(check, before + kill + late)
    assert passed == []
    assert "have passed" in ev.verdict("s").detail
    passed, _ = run(check, before + kill + [frame(6.5, nodes=errors)])
    assert passed == [6.5]


def test_it_restarts_a_duration_at_the_anchor_event() -> None:
    check = "metric(totals.err_rps) > 1 for 2s within 10s after event(node_killed, node=web)"
    failing = {"err_rps": 40.0}
    frames = [frame(t / 2, totals=failing) for t in range(0, 8)]  # errors since t=0 (saturation)
    frames.append(frame(4.0, totals=failing, events=[{"t": 4.0, "kind": "node_killed", "node": "web"}]))
    frames += [frame(4 + t / 2, totals=failing) for t in range(1, 8)]
    passed, _ = run(check, frames)
    assert passed == [6.0]  # two seconds after the kill, not at once


def test_it_matches_an_event_within_a_window_of_another() -> None:
    check = "event(node_restarted, node=web) within 10s after event(node_killed, node=web)"
    restart_first = [
        frame(1.0, events=[{"t": 1.0, "kind": "node_restarted", "node": "web"}]),
        frame(2.0, events=[{"t": 2.0, "kind": "node_killed", "node": "web"}]),
        frame(3.0),
    ]
    assert run(check, restart_first)[0] == []
    then_restart = [*restart_first, frame(4.0, events=[{"t": 3.9, "kind": "node_restarted", "node": "web"}])]
    assert run(check, then_restart)[0] == [4.0]


def test_it_remembers_that_an_event_happened() -> None:
    check = "event(traffic_set, rate=200) and metric(totals.rps) > 150"
    frames = [
        frame(0.0, events=[{"t": 0.0, "kind": "traffic_set", "rate": 200.0, "node": None}], totals={"rps": 10}),
        frame(3.0, totals={"rps": 190}),
    ]
    assert run(check, frames)[0] == [3.0]


def test_it_gives_the_first_hint_that_holds_now() -> None:
    ev = Evaluator(
        {
            "s": parse_check(
                "metric(web.p95_ms) > 200 for 3s\n"
                'when metric(totals.rps) < 100 say "more traffic"\n'
                'when metric(web.p95_ms) <= 200 say "wait for the queue"\n'
            )
        }
    )
    assert ev.verdict("s").hint is None  # no frame yet
    ev.feed(frame(0.0, totals={"rps": 10}, nodes={"web": {"p95_ms": 50}}))
    assert ev.verdict("s").hint == 0
    ev.feed(frame(0.25, totals={"rps": 150}, nodes={"web": {"p95_ms": 50}}))
    assert ev.verdict("s").hint == 1
    ev.feed(frame(0.5, totals={"rps": 150}, nodes={"web": {"p95_ms": 300}}))
    verdict = ev.verdict("s")
    assert (verdict.passed, verdict.hint) == (False, None)
    assert verdict.detail == "web.p95_ms is 300 (> 200), held 0 s of 3 s"


def test_it_describes_what_it_measured() -> None:
    _, ev = run("metric(web.p95_ms) > 300 and metric(totals.rps) > 1", [web(0.0, 412.0)])
    assert ev.verdict("s").detail == "totals.rps is null (no requests in the window; needs > 1)"
    _, ev = run("metric(web.p95_ms) > 300", [web(0.0, 412.0)])
    assert ev.verdict("s").detail == "web.p95_ms is 412 (> 300)"


def test_it_ignores_frames_out_of_order_or_without_time() -> None:
    ev = Evaluator({"s": parse_check("metric(totals.rps) > 1 for 1s")})
    assert ev.feed(frame(5.0, totals={"rps": 2})) == []
    assert ev.feed(frame(1.0, totals={"rps": 2})) == []
    assert ev.feed({"type": "frame", "t": None}) == []
    assert ev.feed(frame(6.0, totals={"rps": 2})) == ["s"]


def test_it_passes_every_step_of_stage_1_on_a_recorded_lab() -> None:
    """Frames recorded from a real lab while lesson 01's solutions ran (see tests/engine/fixtures)."""
    assert RECORDED.exists(), f"{RECORDED} is committed: a missing recording is a failure, not a skip"
    from lessons.loader import lesson_parse

    lesson, errors = lesson_parse(Path(__file__).parents[2] / "lessons" / "content" / "01-single-server.md")
    assert not errors
    with gzip.open(RECORDED, "rt") as fh:
        frames = [json.loads(line) for line in fh]
    ev = Evaluator({s["id"]: parse_check(s["check"]) for s in lesson.steps})
    passed: list[str] = []
    for f in frames:
        passed += ev.feed(f)
    assert sorted(passed) == sorted(s["id"] for s in lesson.steps)
    # ... and in the order the solutions played them, except the DNS step, which passes at once.
    order = [p for p in passed if p != "dns"]
    assert order == [s["id"] for s in lesson.steps if s["id"] != "dns"]


def test_an_unknown_event_kind_is_a_syntax_error_naming_it():
    with pytest.raises(CheckSyntaxError) as info:
        parse_check("event(node_kiled, node=web)")
    assert info.value.token == "node_kiled" and "unknown event kind" in info.value.reason
    assert "node_killed" in info.value.reason  # the known ones are listed


def test_every_event_the_engine_emits_is_a_known_kind():
    import pathlib
    import re as _re

    from core.engine.telemetry import EVENT_KINDS

    root = pathlib.Path(__file__).resolve().parents[2] / "core" / "engine"
    source = "\n".join(p.read_text() for p in root.rglob("*.py") if p.parent.name != "checks")  # emitters only
    emitted = set(_re.findall(r'\.event\([^"]{0,60}"([a-z_]+)"', source))  # event(t, "kind", ...)
    emitted |= set(_re.findall(r'"(backend_down|backend_up)"', source))  # the lb picks one of two
    emitted |= {"stale_read"}  # Telemetry.stale_read builds it
    assert emitted and emitted <= EVENT_KINDS, emitted - EVENT_KINDS
    assert EVENT_KINDS - emitted == set(), EVENT_KINDS - emitted  # nothing listed that is never sent
