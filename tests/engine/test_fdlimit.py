"""A process that hosts labs raises its own open-files limit: an overloaded lab holds hundreds of
loopback connections, two descriptors each, and a soft limit of 1024 would fail every request."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

SCRIPT = textwrap.dedent(
    """
    import asyncio, resource, sys
    from core.engine.lab import Lab
    from tests.engine.topologies import stage1

    async def main():
        lab = Lab(stage1(), network=sys.argv[1])
        await lab.start()
        await lab.stop()

    asyncio.run(main())
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    """
)


def _low_limit() -> None:  # in the child, before exec: what a stingy default gives a worker
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_starting_a_lab_raises_a_low_soft_limit_up_to_what_the_hard_limit_allows(network: str) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = subprocess.run([sys.executable, "-c", SCRIPT, network], cwd=ROOT, preexec_fn=_low_limit,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    soft = int(out.stdout.split()[-1])
    expected = 65_536 if hard == resource.RLIM_INFINITY else min(65_536, hard)
    assert soft == max(256, expected)
