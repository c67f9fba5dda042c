"""A workshop's faults and its end, on real labs in a real worker: a broadcast reaches every
participant's lab and each applies it; each lab's recovery is read from its own history (its
errors, or for a slow fault its p95); ending the workshop, by the instructor or by its end time,
stops every lab, its hot pool's too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.engine import keys
from tests.stack import Stack, run_stack, wait_for
from tests.visualizer.test_pool import lab_id as row_id
from tests.visualizer.test_pool import rows
from tests.visualizer.test_worker import FIXTURE, lab_start_running, on_network

pytestmark = pytest.mark.slow
SESSIONS = ("session-ana", "session-ben")


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with run_stack(tmp_path, redis_url, lessons=[FIXTURE], slots=len(SESSIONS) + 1) as stack:
        yield stack


def workshop_call(stack: Stack, code: str) -> object:
    """Run ``code`` with ``w`` bound to the workshop and ``ws`` to visualizer.workshops; it prints JSON."""
    out = stack.shell("import json\nfrom visualizer import workshops as ws\nfrom visualizer.models import Workshop\n"
                      "w = Workshop.objects.get()\n" + code)
    return json.loads(out.splitlines()[-1])


def room_open(stack: Stack) -> None:
    """An open stage-1 workshop whose participants are SESSIONS."""
    stack.shell(
        "from datetime import timedelta\nfrom django.utils import timezone\n"
        "from lessons.models import Lesson\nfrom visualizer import workshops as ws\n"
        "w = ws.workshop_create(title='t', lessons=[Lesson.objects.get(slug='fixture-single')], cap=5,\n"
        "                       ends_at=timezone.now() + timedelta(hours=1))\n"
        "ws.workshop_open(w)\n"
        + "".join(f"ws.participant_join(code=w.code, nickname='{s[8:]}', session_key='{s}')\n" for s in SESSIONS))


def node_state(stack: Stack, lab_id: str, node: str) -> str | None:
    return stack.status(lab_id).get("nodes", {}).get(node, {}).get("state")


def test_a_broadcast_reaches_every_lab_each_recovers_and_the_end_stops_them(stack: Stack) -> None:
    room_open(stack)
    labs = [lab_start_running(stack, session) for session in SESSIONS]
    outsider, _ = lab_start_running(stack, "not-in-the-room")
    for lab_id, _ in [*labs, (outsider, None)]:
        wait_for(lambda lab_id=lab_id: node_state(stack, lab_id, "web") == "up", 15, "web to be up")

    delivered = workshop_call(stack, "b = ws.broadcast_fault(w, {'action': 'kill', 'node': 'web'}, label='kill web')\n"
                                     "print(json.dumps(b.delivered))")
    assert delivered == {lab_id: "sent" for lab_id, _ in labs}
    for lab_id, _ in labs:  # each lab applied it to its own topology
        wait_for(lambda lab_id=lab_id: node_state(stack, lab_id, "web") == "down", 10, "web to be killed")
    assert node_state(stack, outsider, "web") == "up"  # a lab outside the room is left alone

    # Each lab's requests fail now; the grid says so, from the lab's own history.
    def recovery() -> dict:
        return workshop_call(stack, "print(json.dumps(ws.broadcast_recovery(w.broadcasts.first())))")

    wait_for(lambda: {r["state"] for r in recovery().values()} == {"down"}, 15, "both labs to show errors")
    workshop_call(stack, "print(json.dumps(ws.broadcast_fault(w, {'action': 'restart', 'node': 'web'}).delivered))")
    for lab_id, _ in labs:
        wait_for(lambda lab_id=lab_id: node_state(stack, lab_id, "web") == "up", 10, "web to be back")
    # The kill's recovery: errors end once the window has no failed request left in it.
    wait_for(lambda: {r["state"] for r in workshop_call(
        stack, "print(json.dumps(ws.broadcast_recovery(w.broadcasts.last())))").values()} == {"recovered"},
        30, "both labs to recover from the kill")
    seconds = [r["seconds"] for r in workshop_call(
        stack, "print(json.dumps(ws.broadcast_recovery(w.broadcasts.last())))").values()]
    assert all(s > 0 for s in seconds), seconds

    stopped = workshop_call(stack, "print(json.dumps(ws.workshop_end(w)))")
    assert stopped == len(SESSIONS)
    for lab_id, network in labs:
        wait_for(lambda lab_id=lab_id: stack.lab_state(lab_id) == "stopped", 15, "the lab row to say stopped")
        wait_for(lambda network=network: not on_network(network), 15, f"every socket on {network} to close")
    assert workshop_call(stack, "print(json.dumps(w.state))") == "ended"
    assert stack.lab_state(outsider) == "running"


REGIONS = Path(__file__).parent / "fixtures" / "regions.md"


def test_a_region_outage_broadcast_takes_down_that_centre_in_every_lab_and_recover_brings_it_back(
        tmp_path: Path, redis_url: str) -> None:
    with run_stack(tmp_path, redis_url, lessons=[REGIONS], slots=len(SESSIONS)) as stack:
        stack.shell(
            "from datetime import timedelta\nfrom django.utils import timezone\n"
            "from lessons.models import Lesson\nfrom visualizer import workshops as ws\n"
            "w = ws.workshop_create(title='t', lessons=[Lesson.objects.get(slug='fixture-regions')], cap=5,\n"
            "                       ends_at=timezone.now() + timedelta(hours=1))\n"
            "ws.workshop_open(w)\n"
            + "".join(f"ws.participant_join(code=w.code, nickname='{s[8:]}', session_key='{s}')\n" for s in SESSIONS))
        labs = [lab_start_running(stack, session, slug="fixture-regions")[0] for session in SESSIONS]
        for lab_id in labs:
            for node in ("web-eu", "web-us"):
                wait_for(lambda lab_id=lab_id, node=node: node_state(stack, lab_id, node) == "up", 15, f"{node} up")

        delivered = workshop_call(stack, "b = ws.broadcast_fault(w, {'action': 'outage', 'region': 'eu'})\n"
                                         "print(json.dumps([b.command, b.delivered]))")
        assert delivered == [{"action": "outage", "region": "eu", "mode": "down"}, {lab: "sent" for lab in labs}]
        for lab_id in labs:  # each lab lost its own eu centre, and only that
            wait_for(lambda lab_id=lab_id: node_state(stack, lab_id, "web-eu") == "down", 10, "web-eu to go down")
            assert node_state(stack, lab_id, "web-us") == "up"

        workshop_call(stack, "b = ws.broadcast_fault(w, {'action': 'recover', 'region': 'eu'})\n"
                             "print(json.dumps(b.delivered))")
        for lab_id in labs:
            wait_for(lambda lab_id=lab_id: node_state(stack, lab_id, "web-eu") == "up", 15, "web-eu to be back")


def test_a_slow_broadcast_is_read_from_each_labs_latency_and_its_undo_brings_it_back(stack: Stack) -> None:
    room_open(stack)
    labs = [lab_start_running(stack, session)[0] for session in SESSIONS]
    # A few seconds of history before the fault: each lab's baseline p95.
    wait_for(lambda: all(stack.redis.llen(keys.history_key(lab_id)) >= 5 for lab_id in labs), 20, "history")

    def recovery() -> dict:
        return workshop_call(stack, "print(json.dumps(ws.broadcast_recovery(w.broadcasts.first())))")

    baselines = workshop_call(stack, "b = ws.broadcast_fault(w, {'action': 'slow', 'node': 'web', 'ms': 300})\n"
                                     "print(json.dumps(b.baselines))")
    assert set(baselines) == set(labs) and all(0 < ms < 300 for ms in baselines.values()), baselines
    # A slowed web server answers every request, 300 ms later: no errors, a p95 over 300 ms.
    wait_for(lambda: {r["state"] for r in recovery().values()} == {"slow"}, 15, "both labs to be slow")
    assert all(r["p95_ms"] > 300 for r in recovery().values())

    undo = workshop_call(stack, "b = ws.broadcast_fault(w, {'action': 'slow', 'node': 'web', 'ms': 0})\n"
                                "print(json.dumps(b.baselines))")
    assert undo == baselines  # measured against the p95 from before the fault, not the slow one
    wait_for(lambda: {r["state"] for r in recovery().values()} == {"recovered"}, 20, "both labs to be back")
    assert all(0 < r["seconds"] < 10 for r in recovery().values())


def pool_running(stack: Stack, pool: str) -> list[str]:
    """The workshop's unclaimed pool labs whose engine says running."""
    ids = [row_id(r) for r in rows(stack, f"pool = '{pool}' and state in ('queued', 'starting', 'running')")]
    return [i for i in ids if stack.status(i).get("state") == "running"]


