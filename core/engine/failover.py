"""Sans-I/O failover policy: when a primary counts as dead, whom to promote, what was lost.

``core.engine.replication`` drives it with what the running replicas report; nothing here touches
a socket or a clock of its own, so the policy is tested with plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Detector:
    """A primary is lost once *every* running replica has lost it (a quorum of observers, so a
    primary cut off only from the web tier is not failed over), and dead ``after_s`` seconds
    later (0: never automatically, only by the promote command)."""

    after_s: float
    lost_since: float | None = None  # when the last replica to lose the primary lost it

    def observe(self, now: float, replicas_lost_since: Sequence[float | None]) -> tuple[bool, bool]:
        """Feed one look at the replicas (each one's ``primary_down_since``, None while it still
        reaches the primary): (the primary is newly lost, a failover is due)."""
        if not replicas_lost_since or any(t is None for t in replicas_lost_since):
            self.lost_since = None
            return False, False
        newly = self.lost_since is None
        if newly:
            self.lost_since = max(t for t in replicas_lost_since if t is not None)
        lost_since = self.lost_since
        assert lost_since is not None
        return newly, self.after_s > 0 and now - lost_since >= self.after_s

    def reset(self) -> None:
        self.lost_since = None


def choose_promotion(received: Sequence[tuple[str, int]], order: Sequence[str]) -> str:
    """The replica to promote: the one that received the most of the log; ties go to the first in
    the topology's ``order``. ``received``: (replica id, last log position received), not empty."""
    if not received:
        raise ValueError("no replica to promote")
    return max(received, key=lambda r: (r[1], -order.index(r[0])))[0]


def lost_writes(old_head: int, new_head: int) -> int:
    """Writes the old primary acknowledged past the new primary's head: nobody received them."""
    return max(0, old_head - new_head)
