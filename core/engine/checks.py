"""The lesson check language: parse (never eval) and evaluate against a lab's frames (sans-I/O).

API CONTRACT (implementation in progress; keep these names and shapes):

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
"""
