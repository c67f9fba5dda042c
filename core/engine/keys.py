"""Redis names shared by the engine (publisher) and the web process (subscriber)."""

from collections.abc import Callable, Collection

PREFIX = "scalelab"
STATUS_TTL_S = 15  # refreshed every second by a live lab: a dead worker's lab expires quickly
HISTORY_POINTS = 300
TOPOLOGY_TTL_S = 3600  # refreshed by every status of a lab whose topology changed
# A live lab's heartbeat: the runner sets it every HEARTBEAT_S with this TTL, so a lab whose worker
# was killed has none within seconds (the web side then records it lost). The worker claiming a lab
# sets the first one with STARTING_GRACE_S, to cover the engine's start-up before its first beat.
HEARTBEAT_S = 1.0
HEARTBEAT_TTL_S = 5
STARTING_GRACE_S = 10


def out_channel(lab_id: str) -> str:
    """Pub/sub channel: engine -> browsers (frames, status, errors)."""
    return f"{PREFIX}:lab:{lab_id}:out"


def in_channel(lab_id: str) -> str:
    """Pub/sub channel: web process -> engine (commands)."""
    return f"{PREFIX}:lab:{lab_id}:in"


def status_key(lab_id: str) -> str:
    return f"{PREFIX}:lab:{lab_id}:status"


def frame_key(lab_id: str) -> str:
    return f"{PREFIX}:lab:{lab_id}:frame"


def topology_key(lab_id: str) -> str:
    """The last ``topology`` message: the live topology once a node was added or removed."""
    return f"{PREFIX}:lab:{lab_id}:topology"


def heartbeat_key(lab_id: str) -> str:
    """Exists while the lab's engine runs (value: the pid hosting it); see HEARTBEAT_TTL_S."""
    return f"{PREFIX}:lab:{lab_id}:heartbeat"


def history_key(lab_id: str) -> str:
    return f"{PREFIX}:lab:{lab_id}:history"


NETBLOCK_COUNTER = f"{PREFIX}:netblock"
NETBLOCKS = (254 - 20 + 1) * 256  # distinct 127.A.B lab networks, A in 20..254


def network_allocate(next_block: Callable[[], int], held: Collection[str]) -> str:
    """The first network the counter (``next_block``) gives that is not in ``held``.

    ``len(held) + 1`` draws always find one: each draw is a different block until the counter
    wraps, which takes NETBLOCKS draws.
    """
    for _ in range(min(len(held), NETBLOCKS - 1) + 1):
        network = network_for(next_block())
        if network not in held:
            return network
    raise RuntimeError("every lab network is held by a live lab")


def network_for(block: int) -> str:
    """Map a counter value to a lab network '127.A.B' (A in 20..254), wrapping around."""
    block %= NETBLOCKS
    return f"127.{20 + block // 256}.{block % 256}"
