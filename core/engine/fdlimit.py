"""The open-files limit of a process that hosts labs.

Every connection on loopback costs this process two descriptors (both ends live here), and an
overloaded lab holds hundreds of connections at once: 520 req/s into three servers that carry 480
keeps about 650 open. A soft limit of 1024, a common default, is then reached, accept() and
connect() fail with EMFILE, and every request of every lab in the process fails. The soft limit is
a per-process setting anyone may raise up to the hard limit, so the engine raises it before a lab
starts rather than asking each operator to.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)
WANTED = 65_536  # enough for several busy labs; beyond it a process should be split anyway


def raise_open_files_limit(wanted: int = WANTED) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (never past the hard limit, never
    lower); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # e.g. a container's nr_open below the hard limit
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return soft
