"""The special blocks of a step: ```check, ```solution and ```predict in the main file, ```hints in a translation.

Each is parsed and its node and metric names checked against the topology; errors point at the
block's own line in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from core.engine.checks import (
    CheckSyntaxError,
    Ref,
    metric_problem,
    parse_check,
    parse_metric,
    parse_solution,
)
from core.engine.spec import format_path, next_node_id
from lessons.loader.body import Block, Step
from lessons.loader.markdown import render_markdown
from lessons.loader.report import Report
from lessons.loader.safe_yaml import AliasRefused, yaml_load

PREDICT_FIELDS = ("question", "measure", "unit")


def main_steps(
    raw: list[Step], topology: dict[str, Any] | None, report: Report, *, check_refs: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The runtime's step list and the English texts, validating checks, solutions and predictions."""
    node_ids = [n["id"] for n in topology["nodes"]] if topology else None
    kinds = {n["id"]: n["kind"] for n in topology["nodes"]} if topology else {}
    # The topology as the steps so far leave it: a node a solution adds may be named by its step's
    # check and prediction and by later steps (a copy of its ``like``, under the id the lab will give it).
    live = {**topology, "nodes": list(topology["nodes"])} if topology else None
    steps: list[dict[str, Any]] = []
    texts: dict[str, Any] = {}
    for step in raw:
        name = f"steps.{step.id}"
        check_src, hints, solution, predict = None, [], [], None
        block = step.blocks.get("solution")
        if block is not None:
            try:
                solution = parse_solution(block.text, node_ids=node_ids if check_refs else None)
            except CheckSyntaxError as exc:
                report.at(block.line + exc.line, f"{name}.solution", _syntax_reason(exc))
            else:
                if node_ids is not None:  # a node a step adds may be named by the steps after it
                    for action in solution:
                        if action["action"] == "add":
                            new_id = next_node_id(node_ids, action["like"])
                            node_ids.append(new_id)
                            like = next((n for n in live["nodes"] if n["id"] == action["like"]), None)  # type: ignore[index]
                            if like is not None:
                                live["nodes"].append({**like, "id": new_id})  # type: ignore[index]
                                kinds[new_id] = like["kind"]
                        elif action["action"] == "remove" and action.get("node") in node_ids:
                            node_ids.remove(action["node"])
                for n, action in enumerate(solution, 1):
                    if (
                        action["action"] == "traffic"
                        and action.get("node")
                        and kinds.get(action["node"]) not in (None, "client")
                    ):
                        report.at(
                            block.line + _nth_action_line(block.text, n),
                            f"{name}.solution",
                            f"traffic: {action['node']!r} is not a client; only clients send traffic",
                        )
        # After the solution: a step's check may name the node its own solution adds.
        block = step.blocks.get("check")
        if block is not None:
            check_src = block.text
            try:
                check = parse_check(block.text)
            except CheckSyntaxError as exc:
                report.at(block.line + exc.line, f"{name}.check", _syntax_reason(exc))
            else:
                hints = [h.text for h in check.hints]
                if check_refs:
                    _check_refs(check.refs, live, block, f"{name}.check", report)
        block = step.blocks.get("predict")
        if block is not None:
            predict = parse_predict(
                block, f"{name}.predict", report, topology=live if check_refs else None, main=True
            )
        steps.append(
            {
                "id": step.id,
                "title": step.title,
                "check": check_src,
                "hints": hints,
                "solution": solution,
                "predict": predict,
            }
        )
        texts[step.id] = step_texts(step, hints, predict)
    return steps, texts


def step_texts(step: Step, hints: list[str], predict: dict[str, Any] | None) -> dict[str, Any]:
    """What the page shows of a step in one language: its title, HTML, staff notes, hints, question."""
    instructor = step.blocks.get("instructor")
    return {
        "title": step.title,
        "html": render_markdown("".join(step.md)),
        "instructor_html": render_markdown(instructor.text) if instructor else "",
        "hints": hints,
        "predict": {k: predict[k] for k in ("question", "unit") if k in predict} if predict else None,
    }


