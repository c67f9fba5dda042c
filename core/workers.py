"""The lab workers of one machine: LAB_PROCESSES Celery workers, each hosting LAB_SLOTS labs.

`make run` starts this one process (Procfile `worker:`), and it starts the workers: one per core by
default, since each worker's labs share one event loop (visualizer.hosting) and so one core. Each
is ``celery worker -P threads -c LAB_SLOTS``: a task thread per lab slot, blocking while its lab
runs on the loop, so a worker takes no more labs than it has slots.

A worker that dies (the OOM killer, a crash) is started again, as a prefork master would replace
its pool process; its labs are lost and their pages say so (visualizer.services.lab_watch). A
signal to this process (honcho's SIGTERM, Ctrl-C, a test's SIGQUIT) goes to every worker, which
stops its labs within seconds; a worker still there after STOP_S is killed. The workers die with
this process even when it is SIGKILLed (PR_SET_PDEATHSIG), and their redis-server children with them.

Run: python -m core.workers [more `celery worker` options, e.g. --loglevel=info]
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from core.engine.nodes.redisproc import die_with_parent

log = logging.getLogger("core.workers")
STOP_S = 20.0  # a worker's shutdown waits up to visualizer.hosting.SHUTDOWN_S for its labs
BACKOFF_S = (1.0, 30.0)  # before starting again a worker that died young: first, longest
YOUNG_S = 10.0  # a worker that dies sooner than this is started again after a growing delay
POLL_S = 0.2


def worker_argv(index: int, slots: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "core", "worker", "-P", "threads", "-c", str(slots),
            "-n", f"labs{index}@%h", "--without-gossip", "--without-mingle", *extra]


class Workers:
    def __init__(self, processes: int, slots: int, extra: list[str]) -> None:
        self.argvs = [worker_argv(i + 1, slots, extra) for i in range(processes)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * processes
        self.started = [0.0] * processes
        self.due = [0.0] * processes  # when a dead worker is started again
        self.backoff = [BACKOFF_S[0]] * processes
        self.stopping: int | None = None  # the signal being passed on

    def start(self, i: int) -> None:
        # A group of its own: a signal reaches it once, from here (honcho signals this group).
        self.procs[i] = subprocess.Popen(self.argvs[i], preexec_fn=die_with_parent(), process_group=0)
        self.started[i] = time.monotonic()

    def check(self) -> None:
        """Start again the workers that died (after their backoff)."""
        now = time.monotonic()
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                lived = now - self.started[i]
                if lived >= YOUNG_S:
                    self.backoff[i] = BACKOFF_S[0]
                delay = self.backoff[i] if lived < YOUNG_S else 0.0
                self.backoff[i] = min(BACKOFF_S[1], self.backoff[i] * 2) if delay else self.backoff[i]
                self.due[i] = now + delay
                log.warning("lab worker %d (pid %d) exited with %s after %.0f s; starting it again in %g s",
                            i + 1, proc.pid, proc.returncode, lived, delay)
                self.procs[i] = None
            if self.procs[i] is None and now >= self.due[i]:
                self.start(i)

    def stop(self, sig: int) -> int:
        """Pass ``sig`` on to every worker; wait (bounded) for them all; the exit status."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
        deadline = time.monotonic() + STOP_S
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("lab worker pid %d still running %g s after %s: killing it", proc.pid, STOP_S,
                            signal.Signals(sig).name)
                proc.kill()
                proc.wait()
        return 0


def main() -> int:
    logging.basicConfig(format="%(name)s: %(message)s")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    from django.conf import settings  # validates LAB_PROCESSES and LAB_SLOTS before any worker starts

    workers = Workers(settings.LAB_PROCESSES, settings.LAB_SLOTS, sys.argv[1:])

    def on_signal(sig: int, _frame: object) -> None:
        if workers.stopping is None:
            workers.stopping = sig

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_signal)
    print(f"lab workers: {settings.LAB_PROCESSES} process(es) x {settings.LAB_SLOTS} labs", flush=True)
    while workers.stopping is None:
        workers.check()
        time.sleep(POLL_S)
    return workers.stop(workers.stopping)


if __name__ == "__main__":
    sys.exit(main())