@pytest.mark.parametrize("how", ["by the instructor", "past its end time"])
def test_ending_a_workshop_stops_its_hot_pools_labs_and_the_claimed_one(
        tmp_path: Path, redis_url: str, how: str) -> None:
    with run_stack(tmp_path, redis_url, lessons=[FIXTURE], slots=3) as stack:
        stack.shell(
            "from datetime import timedelta\nfrom django.utils import timezone\n"
            "from lessons.models import Lesson\nfrom visualizer import workshops as ws\n"
            "w = ws.workshop_create(title='t', lessons=[Lesson.objects.get(slug='fixture-single')], cap=5,\n"
            "                       pool_size=2, ends_at=timezone.now() + timedelta(hours=1))\n"
            "ws.workshop_open(w)\n"
            "ws.participant_join(code=w.code, nickname='ana', session_key='session-ana')\n")
        pool = workshop_call(stack, "print(json.dumps(ws.pool_key(w)))")
        started = set(wait_for(lambda: len(ids := pool_running(stack, pool)) == 2 and ids, 60, "the pool to run"))

        # Ana's start is served from the pool, which tops itself up again.
        claimed = stack.shell(
            "from lessons.models import Lesson\nfrom visualizer import services, workshops as ws\n"
            "lesson = Lesson.objects.get(slug='fixture-single')\n"
            "in_room, pool = ws.start_terms('session-ana', lesson)\n"
            "print(services.lab_start(session_key='session-ana', lesson=lesson, pool=pool).id)").splitlines()[-1]
        assert claimed in started
        waiting = set(wait_for(lambda: len(ids := pool_running(stack, pool)) == 2 and ids, 60, "the pool to refill"))
        labs = waiting | {claimed}
        networks = [r["network"] for r in rows(stack) if row_id(r) in labs]
        assert all(stack.redis.exists(keys.heartbeat_key(i)) for i in labs)

        if how == "by the instructor":
            assert workshop_call(stack, "print(json.dumps(ws.workshop_end(w)))") == 3
        else:  # nobody pressed End: Ana's next poll finds the room past its time
            assert workshop_call(
                stack, "from datetime import timedelta\nfrom django.utils import timezone\n"
                       "Workshop.objects.filter(pk=w.pk).update(ends_at=timezone.now() - timedelta(seconds=1))\n"
                       "print(json.dumps(ws.participant_for_session('session-ana') is None))") is True
        assert workshop_call(stack, "print(json.dumps(w.state))") == "ended"
        for i in labs:  # each engine heard its stop and went away, sockets and all
            wait_for(lambda i=i: stack.lab_state(i) == "stopped", 15, "the lab row to say stopped")
            wait_for(lambda i=i: not stack.redis.exists(keys.heartbeat_key(i)), 15, "the heartbeat to go")
        for network in networks:
            wait_for(lambda network=network: not on_network(network), 15, f"every socket on {network} to close")
        # The pool is drained for good: its size forgotten, nothing queued to replace the labs.
        assert not stack.redis.exists(f"{keys.PREFIX}:pool:{pool}:fill")
        assert not rows(stack, "state in ('queued', 'starting', 'running')")