def _nth_action_line(text: str, n: int) -> int:
    """Line (in the block) of the n-th non-blank, non-comment line."""
    count = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.strip().startswith("#"):
            count += 1
            if count == n:
                return lineno
    return 1


def _syntax_reason(exc: CheckSyntaxError) -> str:
    where = f"'{exc.token}'" if exc.token else "the end of the block"
    return f"{exc.reason} (at {where}, column {exc.col})"


def _check_refs(refs: Iterable[Ref], topology: dict[str, Any] | None, block: Block, name: str, report: Report) -> None:
    refs = list(refs)
    if refs and topology is None:
        report.at(block.line + refs[0].line, name, "a check needs the lesson's topology (this lesson has none)")
        return
    node_ids = {n["id"] for n in topology["nodes"]} if topology else set()
    metric_at = {(r.line, r.col) for r in refs if r.what == "metric"}
    for ref in refs:
        if ref.what == "metric":
            problem = metric_problem(ref.name, topology)
            if problem:
                report.at(block.line + ref.line, name, f"{problem} (at '{ref.name}', column {ref.col})")
        elif (ref.line, ref.col) not in metric_at and ref.name not in node_ids:
            report.at(block.line + ref.line, name, f"no node with id {ref.name!r} (at '{ref.name}', column {ref.col})")


def parse_predict(
    block: Block, name: str, report: Report, *, topology: dict[str, Any] | None, main: bool
) -> dict[str, Any] | None:
    """A ```predict block: YAML with `question`, optional `unit` and (main file only) `measure`."""
    try:
        _, data = yaml_load(block.text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}.{format_path(exc.path)}" if isinstance(exc, AliasRefused) and exc.path else name
        report.at(
            block.line + (mark.line + 1 if mark else 1), where, f"invalid YAML: {getattr(exc, 'problem', None) or exc}"
        )
        return None
    except RecursionError:
        report.at(block.line + 1, name, "invalid YAML: nested too deeply")
        return None
    allowed = PREDICT_FIELDS if main else ("question", "unit")
    if not isinstance(data, dict):
        report.at(
            block.line,
            name,
            "write `question: …` (and optionally `unit: …`" + (", `measure: metric(…)`" if main else "") + ")",
        )
        return None

    def line_of(key: str) -> int:
        return block.line + 1 + next((i for i, ln in enumerate(block.text.splitlines()) if ln.startswith(f"{key}:")), 0)

    ok = True
    for key in data:
        if key not in allowed:
            reason = (
                "the measure lives in the main file"
                if key == "measure"
                else f"unknown field (expected {', '.join(allowed)})"
            )
            report.at(line_of(str(key)), f"{name}.{key}", reason)
            ok = False
    for key in ("question", "unit", "measure"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            report.at(line_of(key), f"{name}.{key}", f"must be non-empty text, got {data[key]!r}")
            ok = False
    if "question" not in data:
        report.at(block.line, name, "missing `question: …`")
        ok = False
    if ok and main and "measure" in data:
        try:
            _, refs = parse_metric(data["measure"])
        except CheckSyntaxError as exc:
            report.at(line_of("measure"), f"{name}.measure", _syntax_reason(exc))
            ok = False
        else:
            if topology is not None:
                errors_before = len(report.errors)
                _check_refs(refs, topology, Block("", line_of("measure") - 1), f"{name}.measure", report)
                ok = len(report.errors) == errors_before
    if not ok:
        return None
    return {key: data[key].strip() for key in allowed if key in data}


def hint_lines(text: str) -> list[str]:
    """One hint per non-blank line; a leading '- ' or '1. ' list marker is dropped."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*]|\d+[.)])\s+", "", line).strip()
        if line:
            out.append(line)
    return out
