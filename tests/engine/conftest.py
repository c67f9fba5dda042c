"""Engine tests run the real nodes on real loopback sockets, each test on a network of its own."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from core.engine import keys

_blocks = itertools.count(random.Random(os.getpid()).randrange(40000))


@pytest.fixture
def network() -> str:
    return keys.network_for(next(_blocks))