def test_a_workshop_nobody_touches_after_its_end_still_stops_its_hot_pool(tmp_path: Path, redis_url: str) -> None:
    ends_in_s = 20  # time enough for the pool's labs to start on a busy machine
    with run_stack(tmp_path, redis_url, lessons=[FIXTURE], slots=3) as stack:
        stack.shell(
            "from datetime import timedelta\nfrom django.utils import timezone\n"
            "from lessons.models import Lesson\nfrom visualizer import workshops as ws\n"
            "w = ws.workshop_create(title='t', lessons=[Lesson.objects.get(slug='fixture-single')], cap=5,\n"
            f"                       pool_size=2, ends_at=timezone.now() + timedelta(seconds={ends_in_s}))\n"
            "ws.workshop_open(w)\n")
        pool = workshop_call(stack, "print(json.dumps(ws.pool_key(w)))")
        labs = set(wait_for(lambda: len(ids := pool_running(stack, pool)) == 2 and ids, ends_in_s - 5,
                            "the pool to run"))
        networks = [r["network"] for r in rows(stack) if row_id(r) in labs]

        # Nobody joins, polls, opens the control room or presses End: each pool lab stops by itself.
        for i in labs:
            wait_for(lambda i=i: stack.lab_state(i) == "stopped", ends_in_s + 15, "the pool lab to stop at the end")
            assert stack.status(i)["reason"] == "unclaimed"
            wait_for(lambda i=i: not stack.redis.exists(keys.heartbeat_key(i)), 15, "the heartbeat to go")
        for network in networks:
            wait_for(lambda network=network: not on_network(network), 15, f"every socket on {network} to close")
        assert not rows(stack, "state in ('queued', 'starting', 'running')")  # and nothing refilled it
        # The workshop's row was never touched: it still says open until something looks at it.
        assert workshop_call(stack, "print(json.dumps(w.state))") == "open"
