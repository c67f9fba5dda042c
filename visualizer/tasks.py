"""Celery tasks: thin adapters that pass ids, never objects."""

from __future__ import annotations

from core.celery import app
from visualizer import services


@app.task(name="labs.run", ignore_result=True)
def run_lab(lab_id: str) -> None:
    """Host one lab in this worker process until it stops (a stop command or idleness)."""
    services.lab_run(lab_id=lab_id)
