"""The body of a lesson file: the intro, then steps (`## Title {#id}`), each with its special blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lessons.loader.report import Report

STEP_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
LEVEL2 = re.compile(r"^##(?!#)[ \t]*(?P<text>.*?)[ \t#]*$")
STEP_ANCHOR = re.compile(r"^(?P<title>.*?)[ \t]*\{#(?P<id>[^}]*)\}$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]*)")
MAIN_BLOCKS = ("check", "solution", "predict", "instructor")
TRANSLATION_BLOCKS = ("hints", "predict", "instructor")


@dataclass
class Block:
    """A special block (```check and the like), taken out of the Markdown."""

    text: str
    line: int  # file line of the opening fence; the block's line n is file line `line + n`


@dataclass
class Step:
    """One `## Title {#id}` section: its Markdown and its special blocks by kind."""

    id: str
    title: str
    line: int
    md: list[str] = field(default_factory=list)
    blocks: dict[str, Block] = field(default_factory=dict)


def split_body(body: str, first_line: int, report: Report, *, blocks: tuple[str, ...]) -> tuple[list[str], list[Step]]:
    """Cut the body into the intro and steps (`## Title {#id}`), taking out the special blocks."""
    intro: list[str] = []
    steps: list[Step] = []
    lines = body.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line, lineno = lines[i], first_line + i
        fence = FENCE.match(line)
        if fence:
            close = re.compile(rf"^{re.escape(fence['fence'][0])}{{{len(fence['fence'])},}}[ \t]*$")
            end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j].rstrip("\r\n"))), None)
            info = fence["info"].lower()
            special = info in MAIN_BLOCKS + TRANSLATION_BLOCKS
            if end is None:
                if special:
                    report.at(lineno, info, f"the ```{info} block is never closed")
                end = len(lines) - 1
            if special:
                where = f"steps.{steps[-1].id}.{info}" if steps else info
                if info not in blocks:
                    reason = (
                        "a translation has no ```check or ```solution: they live in the main file"
                        if info in ("check", "solution")
                        else "a ```hints block belongs in a translation; "
                        "the main file's hints are the check's `when … say` lines"
                    )
                    report.at(lineno, where, reason)
                elif not steps:
                    report.at(
                        lineno, info, f"a ```{info} block must be inside a step (after a '## Title {{#id}}' heading)"
                    )
                elif info in steps[-1].blocks:
                    report.at(lineno, where, f"a step has at most one ```{info} block")
                else:
                    steps[-1].blocks[info] = Block("".join(lines[i + 1 : end]), lineno)
            else:
                (steps[-1].md if steps else intro).extend(lines[i : end + 1])
            i = end + 1
            continue
        heading = LEVEL2.match(line.rstrip("\r\n"))
        if heading:
            anchor = STEP_ANCHOR.match(heading["text"])
            if anchor:
                step_id, title = anchor["id"].strip(), anchor["title"].strip()
                if not STEP_ID.match(step_id):
                    report.at(lineno, "steps", f"a step id must be lower-case letters, digits and '-', got {step_id!r}")
                elif any(s.id == step_id for s in steps):
                    first = next(s for s in steps if s.id == step_id)
                    report.at(lineno, f"steps.{step_id}", f"duplicate step id {step_id!r} (also at line {first.line})")
                if not title:
                    report.at(lineno, f"steps.{step_id}", "a step needs a title before its {#id}")
                steps.append(Step(step_id, title, lineno))
                i += 1
                continue
            if steps:
                report.at(
                    lineno,
                    "steps",
                    "after the first step every level-2 heading starts a step: "
                    "give it an id, e.g. '## " + (heading["text"] or "Title") + " {#some-id}'",
                )
        (steps[-1].md if steps else intro).append(line)
        i += 1
    return intro, steps
