"""The lesson check language: parse (never eval) and evaluate against a lab's frames (sans-I/O).

One module a job: ``syntax`` (tokenizer, tree, parser), ``catalog`` (the metrics a check may read,
from the kinds' declarations), ``solution`` (the ```solution language), ``evaluator``.

API CONTRACT (keep these names and shapes):

    parse_check(text: str) -> Check
        Parses one ```check block. Raises CheckSyntaxError(line, col, token, reason) where line is
        1-based within the block, so the lesson loader can add the block's first line.

    Check.node_refs() -> set[str]      node ids it mentions (loader checks they exist)
    Check.metric_refs() -> set[str]    metric names it mentions, e.g. {"web.p95_ms", "totals.rps"}

    Evaluator(checks: dict[str, Check])          step id -> its check
        .feed(frame: dict) -> list[str]           a frame exactly as the runner publishes it
                                                  ({"t", "totals", "nodes", "edges", "events"});
                                                  returns step ids that newly passed (sticky)
        .verdict(step: str) -> Verdict            the current verdict of one step
    Verdict(passed: bool, hint: int | None, detail: str)
        hint is the index of the first hint whose condition holds now (texts live in the lesson,
        per language); detail says in words what was measured, e.g. "web.p95_ms is 412 (> 300)".

Metrics: metric(NODE.KEY) reads frame["nodes"][NODE][KEY]; metric(totals.KEY) reads
frame["totals"][KEY]; metric(A>B.KEY) reads frame["edges"]["A>B"][KEY]. Events come from
frame["events"] ({"t", "kind", ...fields}).

The language (docs/authoring.md has the author's version):

    block     := condition hint*
    hint      := 'when' condition 'say' STRING
    condition := and ('or' and)*
    and       := timed ('and' timed)*
    timed     := atom ['for' DURATION] ['within' DURATION 'after' event]
    atom      := metric OP NUMBER | event | '(' condition ')'
    metric    := 'metric' '(' NAME ')'            NAME: node.key, totals.key or a>b.key
    event     := 'event' '(' KIND (',' FIELD '=' VALUE)* ')'
    DURATION  := NUMBER ('ms' | 's' | 'm')

Parentheses nest at most ``syntax.MAX_NESTING`` (20) deep: deeper is a CheckSyntaxError at the first
'(' too many, so neither the parser nor the evaluator can run out of Python's stack.

Semantics, frame by frame (frames arrive in time order, ``t`` in seconds):
- a comparison with a null metric (no traffic in the window, unknown node) is false;
- ``event(...)`` is true from the first frame carrying a matching event on ("it has happened");
- ``X for D`` is true once X has held in every frame spanning at least D seconds (a gap of more
  than MAX_GAP_S between frames breaks the run);
- ``X within D after E`` is true in a frame at most D seconds after the latest E when X holds;
  each E starts X afresh (its ``for`` runs and remembered events reset), so X must happen after E.
"""

from __future__ import annotations

from core.engine.checks.catalog import (
    EDGE_KEYS,
    KIND_GAUGES,
    NODE_KEYS,
    REPLICATION_KEYS,
    TABLES,
    TOTALS_KEYS,
    metric_problem,
)
from core.engine.checks.evaluator import Evaluator, Verdict, read_metric
from core.engine.checks.solution import SolutionSyntaxError, parse_solution
from core.engine.checks.syntax import Check, CheckSyntaxError, Ref, parse_check, parse_metric, tokenize

__all__ = [
    "EDGE_KEYS",
    "KIND_GAUGES",
    "NODE_KEYS",
    "REPLICATION_KEYS",
    "TABLES",
    "TOTALS_KEYS",
    "Check",
    "CheckSyntaxError",
    "Evaluator",
    "Ref",
    "SolutionSyntaxError",
    "Verdict",
    "metric_problem",
    "parse_check",
    "parse_metric",
    "parse_solution",
    "read_metric",
    "tokenize",
]
