"""A student's progress stays attached to a step's id when an instructor edits the lesson."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from lessons.loader import lessons_check
from lessons.models import Lesson
from lessons.services import lessons_load
from visualizer import services

FRONT = """---
id: edited
stage: 1
title: A lesson that changes
summary: Its steps are rewritten between loads.
version: {version}
minutes: 5
objectives:
  - Keep progress across edits
topology:
  domain: www.scalelab.test
  nodes:
    - id: dns
      kind: dns
      params: {{ttl: 5}}
    - id: web
      kind: web
    - id: browser
      kind: client
      params: {{flavor: web, rate: 2}}
  edges:
    - [browser, dns]
    - [browser, web]
---
Intro.

"""

STEP_START = """## {title} {{#start}}

{text}

```check
metric(totals.rps) > 0 for 2s
when metric(totals.rps) == 0 say "{hint}"
```
"""

STEP_KILL = """## Kill the web server {#kill}

Click it and choose Kill.

```check
event(node_killed, node=web)
```
"""

STEP_NEW = """## Look around first {#look}

A step added before the others.
"""


def load(tmp_path: Path, body: str, version: int) -> Lesson:
    path = tmp_path / "edited.md"
    path.write_text(FRONT.format(version=version) + body, encoding="utf-8")
    data, errors = lessons_check([path])
    assert not errors, errors
    [(lesson, _)] = lessons_load(lessons=data)
    return lesson


@pytest.mark.django_db
def test_progress_survives_an_edit_that_keeps_the_step_id(tmp_path: Path, client: Client) -> None:
    v1 = load(tmp_path, STEP_START.format(title="Start the lab", text="Press Start.", hint="Add traffic")
              + STEP_KILL, version=1)
    client.get("/stage/edited/")  # the page hands the browser its session
    session_key = client.session.session_key
    lab = services.lab_start(session_key=session_key, lesson=v1)
    assert services.progress_record(session_key=session_key, lesson=v1, lab_id=str(lab.id), message={
        "type": "check", "step": "start", "passed": True, "lab": str(lab.id), "t": 1764300000.0, "seconds": 7.5})

    # The instructor rewrites the step's title, text and hint and adds a step before it.
    v2 = load(tmp_path, STEP_NEW + STEP_START.format(title="Switch the lab on", text="Press the green button.",
                                                      hint="Raise the traffic") + STEP_KILL, version=2)
    assert v2.pk == v1.pk and [s["id"] for s in v2.steps] == ["look", "start", "kill"]
    assert services.progress_for(session_key=session_key, lesson=v2)["start"]["seconds"] == 7.5
    assert services.lab_snapshot(lesson=v2, lab=None, session_key=session_key)["progress"].keys() == {"start"}

    page = client.get("/stage/edited/")
    assert page.context["steps_data"]["progress"]["start"]["seconds"] == 7.5
    by_id = {s["id"]: s for s in page.context["steps"]}
    assert by_id["start"]["title"] == "Switch the lab on" and by_id["start"]["hints"] == ["Raise the traffic"]
    assert not by_id["look"]["has_check"] and by_id["kill"]["has_check"]
    html = page.content.decode()
    assert 'data-testid="step-start"' in html and "Press the green button." in html
    assert 'id="steps-data"' in html

    # A step whose id goes away loses nothing else; its record simply has no step to show.
    v3 = load(tmp_path, STEP_KILL, version=3)
    assert services.progress_for(session_key=session_key, lesson=v3).keys() == {"start"}
