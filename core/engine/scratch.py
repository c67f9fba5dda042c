"""Where nodes keep files (a SQL database's file, a key-value store's append-only file).

A node's files live in a directory named for the worker process that made it
(``scalelab-node-<pid>-<node>-<random>`` in the temp dir). A lab deletes its own at its end
(``Node.discard``); a worker killed outright cannot, so the next node to start in any worker
deletes the directories whose worker is gone (``sweep_orphans``). Nothing outlives its worker
for longer than the next lab's start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "scalelab-node-"  # then the worker's pid: a directory whose worker is dead is an orphan


def make_dir(node_id: str) -> str:
    """A fresh directory for one node's files, owned by this process."""
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{node_id}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(root: str | None = None) -> list[str]:
    """Delete the directories of dead workers (a SIGKILLed worker cannot delete its own); their paths."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        pid = path.name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed
