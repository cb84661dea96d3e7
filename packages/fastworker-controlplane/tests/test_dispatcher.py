"""The dispatcher hands waiting tasks to subworkers' work requests and takes them back when a worker is lost.

Each test drives a real Coordinator (no local slots, so only subworkers run tasks), Fleet,
Dispatcher and WorkerApi on the test's event loop, through fake dispatch-channel requests (see the
``dispatch_rig`` fixture). The coordinator's clock is moved by hand; loop timers (pull holds, the
heartbeat reaper) run in real time and are kept well under a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from fastworker.controlplane import api as api_module
from fastworker.controlplane.api import ClientApi
from fastworker.controlplane.coordinator import RequestRefused
from fastworker.controlplane.dispatcher import WORKER_LOST
from fastworker.controlplane.records import CANCELLED, FAILURE, PENDING, RUNNING, SUCCESS
from fastworker.protocol.framing import decode_frame, encode_frame, new_envelope
from fastworker.protocol.payload import decode_value
from fastworker.protocol.v1 import error_pb2, task_pb2, worker_pb2

BOUND = 5.0


async def settle(turns: int = 5) -> None:
    """Let callbacks scheduled with call_soon (dispatch rounds) run."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], bound: float = BOUND) -> None:
    """Yield to the loop until predicate() holds (bounded)."""
    async with asyncio.timeout(bound):
        while not predicate():
            await asyncio.sleep(0.002)


def lose_worker(rig: Any, worker_id: str, how: str) -> None:
    """Make the control plane lose a worker directly, by its connection dropping, or (start) its heartbeat timeout."""
    if how == "lose":
        rig.dispatcher.lose(rig.fleet.get(worker_id), "test says so")
    elif how == "pipe_closed":  # and not back within the heartbeat timeout
        rig.dispatcher.pipe_closed(rig.pipes[worker_id])
        rig.clock.advance(rig.dispatcher.heartbeat_timeout + 1)
    elif how == "heartbeat_timeout":
        rig.clock.advance(rig.dispatcher.heartbeat_timeout + 1)
    else:
        raise AssertionError(how)


LOSSES = ["lose", "pipe_closed", "heartbeat_timeout"]
#: Loss through the reaper needs it to tick often: heartbeat_interval is its period.
FAST_REAPER = {"heartbeat_interval": 0.05, "heartbeat_timeout": 15.0}


async def wait_lost(rig: Any, worker_id: str) -> None:
    await until(lambda: worker_id not in rig.fleet)


# ------------------------------------------------------------------------------------------ membership


