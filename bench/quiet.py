"""Benches that start the full stack: its processes inherit our stdout and stderr, so while it runs
they go to a log file and the bench prints its table on a copy of the real stdout."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def stack_output(log_path: Path, *, verbose: bool = False) -> Iterator[TextIO]:
    """Send fds 1 and 2 to ``log_path`` (unless ``verbose``); yield the real stdout. If the body
    fails, the log's tail is written to that stdout first, since nobody would read the file."""
    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush()
    sys.stderr.flush()
    if not verbose:
        with open(log_path, "wb") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
    out = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    try:
        yield out
    except BaseException:
        if not verbose:
            out.write("failed; the stack's log:\n" + log_path.read_text(errors="replace")[-5000:])
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved_fd in enumerate(saved, start=1):
            os.dup2(saved_fd, fd)
            os.close(saved_fd)
        out.close()
