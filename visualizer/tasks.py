"""Celery tasks: thin adapters that pass ids, never objects."""

from __future__ import annotations

import threading

from celery.signals import worker_init, worker_shutting_down

from core.celery import app
from visualizer import hosting, services


@app.task(name="labs.run", ignore_result=True)
def run_lab(lab_id: str) -> None:
    """Host one lab on this worker process's lab loop until it stops (a stop command or idleness)."""
    services.lab_run(lab_id=lab_id)


@worker_init.connect
def _labs_ready(**_: object) -> None:
    # Import the engine and start the lab loop before taking tasks, so that the first lab of a
    # room that arrives at once does not pay for them (~0.3 s measured by bench/room_bench).
    import core.engine.runner  # noqa: F401

    hosting.loop()


@worker_shutting_down.connect
def _labs_stop(**_: object) -> None:
    # Warm or cold, the labs stop now (each within seconds) rather than when their student stops
    # them: Celery would wait for the task threads. From a thread: this runs in a signal handler.
    threading.Thread(target=hosting.shutdown, name="labs-shutdown").start()