async def test_a_task_name_is_unknown_until_a_worker_registers_it_and_then_it_can_be_submitted(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()

    # Before any worker registered "resize", submitting it is refused as an unknown task
    with pytest.raises(RequestRefused) as refused:
        rig.submit("resize")
    assert refused.value.code == error_pb2.ERROR_CODE_UNKNOWN_TASK

    # Once a worker registers it, it is accepted and waits for that worker
    assert rig.register("w1", ["resize", "thumbnail"]).envelope.register_reply.accepted
    assert rig.coordinator.remote_task_names == {"resize", "thumbnail"}
    record = rig.submit("resize", 640)
    assert record.state == PENDING
    assert rig.coordinator.find(record.task_id) is record


async def test_a_task_name_is_unknown_again_once_its_last_worker_is_lost(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["resize"])
    rig.register("w2", ["resize", "crop"])

    rig.dispatcher.lose(rig.fleet.get("w2"), "gone")
    assert rig.coordinator.remote_task_names == {"resize"}
    with pytest.raises(RequestRefused) as refused:
        rig.submit("crop")
    assert refused.value.code == error_pb2.ERROR_CODE_UNKNOWN_TASK
    rig.submit("resize")  # still run by w1


# --------------------------------------------------------------------------------------------- pulls


async def test_a_pull_with_no_work_is_answered_with_an_empty_dispatch_after_its_hold(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    loop = asyncio.get_running_loop()

    started = loop.time()
    pull = rig.pull("w1", hold=0.2)
    await settle()
    assert not pull.answered, "a pull with nothing to do must be held"

    await until(lambda: pull.answered)
    elapsed = loop.time() - started
    assert pull.tasks == []
    assert 0.15 <= elapsed < 1.0
    assert rig.fleet.get("w1").pull is None


async def test_a_pull_is_held_no_longer_than_the_heartbeat_interval(dispatch_rig: Any) -> None:
    rig = dispatch_rig(heartbeat_interval=0.1, heartbeat_timeout=15.0)
    rig.register("w1", ["job"])
    loop = asyncio.get_running_loop()

    started = loop.time()
    pull = rig.pull("w1", hold=30.0)
    await until(lambda: pull.answered)
    assert pull.tasks == []
    assert loop.time() - started < 1.0


async def test_a_pull_while_tasks_wait_is_answered_at_once_with_no_more_than_the_free_capacity(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=2)
    records = [rig.submit("job", n) for n in range(5)]

    pull = rig.pull("w1", hold=5.0)
    await settle()

    # Answered within a loop turn (not after the hold), with exactly the worker's capacity, oldest first
    sent = pull.tasks
    assert [spec.task_id for spec in sent] == [r.task_id for r in records[:2]]
    assert [spec.attempt for spec in sent] == [1, 1]
    worker = rig.fleet.get("w1")
    assert set(worker.leases) == {r.task_id for r in records[:2]}
    assert worker.free == 0
    for record in records[:2]:
        assert record.state == RUNNING
        assert record.worker == "w1"
        assert record.attempts == 1
        assert record.started_at == rig.clock.now
    assert [r.state for r in records[2:]] == [PENDING] * 3
    assert len(rig.coordinator.queue) == 3
    assert rig.coordinator.running_total == 2


async def test_a_worker_at_capacity_gets_nothing_more_until_its_results_free_slots(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=2)
    records = [rig.submit("job", n) for n in range(5)]
    first = rig.pull("w1")
    await settle()
    first_specs = first.tasks
    assert len(first_specs) == 2

    # A pull at full capacity gets nothing, even though three tasks wait
    full = rig.pull("w1", hold=0.1)
    await settle()
    assert not full.answered
    await until(lambda: full.answered)
    assert full.tasks == []
    assert len(rig.coordinator.queue) == 3

    # One result frees one slot: the next pull gets exactly one more
    assert rig.report("w1", rig.success(first_specs[0], "done")).envelope.WhichOneof("body") == "ack"
    second = rig.pull("w1")
    await settle()
    assert [s.task_id for s in second.tasks] == [records[2].task_id]

    # A held pull is answered as soon as results free its slots
    held = rig.pull("w1")
    await settle()
    assert not held.answered
    rig.report("w1", rig.success(first_specs[1], "done"))
    await settle()
    assert [s.task_id for s in held.tasks] == [records[3].task_id]
    assert len(rig.coordinator.queue) == 1


async def test_tasks_are_dispatched_in_strict_priority_order_and_fifo_within_a_level(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=1)
    submitted = [
        ("low-1", task_pb2.PRIORITY_LOW),
        ("normal-1", task_pb2.PRIORITY_NORMAL),
        ("critical-1", task_pb2.PRIORITY_CRITICAL),
        ("high-1", task_pb2.PRIORITY_HIGH),
        ("low-2", task_pb2.PRIORITY_LOW),
        ("critical-2", task_pb2.PRIORITY_CRITICAL),
        ("normal-2", task_pb2.PRIORITY_NORMAL),
    ]
    for task_id, priority in submitted:
        rig.submit("job", task_id=task_id, priority=priority)

    order: list[str] = []
    for _ in submitted:
        pull = rig.pull("w1")
        await settle()
        (spec,) = pull.tasks
        order.append(spec.task_id)
        rig.report("w1", rig.success(spec, None))
    assert order == ["critical-1", "critical-2", "high-1", "normal-1", "normal-2", "low-1", "low-2"]


async def test_a_task_submitted_while_a_pull_is_held_is_dispatched_to_it_at_once(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    pull = rig.pull("w1", hold=5.0, correlation_id=77)
    await settle()
    assert not pull.answered

    record = rig.submit("job", 1)
    await settle()
    assert [s.task_id for s in pull.tasks] == [record.task_id]
    assert pull.envelope.correlation_id == 77
    assert record.state == RUNNING


async def test_tasks_go_to_the_least_loaded_workers(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=4)
    rig.register("w2", ["job"], capacity=4)
    pulls = {"w1": rig.pull("w1"), "w2": rig.pull("w2")}
    await settle()

    for n in range(4):
        rig.submit("job", n)
    await settle()

    assert len(pulls["w1"].tasks) == 2
    assert len(pulls["w2"].tasks) == 2
    assert len(rig.fleet.get("w1").leases) == 2
    assert len(rig.fleet.get("w2").leases) == 2


async def test_a_task_goes_only_to_workers_that_registered_its_name(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("resizer", ["resize"])
    rig.register("mailer", ["email"])
    resize = [rig.submit("resize", n) for n in range(2)]

    # The mailer asks for work while only resize tasks wait: it gets none of them
    mailer_pull = rig.pull("mailer", hold=0.1)
    await settle()
    assert not mailer_pull.answered
    await until(lambda: mailer_pull.answered)
    assert mailer_pull.tasks == []
    assert all(r.state == PENDING for r in resize)

    # Both pull while both kinds wait: each gets only its own
    email = rig.submit("email", "hi")
    resizer_pull, mailer_pull = rig.pull("resizer"), rig.pull("mailer")
    await settle()
    assert {s.task_id for s in resizer_pull.tasks} == {r.task_id for r in resize}
    assert [s.task_id for s in mailer_pull.tasks] == [email.task_id]
    assert {r.worker for r in resize} == {"resizer"}
    assert email.worker == "mailer"


# ------------------------------------------------------------------------------------------- results


async def test_a_success_result_finishes_the_task_with_its_result_and_counts_it(
    harness: Any, dispatch_rig: Any
) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["add"])
    record = rig.submit("add", 2, 3)
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks

    outcome = rig.success(spec, 5)
    outcome.started_at = rig.clock.now - 0.5
    rig.clock.advance(1.0)
    ack = rig.report("w1", outcome, correlation_id=31).envelope
    assert ack.WhichOneof("body") == "ack"
    assert ack.correlation_id == 31

    done = await harness.final(rig.coordinator, record.task_id)
    assert done is record
    assert record.state == SUCCESS
    assert record.result is not None and decode_value(record.result) == 5
    assert record.error is None
    assert record.worker == "w1"
    assert record.attempts == 1
    assert record.started_at == outcome.started_at
    assert record.finished_at == rig.clock.now
    worker = rig.fleet.get("w1")
    assert (worker.processed, worker.failed) == (1, 0)
    assert worker.leases == {}
    assert rig.coordinator.counters.succeeded == 1
    assert record.task_id not in rig.coordinator.active
    assert rig.coordinator.find(record.task_id) is record  # in the result cache


async def test_a_failure_result_finishes_the_task_with_its_error_and_counts_it(harness: Any, dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["div"])
    record = rig.submit("div", 1, 0)
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks

    rig.report("w1", rig.failure(spec, "ZeroDivisionError", "division by zero"))

    done = await harness.final(rig.coordinator, record.task_id)
    assert done.state == FAILURE
    assert done.error is not None
    assert (done.error.type, done.error.message) == ("ZeroDivisionError", "division by zero")
    assert done.result is None
    worker = rig.fleet.get("w1")
    assert (worker.processed, worker.failed) == (0, 1)
    assert worker.leases == {}
    assert rig.coordinator.counters.failed == 1


@pytest.mark.parametrize(
    ("reported", "final"),
    [(task_pb2.TASK_STATE_CANCELLED, CANCELLED), (task_pb2.TASK_STATE_PENDING, FAILURE)],
    ids=["cancelled-stays-cancelled", "a-non-final-state-becomes-failure"],
)
async def test_a_result_in_another_state_ends_the_task_cancelled_or_failed(
    harness: Any, dispatch_rig: Any, reported: int, final: int
) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks

    outcome = worker_pb2.TaskOutcome(task_id=spec.task_id, attempt=spec.attempt, state=reported)  # type: ignore[arg-type]
    outcome.error.type = "TaskCancelled"
    rig.report("w1", outcome)

    done = await harness.final(rig.coordinator, record.task_id)
    assert done.state == final
    assert rig.fleet.get("w1").failed == 1


@pytest.mark.parametrize("stale", ["unknown-task", "wrong-attempt", "other-worker"])
async def test_a_stale_result_is_ignored_and_the_task_keeps_running(dispatch_rig: Any, stale: str) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    rig.register("w2", ["job"])
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks

    sender = "w1"
    outcome = rig.success(spec, "bogus")
    if stale == "unknown-task":
        outcome.task_id = "no-such-task"
    elif stale == "wrong-attempt":
        outcome.attempt = spec.attempt + 1
    else:
        sender = "w2"
    ack = rig.report(sender, outcome).envelope
    await settle()

    assert ack.WhichOneof("body") == "ack"  # acknowledged, but changes nothing
    assert record.state == RUNNING
    assert record.result is None
    assert record.worker == "w1"
    assert rig.fleet.get("w1").leases == {record.task_id: record}
    for worker_id in ("w1", "w2"):
        assert (rig.fleet.get(worker_id).processed, rig.fleet.get(worker_id).failed) == (0, 0)
    assert rig.coordinator.counters.succeeded == 0
    assert rig.coordinator.active[record.task_id] is record

    # The genuine result still lands afterwards
    rig.report("w1", rig.success(spec, "real"))
    assert record.state == SUCCESS
    assert record.result is not None and decode_value(record.result) == "real"


async def test_a_result_reported_twice_is_counted_once(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks

    rig.report("w1", rig.success(spec, 1))
    rig.report("w1", rig.success(spec, 2))  # a resend

    assert rig.fleet.get("w1").processed == 1
    assert rig.coordinator.counters.succeeded == 1
    record = rig.coordinator.find(spec.task_id)
    assert record is not None and decode_value(record.result) == 1


# ------------------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("how", LOSSES)
async def test_a_lost_workers_tasks_with_retries_left_are_requeued_and_redispatched_to_another_worker(
    harness: Any, dispatch_rig: Any, how: str
) -> None:
    rig = dispatch_rig(**FAST_REAPER)
    rig.register("w1", {"job": 1}, capacity=2)  # the registered default: one retry
    rig.register("w2", {"job": 1}, capacity=2)
    records = [rig.submit("job", n) for n in range(2)]  # retries -1, as the client sends
    pull = rig.pull("w1")
    await settle()
    first_specs = pull.tasks
    assert len(first_specs) == 2
    assert all(r.worker == "w1" for r in records)

    lose_worker(rig, "w1", how)
    if how in ("heartbeat_timeout", "pipe_closed"):
        rig.heartbeat("w2")  # w2 keeps beating; only w1 went silent
    await wait_lost(rig, "w1")

    # Back in the queue, attempts kept, no worker, not counted as started
    for record in records:
        assert record.state == PENDING
        assert record.attempts == 1
        assert record.worker == ""
        assert record.started_at == 0.0
    assert rig.coordinator.counters.workers_lost == 1
    assert rig.coordinator.counters.failed == 0

    # The other worker gets them next, as attempt 2
    again = rig.pull("w2")
    await settle()
    second_specs = again.tasks
    assert {s.task_id for s in second_specs} == {r.task_id for r in records}
    assert [s.attempt for s in second_specs] == [2, 2]
    assert all(r.worker == "w2" and r.attempts == 2 and r.state == RUNNING for r in records)

    for spec in second_specs:
        rig.report("w2", rig.success(spec, "ok"))
    for record in records:
        assert (await harness.final(rig.coordinator, record.task_id)).state == SUCCESS


@pytest.mark.parametrize("how", LOSSES)
async def test_a_task_whose_cancel_was_acknowledged_ends_cancelled_when_its_worker_is_lost(
    harness: Any, dispatch_rig: Any, how: str
) -> None:
    # The cancel said cancelled=True, the worker went silent before it stopped the task, and the
    # loss re-queued it (retries left: it ran again and succeeded) or failed it with WorkerLost.
    rig = dispatch_rig(**FAST_REAPER)
    rig.register("w1", {"job": 2}, capacity=1)
    rig.register("w2", {"job": 2}, capacity=1)
    record = rig.submit("job", 1)
    pull = rig.pull("w1")
    await settle()
    assert [spec.task_id for spec in pull.tasks] == [record.task_id] and record.state == RUNNING
    assert rig.coordinator.cancel(record.task_id) == (True, RUNNING)  # the stop order waits for w1

    lose_worker(rig, "w1", how)
    if how in ("heartbeat_timeout", "pipe_closed"):
        rig.heartbeat("w2")
    await wait_lost(rig, "w1")

    final = await harness.final(rig.coordinator, record.task_id)
    assert final.state == CANCELLED and final.error is not None and final.error.type == "TaskCancelled"
    assert "before it confirmed the stop" in final.error.message
    assert rig.coordinator.counters.cancelled == 1 and rig.coordinator.counters.retried == 0
    again = rig.pull("w2", hold=0.05)
    await until(lambda: again.answered)
    assert again.tasks == []  # never handed out again


async def test_a_cancel_its_worker_did_not_confirm_within_the_grace_ends_cancelled_whatever_the_run_returns(
    dispatch_rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a task running on a worker that does not answer its stop order (stalled, slow link)
    monkeypatch.setattr(api_module, "CANCEL_GRACE", 0.1)
    rig = dispatch_rig()
    rig.register("w1", {"job": 2}, capacity=1)
    record = rig.submit("job", 1)
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks

    # When a client cancels it and the grace passes with no word from the worker
    replies: list[bytes] = []
    envelope = new_envelope(7)
    envelope.cancel.task_id = record.task_id
    ClientApi(rig.coordinator).handle(encode_frame(envelope), replies.append)
    await until(lambda: bool(replies))

    # Then the reply says cancelled, and the task reads CANCELLED from then on
    answer = decode_frame(replies[0]).cancel_reply
    assert (answer.cancelled, answer.previous_state) == (True, RUNNING)
    assert (record.state, record.error.type) == (CANCELLED, "TaskCancelled")
    # and it cannot be retried while the worker still holds the run
    with pytest.raises(RequestRefused, match="had not confirmed the stop"):
        rig.coordinator.retry(record.task_id)

    # When the worker comes back and reports the run as finished after all
    rig.report("w1", rig.success(spec, "done anyway"))
    await settle()

    # Then it stays CANCELLED (what it returned dropped), its slot is free, and it was not a late outcome
    assert (record.state, record.result) == (CANCELLED, None)
    assert record.task_id not in rig.fleet.get("w1").leases
    assert rig.coordinator.counters.late_outcomes == 0 and rig.coordinator.counters.succeeded == 0
    assert rig.coordinator.retry(record.task_id) is record


@pytest.mark.parametrize("how", LOSSES)
async def test_a_lost_workers_tasks_without_retries_left_fail_with_worker_lost(
    harness: Any, dispatch_rig: Any, how: str
) -> None:
    rig = dispatch_rig(**FAST_REAPER)
    rig.register("w1", {"job": 0})
    rig.register("w2", {"job": 0})
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    assert len(pull.tasks) == 1

    lose_worker(rig, "w1", how)
    if how in ("heartbeat_timeout", "pipe_closed"):
        rig.heartbeat("w2")
    await wait_lost(rig, "w1")

    done = await harness.final(rig.coordinator, record.task_id)
    assert done.state == FAILURE
    assert done.error is not None and done.error.type == WORKER_LOST
    assert "w1" in done.error.message
    assert done.attempts == 1
    assert rig.coordinator.counters.failed == 1
    assert len(rig.coordinator.queue) == 0


@pytest.mark.parametrize("how", LOSSES)
async def test_a_lost_worker_with_explicit_task_retries_exhausted_fails_them_with_worker_lost(
    harness: Any, dispatch_rig: Any, how: str
) -> None:
    rig = dispatch_rig(**FAST_REAPER)
    rig.register("w1", {"job": 5})
    rig.register("w2", {"job": 5})
    record = rig.submit("job", retries=1)  # the submitter's own limit wins over the registered default
    pull = rig.pull("w1")
    await settle()
    assert [s.task_id for s in pull.tasks] == [record.task_id]
    lose_worker(rig, "w1", how)
    if how in ("heartbeat_timeout", "pipe_closed"):
        rig.heartbeat("w2")
    await wait_lost(rig, "w1")
    assert (record.state, record.attempts) == (PENDING, 1)

    pull = rig.pull("w2")
    await settle()
    assert [(s.task_id, s.attempt) for s in pull.tasks] == [(record.task_id, 2)]
    rig.dispatcher.lose(rig.fleet.get("w2"), "test")

    done = await harness.final(rig.coordinator, record.task_id)
    assert done.state == FAILURE
    assert done.error is not None and done.error.type == WORKER_LOST
    assert done.attempts == 2


async def test_a_late_result_from_a_lost_worker_is_ignored(harness: Any, dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", {"job": 1})
    rig.register("w2", {"job": 1})
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    (old_spec,) = pull.tasks
    old_worker = rig.fleet.get("w1")
    rig.dispatcher.lose(old_worker, "test")
    again = rig.pull("w2")
    await settle()
    (new_spec,) = again.tasks

    # The lost worker's result arrives after all: on the wire it is not registered any more...
    late = rig.report("w1", rig.success(old_spec, "late")).envelope
    assert late.WhichOneof("body") == "error"
    assert late.error.code == error_pb2.ERROR_CODE_NOT_REGISTERED
    # ...and even handed to the dispatcher against the old registration, it is ignored
    rig.dispatcher.results(old_worker, [rig.success(old_spec, "late")])
    await settle()
    assert record.state == RUNNING
    assert record.worker == "w2"
    assert record.result is None
    assert old_worker.processed == 0

    rig.report("w2", rig.success(new_spec, "fresh"))
    done = await harness.final(rig.coordinator, record.task_id)
    assert decode_value(done.result) == "fresh"
    assert rig.coordinator.counters.succeeded == 1


async def test_a_lost_worker_loses_its_held_pull(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    pull = rig.pull("w1")
    await settle()

    rig.dispatcher.pipe_closed(rig.pipes["w1"])
    assert pull.dropped
    assert pull.replies == []


async def test_a_dropped_connection_loses_only_the_workers_on_it_once_they_did_not_come_back(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig(**FAST_REAPER)
    rig.register("a1", ["job"], pipe_id=7)
    rig.register("a2", ["job"], pipe_id=7)
    rig.register("b1", ["job"], pipe_id=8)

    rig.dispatcher.pipe_closed(7)
    rig.clock.advance(rig.dispatcher.heartbeat_timeout - 1)
    await asyncio.sleep(0.2)  # (reaper rounds)
    assert rig.coordinator.counters.workers_lost == 0  # a cut connection is no proof the process died
    rig.heartbeat("b1")
    rig.clock.advance(2)  # their heartbeat timeout passed: those on it did not come back
    await until(lambda: rig.coordinator.counters.workers_lost == 2)
    assert [w.worker_id for w in rig.fleet] == ["b1"]


async def test_a_worker_that_keeps_sending_heartbeats_is_not_reaped_and_one_that_stops_is(dispatch_rig: Any) -> None:
    rig = dispatch_rig(**FAST_REAPER)
    rig.register("w1", ["job"])

    for _ in range(3):  # 30 s of coordinator time, a beat every 10 s (timeout 15 s)
        rig.clock.advance(10.0)
        rig.heartbeat("w1")
        await asyncio.sleep(0.12)  # a couple of reaper ticks
        assert "w1" in rig.fleet

    rig.clock.advance(14.0)
    await asyncio.sleep(0.12)
    assert "w1" in rig.fleet
    rig.clock.advance(2.0)
    await wait_lost(rig, "w1")
    assert rig.coordinator.counters.workers_lost == 1


async def test_a_task_whose_only_worker_is_lost_keeps_the_retries_that_worker_registered(
    harness: Any, dispatch_rig: Any
) -> None:
    # A worker registers "job" with 2 retries; a client submits it (retries -1: the registered default)
    rig = dispatch_rig(**FAST_REAPER)
    rig.register("w1", {"job": 2})
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    assert len(pull.tasks) == 1

    # The worker goes silent: its task has 2 retries left, so it must wait for the next worker
    lose_worker(rig, "w1", "heartbeat_timeout")
    await wait_lost(rig, "w1")
    assert record.state == PENDING, (
        f"task failed on its first attempt despite 2 registered retries: {task_pb2.TaskState.Name(record.state)}"  # type: ignore[arg-type]
        f" {record.error}"
    )

    # The worker comes back and runs it again
    rig.register("w1", {"job": 2})
    again = rig.pull("w1")
    await settle()
    assert [s.attempt for s in again.tasks] == [2]


# --------------------------------------------------------------------------------- re-registration


async def test_reregistering_a_worker_id_drops_the_old_registrations_leases_like_a_loss(
    harness: Any, dispatch_rig: Any
) -> None:
    rig = dispatch_rig()
    rig.register("w1", {"job": 0}, capacity=2)
    retried = rig.submit("job", 1, retries=1)
    doomed = rig.submit("job", 2, retries=0)
    old_pull = rig.pull("w1")
    await settle()
    old_specs = {s.task_id: s for s in old_pull.tasks}
    assert set(old_specs) == {retried.task_id, doomed.task_id}
    held = rig.pull("w1")  # the old registration's next request, held
    await settle()
    old_worker = rig.fleet.get("w1")

    # The worker restarts and registers again under the same id
    assert rig.register("w1", {"job": 0}, capacity=2).envelope.register_reply.accepted
    new_worker = rig.fleet.get("w1")
    assert new_worker is not old_worker
    assert rig.coordinator.counters.workers_lost == 1
    assert held.dropped and held.replies == []
    assert old_worker.leases == {}

    # The task with a retry left is re-queued, the other fails with WorkerLost
    assert retried.state == PENDING and retried.attempts == 1
    failed = await harness.final(rig.coordinator, doomed.task_id)
    assert failed.state == FAILURE and failed.error is not None and failed.error.type == WORKER_LOST

    # The new registration runs the re-queued task as attempt 2; the old attempt's result is ignored
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks
    assert (spec.task_id, spec.attempt) == (retried.task_id, 2)
    rig.report("w1", rig.success(old_specs[retried.task_id], "stale"))
    assert retried.state == RUNNING
    rig.report("w1", rig.success(spec, "fresh"))
    done = await harness.final(rig.coordinator, retried.task_id)
    assert decode_value(done.result) == "fresh"
    assert new_worker.processed == 1


async def test_reregistering_a_worker_keeps_the_registered_retries_of_its_running_tasks(dispatch_rig: Any) -> None:
    # The worker registered "job" with 3 retries and the client left retries to that default (-1)
    rig = dispatch_rig()
    rig.register("w1", {"job": 3})
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    assert len(pull.tasks) == 1

    # The worker restarts: the task it was running has retries left and must be re-queued, not failed
    rig.register("w1", {"job": 3})
    assert record.state == PENDING, (
        f"a restarted worker's task failed despite 3 registered retries: {task_pb2.TaskState.Name(record.state)}"  # type: ignore[arg-type]
        f" {record.error}"
    )
    assert record.attempts == 1


# ----------------------------------------------------------------------------------------- deregister


async def test_deregister_requeues_the_returned_tasks_without_counting_the_attempt(
    harness: Any, dispatch_rig: Any
) -> None:
    rig = dispatch_rig()
    rig.register("w1", {"job": 0}, capacity=2)
    rig.register("w2", {"job": 0}, capacity=2)
    records = [rig.submit("job", n) for n in range(2)]
    pull = rig.pull("w1")
    await settle()
    assert len(pull.tasks) == 2
    held = rig.pull("w1")
    await settle()

    ack = rig.deregister("w1", [r.task_id for r in records], correlation_id=55).envelope
    assert ack.WhichOneof("body") == "ack" and ack.correlation_id == 55
    assert "w1" not in rig.fleet
    assert held.dropped
    for record in records:
        assert record.state == PENDING
        assert record.attempts == 0
        assert record.worker == ""
        assert record.started_at == 0.0
    assert rig.coordinator.counters.retried == 0  # none of them ran: none was retried
    assert rig.coordinator.remote_task_names == {"job"}  # w2 still runs it

    # No retries were used up: with none registered, the next worker still gets them, as attempt 1
    again = rig.pull("w2")
    await settle()
    assert [s.attempt for s in again.tasks] == [1, 1]
    for spec in again.tasks:
        rig.report("w2", rig.success(spec, None))
    for record in records:
        assert (await harness.final(rig.coordinator, record.task_id)).state == SUCCESS


async def test_deregister_treats_tasks_not_handed_back_like_a_loss(harness: Any, dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", {"job": 0}, capacity=3)
    rig.register("w2", {"job": 0}, capacity=3)
    returned = rig.submit("job", "returned")
    kept_retry = rig.submit("job", "kept, retry left", retries=1)
    kept_doomed = rig.submit("job", "kept, no retry", retries=0)
    pull = rig.pull("w1")
    await settle()
    assert len(pull.tasks) == 3

    rig.deregister("w1", [returned.task_id, "not-one-of-its-tasks"])

    assert (returned.state, returned.attempts) == (PENDING, 0)
    # Still running when the worker left: re-queued with the attempt counted, like after a loss...
    assert (kept_retry.state, kept_retry.attempts, kept_retry.worker) == (PENDING, 1, "")
    assert rig.coordinator.counters.retried == 1  # that one, and not the returned one
    # ...or failed with WorkerLost when no retry is left
    failed = await harness.final(rig.coordinator, kept_doomed.task_id)
    assert failed.error is not None and failed.error.type == WORKER_LOST


async def test_a_task_a_departing_worker_did_not_hand_back_is_requeued_exactly_as_after_a_loss(
    dispatch_rig: Any,
) -> None:
    # One task of each worker is taken back while running: w1 is lost, w2 deregisters without returning it
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    rig.register("w2", ["job"])
    after_loss = rig.submit("job", retries=1)
    after_deregister = rig.submit("job", retries=1)
    pulls = [rig.pull("w1"), rig.pull("w2")]
    await settle()
    assert {r.worker for r in (after_loss, after_deregister)} == {"w1", "w2"}
    by_worker = {r.worker: r for r in (after_loss, after_deregister)}
    assert all(len(p.tasks) == 1 for p in pulls)

    rig.dispatcher.lose(rig.fleet.get("w1"), "test")
    rig.deregister("w2", [])

    def shape(record: Any) -> tuple[int, int, str, float]:
        return record.state, record.attempts, record.worker, record.started_at

    assert shape(by_worker["w1"]) == (PENDING, 1, "", 0.0)
    assert shape(by_worker["w2"]) == shape(by_worker["w1"]), "deregister keeps the old attempt's started_at"


# ------------------------------------------------------------------------------------------- shutdown


async def test_closing_the_dispatcher_drops_every_held_pull(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    rig.register("w2", ["job"])
    pulls = [rig.pull("w1"), rig.pull("w2")]
    await settle()

    rig.dispatcher.close()
    assert all(p.dropped and p.replies == [] for p in pulls)
    assert all(w.pull is None and w.pull_timer is None for w in rig.fleet)


async def test_a_dispatch_the_worker_never_received_is_requeued_without_counting_the_attempt(
    dispatch_rig: Any,
) -> None:
    # Given two tasks dispatched to a worker whose reply was lost (it gave up waiting and asks again)
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=2)
    records = [rig.submit("job", n) for n in range(2)]
    lost_reply = rig.pull("w1")
    await settle()
    assert len(lost_reply.tasks) == 2

    # When its next work request lists only what it really holds (nothing)
    again = rig.pull("w1", held=[])
    await settle()

    # Then the tasks come back to it as the same first attempt, never counted twice
    assert [spec.task_id for spec in again.tasks] == [r.task_id for r in records]
    assert [spec.attempt for spec in again.tasks] == [1, 1]
    assert all(r.attempts == 1 and r.state == RUNNING for r in records)


async def test_a_task_whose_result_is_still_on_its_way_is_not_taken_back(dispatch_rig: Any) -> None:
    # Given a worker that finished a task and sent the result separately (not yet arrived)
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=2)
    record = rig.submit("job", 1)
    first = rig.pull("w1")
    await settle()
    assert [spec.task_id for spec in first.tasks] == [record.task_id]

    # When its next work request lists the task as held (finished, result not acknowledged)
    rig.pull("w1", held=[record.task_id], hold=0.05)
    await settle()

    # Then the lease stays: the task is not re-queued (so it cannot run twice)
    assert record.task_id in rig.fleet.get("w1").leases
    assert record.state == RUNNING and record.attempts == 1


# ------------------------------------------------------------------------------------------ run limits


async def test_resolved_limits_travel_only_to_a_worker_whose_own_definition_differs(dispatch_rig: Any) -> None:
    """The dispatch carries the control plane's resolved retries and time limits exactly when the worker's own
    definition would resolve them differently; a submission's own values always travel."""
    rig = dispatch_rig()
    # Given two workers defining "job": w1 with 2 retries (the first to register, so the control plane's
    # definition), w2 with 5
    assert rig.register("w1", {"job": 2}, capacity=1).envelope.register_reply.accepted
    assert rig.register("w2", {"job": 5}, capacity=1).envelope.register_reply.accepted
    assert rig.coordinator.defined_policy("job").retries == 2

    # When each worker takes one task of it, and a third task with its own retries goes to w1
    first, second = rig.submit("job"), rig.submit("job")
    to_w1, to_w2 = rig.pull("w1"), rig.pull("w2")
    await until(lambda: to_w1.answered and to_w2.answered)
    own = rig.submit("job", retries=7)
    rig.report("w1", rig.success(to_w1.tasks[0], "done"))
    again = rig.pull("w1")
    await until(lambda: again.answered)

    # Then w1, which agrees with the control plane, gets the specs as submitted (it resolves them itself)
    (agreeing,) = to_w1.tasks
    assert not agreeing.policy_resolved and not agreeing.HasField("retries")
    # and w2, which does not, gets the control plane's resolution: 2 retries, not its own 5
    (differing,) = to_w2.tasks
    assert differing.policy_resolved and differing.retries == 2
    # and a submission's own value goes with it either way
    (overridden,) = again.tasks
    assert overridden.task_id == own.task_id and overridden.retries == 7
    assert {agreeing.task_id, differing.task_id} == {first.task_id, second.task_id}


async def test_a_dispatched_task_carries_the_priority_it_was_queued_at_so_the_worker_starts_it_by_that(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    # Given "urgent" defined high by default on the control plane, and a worker that runs it and "job"
    rig.harness.task(lambda: None, "urgent", priority="high")
    rig.register("w1", ["urgent", "job"], capacity=4)
    # When a plain task, one of the high default and an explicitly critical one are dispatched
    plain, by_default, critical = rig.submit("job"), rig.submit("urgent"), rig.submit("job", priority=1)
    taken = rig.pull("w1")
    await until(lambda: taken.answered)
    priorities = {spec.task_id: spec.priority for spec in taken.tasks}
    # Then each carries its level (a worker's prefetch queue starts by it); a normal one stays unset
    assert priorities == {plain.task_id: 0, by_default.task_id: task_pb2.PRIORITY_HIGH, critical.task_id: 1}


@pytest.mark.parametrize("how", ["handed back as the worker leaves", "never received by the worker"])
async def test_a_task_whose_cancel_was_accepted_ends_cancelled_when_it_comes_back_unstarted(
    dispatch_rig: Any, how: str
) -> None:
    # Given a task dispatched to w1, cancelled while the stop order waits for w1 (accepted: cancelled=True)
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=1)
    record = rig.submit("job", 1)
    rig.pull("w1")
    await settle()
    assert rig.coordinator.cancel(record.task_id) == (True, RUNNING)

    # When the task comes back to the control plane unstarted
    if how == "handed back as the worker leaves":
        rig.deregister("w1", [record.task_id])
    else:
        rig.pull("w1", held=[])
    await settle()

    # Then it ends CANCELLED there: it is not queued again, and no other worker gets it
    assert record.state == CANCELLED
    assert record.error is not None and record.error.type == "TaskCancelled"
    rig.register("w2", ["job"], capacity=1)
    pull = rig.pull("w2", hold=0.05)
    await asyncio.sleep(0.2)  # past the hold: answered empty
    assert pull.tasks == []


async def test_a_cancelled_outcome_without_its_error_reads_as_task_cancelled(dispatch_rig: Any) -> None:
    # Given a task running on a worker
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=1)
    record = rig.submit("job", 1)
    pull = rig.pull("w1")
    await settle()
    spec = pull.tasks[0]
    # When the worker reports it CANCELLED without saying what error (the field left out)
    rig.report("w1", worker_pb2.TaskOutcome(task_id=record.task_id, attempt=spec.attempt, state=CANCELLED))
    await settle()
    # Then it is CANCELLED with a TaskCancelled error, not an empty one
    assert record.state == CANCELLED
    assert record.error is not None and record.error.type == "TaskCancelled"


@pytest.mark.parametrize("retries", [0, 1], ids=["no retry left", "a retry left"])
async def test_a_run_lost_with_its_worker_is_logged_by_task_on_the_task_logger(
    dispatch_rig: Any, caplog: pytest.LogCaptureFixture, retries: int
) -> None:
    # Given a task running on a worker (with or without a retry left)
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=1)
    record = rig.submit("job", retries=retries)
    rig.pull("w1")
    await settle()
    # When the worker is lost
    with caplog.at_level(logging.INFO, logger="fastworker.task"):
        rig.dispatcher.lose(rig.fleet.get("w1"), "no heartbeat")
    # Then one line on the task logger names the run, with the task's fields, and what became of it
    (line,) = [r for r in caplog.records if r.name == "fastworker.task"]
    assert (line.task_id, line.worker_id, line.attempt) == (record.task_id, "w1", 1)  # type: ignore[attr-defined]
    assert "WorkerLost" in line.getMessage()
    assert ("runs again" in line.getMessage()) == bool(retries)
    assert line.levelno == (logging.INFO if retries else logging.WARNING)


async def test_a_policy_resolved_from_the_fleet_as_it_changes_is_not_kept_past_the_change(
    dispatch_rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot thread resolves a policy while the loop handles a fleet change: the stale one must not stay."""
    rig = dispatch_rig()
    # Given "job" defined by w1 with 2 retries
    rig.register("w1", {"job": 2}, capacity=1)
    fleet = rig.fleet
    resolve = fleet.definition
    rig.coordinator._defined_policies = {}  # not resolved yet (its registration resolved it once)

    # When a resolution reads w1's definition, and the fleet changes before it is remembered
    # (w1 is lost and w2 registers "job" with 5 retries, as the loop would meanwhile)
    def definition_then_fleet_change(name: str) -> Any:
        found = resolve(name)
        monkeypatch.setattr(fleet, "definition", resolve)
        rig.dispatcher.lose(fleet.get("w1"), "gone")
        rig.register("w2", {"job": 5}, capacity=1)
        return found

    monkeypatch.setattr(fleet, "definition", definition_then_fleet_change)
    assert rig.coordinator.defined_policy("job").retries == 2  # what that resolution saw
    assert [worker.worker_id for worker in fleet] == ["w2"]

    # Then the next resolution reads the fleet as it is now
    assert rig.coordinator.defined_policy("job").retries == 5
