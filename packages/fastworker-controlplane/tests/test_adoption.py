"""A restarted control plane leaves what ran on subworkers to them: adopted when they come back, else settled."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastworker.controlplane.adoption import adoption_window
from fastworker.controlplane.journal import ACCEPT, RUN, JournalState, Recovered, recover
from fastworker.controlplane.records import CANCELLED, CONTROL_PLANE_LOST, FAILURE, PENDING, RUNNING, SUCCESS
from fastworker.protocol.payload import encode_arguments, encode_value
from fastworker.protocol.v1 import task_pb2, worker_pb2

BOUND = 5.0


def replayed(*running: tuple[str, str, int, int] | tuple[str, str, int, int, str]) -> tuple[Recovered, list[str]]:
    """A replay of tasks that were running at the stop.

    Each is (name, worker, attempt, retries its definition gave) and optionally the worker process
    it went to; without one, the record is as an older control plane wrote it.
    """
    state = JournalState()
    ids = []
    for name, worker, attempt, retries, *incarnation in running:
        spec = task_pb2.TaskSpec(task_id=str(uuid.uuid4()), name=name, arguments=encode_arguments((), {}))
        state.apply((ACCEPT, spec.task_id, spec.SerializeToString(), task_pb2.PRIORITY_NORMAL, 1.0, PENDING, 0.0))
        state.apply((RUN, spec.task_id, attempt, worker, 2.0, False, retries, *incarnation))
        ids.append(spec.task_id)
    return recover(state, now=10.0, retries_for=lambda name: None), ids


def success(task_id: str, attempt: int, value: Any) -> worker_pb2.TaskOutcome:
    return worker_pb2.TaskOutcome(
        task_id=task_id, attempt=attempt, state=task_pb2.TASK_STATE_SUCCESS, result=encode_value(value)
    )


async def test_a_worker_coming_back_adopts_what_it_still_runs_and_the_rest_of_its_orphans_is_settled(
    dispatch_rig: Any,
) -> None:
    # Given a replay that left 3 tasks running on w1 (no retries) and 1 on w2 (one retry)
    recovered, (kept, other_attempt, gone, on_w2) = replayed(
        ("job", "w1", 1, 0), ("job", "w1", 1, 0), ("job", "w1", 1, 0), ("job", "w2", 1, 1)
    )
    rig = dispatch_rig(recovered=recovered)
    find = rig.coordinator.find
    assert {find(task_id).state for task_id in (kept, other_attempt, gone, on_w2)} == {RUNNING}
    assert rig.coordinator.running_total == 4  # stats and /metrics count them running, as status shows

    # When w1 registers holding the first at its attempt, the second at another attempt, not the third
    reply = rig.register("w1", ["job"], held=((kept, 1), (other_attempt, 2))).envelope.register_reply

    # Then it adopts the first: its lease again, RUNNING there
    assert reply.accepted and not reply.resumed
    assert list(reply.adopted_task_ids) == [kept]
    assert kept in rig.fleet.get("w1").leases and find(kept).state == RUNNING
    # and the others of w1 are settled at once as lost: no retries, so FAILURE ControlPlaneLost
    for task_id in (other_attempt, gone):
        record = find(task_id)
        assert record.state == FAILURE and record.error.type == CONTROL_PLANE_LOST
        assert (
            "worker w1 registered again without listing it" in record.error.message
            and "no retries left" in record.error.message
        )
    # and w2's stays RUNNING, waiting for w2
    assert find(on_w2).state == RUNNING
    assert rig.coordinator.running_total == 2  # the adopted one (a lease now) and w2's

    # When w1 reports the adopted task's outcome, it is taken like any other
    rig.report("w1", success(kept, 1, 42))
    assert find(kept).state == SUCCESS and find(kept).attempts == 1


async def test_what_the_very_process_it_went_to_does_not_hold_never_reached_it_and_runs_with_that_attempt_uncounted(
    dispatch_rig: Any,
) -> None:
    # Given a replay that left on w1 two tasks dispatched to its process p1 (no retries), one to an
    # earlier process p0, and one journaled before workers' processes were recorded
    recovered, (running, unreached, earlier, unknown) = replayed(
        ("job", "w1", 1, 0, "p1"), ("job", "w1", 2, 0, "p1"), ("job", "w1", 1, 0, "p0"), ("job", "w1", 1, 0)
    )
    rig = dispatch_rig(recovered=recovered)
    find = rig.coordinator.find

    # When process p1 registers holding only the first: the second never reached it (the dispatch was
    # cut by the stop, or it waited unstarted in its prefetch queue, which it drops)
    reply = rig.register("w1", ["job"], incarnation="p1", held=((running, 1),)).envelope.register_reply

    # Then it adopts the first; the second is queued again, its cut attempt not counted: it runs,
    # although it has no retries, and fails with nothing
    assert list(reply.adopted_task_ids) == [running]
    assert (find(unreached).state, find(unreached).attempts, find(unreached).worker) == (PENDING, 1, "")
    assert rig.coordinator.counters.retried == 0
    pull = rig.pull("w1")
    async with asyncio.timeout(BOUND):
        while not pull.answered:
            await asyncio.sleep(0.005)
    assert [task.task_id for task in pull.tasks] == [unreached] and pull.tasks[0].attempt == 2
    # The others may have run in a process that is gone: settled as after a lost worker
    for task_id in (earlier, unknown):
        assert find(task_id).state == FAILURE and find(task_id).error.type == CONTROL_PLANE_LOST


async def test_orphans_nobody_adopts_within_the_window_run_again_if_they_have_retries_else_fail(
    dispatch_rig: Any,
) -> None:
    recovered, (retried, lost, cancelled) = replayed(("job", "w1", 1, 1), ("job", "w1", 1, 0), ("job", "w2", 1, 0))
    rig = dispatch_rig(recovered=recovered, orphan_window=0.05)
    find = rig.coordinator.find

    # A cancel of an orphan ends it at once (its worker stops it if it comes back: it is not adopted)
    assert rig.coordinator.cancel(cancelled) == (True, RUNNING)
    assert find(cancelled).state == CANCELLED

    async with asyncio.timeout(BOUND):
        while find(lost).state == RUNNING:
            await asyncio.sleep(0.01)
    assert find(retried).state == PENDING and find(retried).attempts == 1  # runs again: its retry
    assert find(lost).state == FAILURE and find(lost).error.type == CONTROL_PLANE_LOST
    assert "did not come back to adopt it" in find(lost).error.message
    assert rig.coordinator.counters.retried == 1

    # A worker registering afterwards adopts nothing: what it still ran was settled (it stops it)
    reply = rig.register("w1", ["job"], held=((retried, 1), (lost, 1))).envelope.register_reply
    assert reply.accepted and list(reply.adopted_task_ids) == []


def test_the_window_covers_a_reconnection_that_backed_off() -> None:
    assert adoption_window(5.0) == 10.0
    assert adoption_window(1.0) == 10.0
    assert adoption_window(30.0) == 60.0


async def test_outcomes_that_reached_the_control_plane_before_are_named_as_delivered_when_their_worker_comes_back(
    dispatch_rig: Any,
) -> None:
    # Given two tasks w1 finished and reported, whose acknowledgement it never got (a restart with a
    # journal crossed the reply), and one it holds that finished elsewhere, at another attempt
    rig = dispatch_rig()
    rig.register("w1", ["job"], incarnation="p1")
    records = [rig.submit("job", n) for n in range(2)]
    pull = rig.pull("w1")
    async with asyncio.timeout(BOUND):
        while not pull.answered:
            await asyncio.sleep(0.005)
    for spec in pull.tasks:
        rig.report("w1", success(spec.task_id, spec.attempt, "done"))
    assert [record.state for record in records] == [SUCCESS, SUCCESS]
    rig.dispatcher.lose(rig.fleet.get("w1"), "the test says so")

    # When the worker's next process registers holding them (and one at an attempt this side does not know)
    held = ((records[0].task_id, 1), (records[1].task_id, 1), (records[1].task_id + "-x", 1))
    reply = rig.register("w1", ["job"], incarnation="p2", held=held).envelope.register_reply

    # Then the two are named as settled here: the worker's copies were delivered, not lost
    assert reply.accepted and not reply.resumed
    assert sorted(reply.settled_task_ids) == sorted(record.task_id for record in records)
    # and another worker, or another attempt, is not this worker's delivered outcome
    other = rig.register("w2", ["job"], incarnation="q1", held=((records[0].task_id, 1),)).envelope.register_reply
    assert list(other.settled_task_ids) == []
    later = rig.register("w3", ["job"], incarnation="r1", held=((records[0].task_id, 2),)).envelope.register_reply
    assert list(later.settled_task_ids) == []
