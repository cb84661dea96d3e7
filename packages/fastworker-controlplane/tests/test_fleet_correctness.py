"""Fleet faults the dispatcher must survive without running a task twice or failing it for nothing.

Worker identity is a connection plus a process (incarnation), not a claimed id; prefetched tasks
are started only once granted and go back only after a lost worker's fence; capacity claims are
bounded. Driven through fake dispatch-channel requests (``dispatch_rig``) on the test's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from fastworker.controlplane.dispatcher import WORKER_LOST
from fastworker.controlplane.records import CANCELLED, FAILURE, PENDING, RUNNING, SUCCESS, TaskRecord
from fastworker.protocol.v1 import error_pb2, task_pb2

BOUND = 5.0


async def settle(turns: int = 5) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], bound: float = BOUND) -> None:
    async with asyncio.timeout(bound):
        while not predicate():
            await asyncio.sleep(0.002)


def error_code(request: Any) -> int:
    envelope = request.envelope
    assert envelope.WhichOneof("body") == "error", envelope
    return int(envelope.error.code)


# ------------------------------------------------------------------------------------- identity


async def test_a_second_live_process_under_one_worker_id_is_refused_and_the_first_keeps_its_tasks(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"], pipe_id=1, incarnation="process-a")
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks

    # Another process (a copied FASTWORKER_WORKER_ID, pid 1 in two containers) claims the same id
    reply = rig.register("w1", ["job"], pipe_id=2, incarnation="process-b").envelope.register_reply

    assert not reply.accepted and reply.id_in_use
    assert "w1" in reply.reason and "in use" in reply.reason
    assert rig.coordinator.counters.duplicate_worker_ids == 1
    worker = rig.fleet.get("w1")
    assert worker.incarnation == "process-a" and worker.pipe_id == 1
    assert record.state == RUNNING and record.worker == "w1" and spec.task_id in worker.leases
    # The impostor's connection can neither take work nor hand the task back or report it
    rig.pipes["w1"] = 2
    assert error_code(rig.pull("w1", held=[])) == error_pb2.ERROR_CODE_NOT_REGISTERED
    assert error_code(rig.report("w1", rig.success(spec, "forged"))) == error_pb2.ERROR_CODE_NOT_REGISTERED
    assert error_code(rig.deregister("w1", [spec.task_id])) == error_pb2.ERROR_CODE_NOT_REGISTERED
    assert record.state == RUNNING and spec.task_id in worker.leases and record.attempts == 1

    # The real one finishes it, once
    rig.pipes["w1"] = 1
    rig.report("w1", rig.success(spec, "real"))
    assert record.state == SUCCESS and rig.coordinator.counters.succeeded == 1


async def test_a_registration_silent_past_the_heartbeat_timeout_gives_way_to_a_new_process(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig(heartbeat_timeout=15.0)
    rig.register("w1", ["job"], pipe_id=1, incarnation="process-a")
    rig.clock.advance(16.0)  # the old process went silent (its host vanished)

    reply = rig.register("w1", ["job"], pipe_id=2, incarnation="process-b").envelope.register_reply

    assert reply.accepted and not reply.resumed
    assert rig.fleet.get("w1").incarnation == "process-b"


async def test_a_process_restarted_under_its_id_after_a_crash_is_deferred_not_refused_and_taken_once_the_old_is_lost(
    dispatch_rig: Any,
) -> None:
    # Given w1 running a task with a retry left, then killed: its connection closes
    rig = dispatch_rig(heartbeat_interval=0.05, heartbeat_timeout=15.0)
    rig.register("w1", ["job"], pipe_id=1, incarnation="process-a")
    record = rig.submit("job", retries=1)
    rig.pull("w1")
    await settle()
    assert record.state == RUNNING
    rig.dispatcher.pipe_closed(1)

    # When its replacement (a supervisor's restart, same id) registers within the heartbeat timeout
    rig.clock.advance(1.0)
    reply = rig.register("w1", ["job"], pipe_id=2, incarnation="process-b").envelope.register_reply

    # Then it is told to register again, not refused for good (it would exit 3 and stay down)
    assert not reply.accepted and not reply.id_in_use and not reply.final_refusal
    assert "still held by the process before this one" in reply.reason and "in 14.0 s" in reply.reason
    assert rig.coordinator.counters.duplicate_worker_ids == 0
    assert rig.fleet.get("w1").incarnation == "process-a" and record.state == RUNNING  # nothing taken early

    # And once the old process is found lost (its task goes back for its retry), the new one is taken
    rig.clock.advance(15.0)
    await until(lambda: "w1" not in rig.fleet)
    assert record.state in (PENDING, RUNNING) and record.attempts == 1
    reply = rig.register("w1", ["job"], pipe_id=2, incarnation="process-b").envelope.register_reply
    assert reply.accepted and not reply.resumed
    assert rig.fleet.get("w1").incarnation == "process-b"


async def test_a_process_whose_connection_is_up_still_refuses_a_second_one_under_its_id_even_after_a_cut(
    dispatch_rig: Any,
) -> None:
    # A cut-off worker that came back on a new connection is live again: a second process is refused
    rig = dispatch_rig(heartbeat_timeout=15.0)
    rig.register("w1", ["job"], pipe_id=1, incarnation="process-a")
    rig.dispatcher.pipe_closed(1)
    assert rig.register("w1", ["job"], pipe_id=3, incarnation="process-a").envelope.register_reply.resumed

    reply = rig.register("w1", ["job"], pipe_id=2, incarnation="process-b").envelope.register_reply

    assert not reply.accepted and reply.id_in_use


async def test_the_same_process_registering_again_resumes_its_leases_and_fails_nothing(dispatch_rig: Any) -> None:
    # A reconnect racing a restart: the worker registers twice with the same control plane
    rig = dispatch_rig()
    rig.register("w1", {"job": 0}, pipe_id=1, incarnation="process-a", capacity=1)
    records = [rig.submit("job", n) for n in range(3)]
    pull = rig.pull("w1", prefetch=2)
    await settle()
    assert len(pull.tasks) == 3

    reply = rig.register("w1", {"job": 0}, pipe_id=7, incarnation="process-a", capacity=1).envelope.register_reply

    assert reply.accepted and reply.resumed
    worker = rig.fleet.get("w1")
    assert worker.pipe_id == 7 and set(worker.leases) == {r.task_id for r in records}
    assert all(r.state == RUNNING for r in records)
    assert rig.coordinator.counters.failed == 0 and rig.coordinator.counters.workers_lost == 0
    for spec in pull.tasks:
        rig.report("w1", rig.success(spec, spec.task_id))
    assert all(r.state == SUCCESS for r in records)


# ---------------------------------------------------------------------------------------- fencing


async def test_a_worker_cut_off_that_registers_again_within_the_grace_keeps_its_tasks_nothing_fails_or_runs_twice(
    dispatch_rig: Any,
) -> None:
    # Given a worker running one task without retries and one with, and holding a prefetched one
    rig = dispatch_rig(heartbeat_interval=0.1, heartbeat_timeout=15.0)
    rig.register("w1", {"job": 0}, pipe_id=1, incarnation="process-a", capacity=2)
    no_retry, with_retry, held = rig.submit("job", 1), rig.submit("job", 2, retries=1), rig.submit("job", 3)
    pull = rig.pull("w1", prefetch=1)
    await settle()
    assert len(pull.tasks) == 3 and held.held

    # When its connection is cut, and the same process registers again on a new one within the grace
    rig.dispatcher.pipe_closed(1)
    rig.clock.advance(10.0)  # (its heartbeat timeout is 15 s)
    await asyncio.sleep(0.3)  # (reaper rounds)
    reply = rig.register("w1", {"job": 0}, pipe_id=5, incarnation="process-a", capacity=2).envelope.register_reply
    rig.clock.advance(10.0)
    await asyncio.sleep(0.3)

    # Then it resumed: nothing failed, nothing went back to the queue
    assert reply.accepted and reply.resumed
    assert rig.coordinator.counters.workers_lost == 0 and rig.coordinator.counters.failed == 0
    assert [(r.state, r.worker, r.attempts) for r in (no_retry, with_retry)] == [(RUNNING, "w1", 1)] * 2
    assert held.state == RUNNING and held.worker == "w1"
    # And its outcomes count
    for spec in pull.tasks[:2]:
        rig.report("w1", rig.success(spec, "ok"))
    assert (no_retry.state, with_retry.state) == (SUCCESS, SUCCESS)


async def test_a_lost_worker_returns_running_tasks_at_once_and_prefetched_ones_only_after_the_fence(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig(heartbeat_interval=0.1, heartbeat_timeout=0.4)
    rig.register("w1", {"job": 1}, pipe_id=1, incarnation="process-a", capacity=1)
    running, held = rig.submit("job", 1), rig.submit("job", 2)
    pull = rig.pull("w1", prefetch=1)
    await settle()
    assert len(pull.tasks) == 2 and not running.held and held.held

    rig.dispatcher.pipe_closed(1)
    assert running.state == RUNNING  # not at once: a cut-off process may come back
    rig.dispatcher.lose(rig.fleet.get("w1"), "the test says so")  # (as its heartbeat timeout would)

    # The running task (retries left) goes back at the loss; the held one may still be started by a
    # worker that only lost its connection, until its fence: it stays with that worker until then
    assert running.state == PENDING and running.attempts == 1
    assert held.state == RUNNING and held.held and held.worker == "w1"
    await until(lambda: held.state == PENDING)
    assert held.attempts == 0 and held.worker == ""  # never started: no attempt counted


async def one_running_two_held(dispatch_rig: Any) -> tuple[Any, list[TaskRecord], list[task_pb2.TaskSpec]]:
    """w1 (capacity 1, prefetch 2) given three ``job`` tasks: the rig, their records, the specs it got (running first)."""
    rig = dispatch_rig()
    rig.register("w1", ["job"], pipe_id=1, incarnation="process-a", capacity=1)
    records = [rig.submit("job", n) for n in range(3)]
    first = rig.pull("w1", prefetch=2)
    await settle()
    return rig, records, list(first.tasks)


async def test_prefetched_tasks_are_granted_only_while_still_leased_and_a_claim_is_answered_at_once(
    dispatch_rig: Any,
) -> None:
    rig, records, (running_spec, held_a, held_b) = await one_running_two_held(dispatch_rig)
    assert records[1].held and records[2].held

    # Task b is taken back meanwhile (a client cancels it while it waits in the prefetch queue)
    cancelled = rig.coordinator.find(held_b.task_id)
    assert cancelled is not None
    rig.dispatcher.reconcile(rig.fleet.get("w1"), {running_spec.task_id, held_a.task_id})
    assert cancelled.state == PENDING

    claim = rig.pull("w1", hold=5.0, claims=[held_a.task_id, held_b.task_id])
    await until(lambda: claim.answered)  # not held for 5 s: a free slot waits for this answer

    assert list(claim.envelope.dispatch.granted_task_ids) == [held_a.task_id]
    assert not records[1].held and records[1].started_at > 0  # RUNNING for clients from the grant


async def test_a_claim_crossing_a_cancel_is_refused_and_the_task_ends_cancelled_unstarted(dispatch_rig: Any) -> None:
    rig, records, (_, held_a, held_b) = await one_running_two_held(dispatch_rig)
    # A client cancels task a while it waits in w1's prefetch queue; w1's claim for it is on its way
    cancelled, previous = rig.coordinator.cancel(held_a.task_id)
    # It ends at once, its dispatch counted as no run: it never started, and no drain or loss of w1
    # can hand it back to the queue any more
    assert cancelled and previous == PENDING and records[1].state == CANCELLED and records[1].attempts == 0
    assert held_a.task_id not in rig.fleet.get("w1").leases

    claim = rig.pull("w1", claims=[held_a.task_id, held_b.task_id])
    await until(lambda: claim.answered)

    assert list(claim.envelope.dispatch.granted_task_ids) == [held_b.task_id]
    assert records[1].state == CANCELLED and records[1].started_at == 0.0
    assert records[1].error.type == "TaskCancelled"
    worker = rig.fleet.get("w1")
    assert held_a.task_id not in worker.leases and held_a.task_id not in rig.dispatcher.take_cancels(worker)
    assert records[2].state == RUNNING and not records[2].held


async def test_an_outcome_for_a_task_taken_back_is_ignored_and_counted(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", {"job": 0}, pipe_id=1, incarnation="process-a")
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks
    rig.dispatcher.lose(rig.fleet.get("w1"), "test says so")
    assert record.state == FAILURE and record.error.type == WORKER_LOST

    rig.register("w1", {"job": 0}, pipe_id=1, incarnation="process-a")  # it comes back, fresh
    rig.report("w1", rig.success(spec, "late"))

    assert record.state == FAILURE and rig.coordinator.counters.late_outcomes == 1


async def test_an_outcome_reported_again_after_it_was_applied_is_ignored_and_not_counted_late(
    dispatch_rig: Any,
) -> None:
    # A worker whose report's answer was lost (the control plane stalled past its timeout) sends the
    # outcome again: applied once, and no task was taken back, so late_outcomes stays 0.
    rig = dispatch_rig()
    rig.register("w1", {"job": 0}, pipe_id=1, incarnation="process-a")
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks
    rig.report("w1", rig.success(spec, "once"))
    rig.report("w1", rig.success(spec, "once"))

    assert record.state == SUCCESS and rig.coordinator.counters.succeeded == 1
    assert rig.coordinator.counters.late_outcomes == 0


# --------------------------------------------------------------------------------------- capacity


async def test_a_worker_claiming_absurd_capacity_is_capped_and_cannot_hoard_the_queue(dispatch_rig: Any) -> None:
    rig = dispatch_rig(max_worker_tasks=8)
    rig.register("hoarder", ["job"], pipe_id=1, capacity=2**32 - 1)
    rig.register("honest", ["job"], pipe_id=2, capacity=2)
    for n in range(40):
        rig.submit("job", n)

    hoard = rig.pull("hoarder", prefetch=2**31)
    honest = rig.pull("honest")
    await settle()

    hoarder = rig.fleet.get("hoarder")
    assert hoarder.capacity == 8 and hoarder.prefetch == 0
    assert len(hoard.tasks) == 8
    assert len(honest.tasks) == 2
    assert len(rig.coordinator.queue) == 30


async def test_least_loaded_means_the_lowest_share_of_slots_in_use(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("big", ["job"], pipe_id=1, capacity=8)
    rig.register("small", ["job"], pipe_id=2, capacity=2)
    for n in range(5):
        rig.submit("job", n)

    big, small = rig.pull("big"), rig.pull("small")
    await settle()

    # 5 tasks over 8 + 2 slots: each gets its share (4/8 and 1/2), not the big one all five
    assert (len(big.tasks), len(small.tasks)) == (4, 1)


async def test_a_prefetched_task_waiting_for_a_lost_workers_fence_can_be_cancelled(dispatch_rig: Any) -> None:
    rig = dispatch_rig(heartbeat_interval=0.1, heartbeat_timeout=0.4)
    rig.register("w1", {"job": 0}, pipe_id=1, incarnation="process-a", capacity=1)
    running = rig.submit("job", 1)
    held = rig.submit("job", 2)
    rig.pull("w1", prefetch=1)
    await settle()
    rig.dispatcher.lose(rig.fleet.get("w1"), "the test says so")
    assert held.held and held.state == RUNNING
    assert running.state == FAILURE  # no retries: lost with its worker

    cancelled, _ = rig.coordinator.cancel(held.task_id)

    assert cancelled and held.state == CANCELLED
    await asyncio.sleep(0.6)  # past the fence: the take-back leaves a finished task alone
    assert held.state == CANCELLED and len(rig.coordinator.queue) == 0


async def test_an_idle_worker_takes_prefetched_tasks_another_holds_behind_a_long_one(dispatch_rig: Any) -> None:
    # Celery's prefetch trap: w1 prefetched while its tasks were short, then one ran long
    rig, records, (long_one, held_a, held_b) = await one_running_two_held(dispatch_rig)
    assert records[1].held and records[2].held

    # w2 joins with a free slot and nothing is queued: it gets the oldest held task at once
    rig.register("w2", ["job"], pipe_id=2, incarnation="process-b", capacity=1)
    idle = rig.pull("w2")
    await settle()

    assert [spec.task_id for spec in idle.tasks] == [held_a.task_id]
    assert records[1].worker == "w2" and not records[1].held and records[1].attempts == 1
    assert held_a.task_id not in rig.fleet.get("w1").leases
    # w1 asks to start it later: refused, so it drops it; the other held one stays w1's
    claim = rig.pull("w1", claims=[held_a.task_id, held_b.task_id])
    await until(lambda: claim.answered)
    assert list(claim.envelope.dispatch.granted_task_ids) == [held_b.task_id]


async def test_an_idle_worker_takes_the_held_tasks_the_queue_would_start_first_whoever_holds_them(
    dispatch_rig: Any,
) -> None:
    # w1 and w2 (one slot each) each run a long task and hold two prefetched ones: w1 a low and then a
    # critical one (dispatched later), w2 a normal one and then a low one
    rig = dispatch_rig()
    for pipe_id, worker_id in enumerate(("w1", "w2"), start=1):
        rig.register(worker_id, ["job"], pipe_id=pipe_id, incarnation=worker_id, capacity=1)
    long_1 = rig.submit("job", "long-1")
    long_2 = rig.submit("job", "long-2")
    low = rig.submit("job", "low", priority=task_pb2.PRIORITY_LOW)
    rig.pull("w1", prefetch=2)  # long-1 running, long-2 and low held
    await settle()
    rig.pull("w2", prefetch=2)  # long-2 moves to w2's free slot (the queue is empty)
    await settle()
    normal = rig.submit("job", "normal")
    later_low = rig.submit("job", "later-low", priority=task_pb2.PRIORITY_LOW)
    rig.pull("w2", prefetch=2)  # normal and later-low held
    await settle()
    critical = rig.submit("job", "critical", priority=task_pb2.PRIORITY_CRITICAL)
    rig.pull("w1", prefetch=2)  # critical held, behind low
    await settle()
    assert [r.worker for r in (long_1, low, critical, long_2, normal, later_low)] == ["w1"] * 3 + ["w2"] * 3
    assert all(r.held for r in (low, critical, normal, later_low))

    # When w3 joins with two free slots and nothing is queued
    rig.register("w3", ["job"], pipe_id=3, incarnation="w3", capacity=2)
    idle = rig.pull("w3")
    await settle()

    # Then it takes the critical task and the normal one (not the low one w1 happened to hold first)
    assert {spec.task_id for spec in idle.tasks} == {critical.task_id, normal.task_id}
    assert low.held and low.worker == "w1" and later_low.held and later_low.worker == "w2"


async def test_a_prefetched_task_cancelled_before_its_holder_drains_stays_cancelled(dispatch_rig: Any) -> None:
    rig, records, (_, held_a, held_b) = await one_running_two_held(dispatch_rig)
    assert rig.coordinator.cancel(held_a.task_id)[0]

    # When w1 drains and hands back both prefetched tasks, as it never started them
    rig.dispatcher.deregister(rig.fleet.get("w1"), [held_a.task_id, held_b.task_id])

    # Then the cancelled one is not queued again (it would run elsewhere); the other is
    assert records[1].state == CANCELLED and records[1].attempts == 0
    assert records[2].state == PENDING and records[2].attempts == 0


async def test_the_control_planes_records_about_a_worker_carry_its_id_as_a_field_for_log_shippers(
    dispatch_rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rig = dispatch_rig()
    with caplog.at_level(logging.INFO, logger="fastworker.controlplane"):
        rig.register("w1", ["job"], incarnation="process-a")
        rig.dispatcher.request_drain("w1", 5.0)
        rig.dispatcher.lose(rig.fleet.get("w1"), "the test says so")
    about = [record for record in caplog.records if "w1" in record.getMessage()]
    assert len(about) >= 3  # registered, asked to drain, lost
    assert all(getattr(record, "worker_id", None) == "w1" for record in about), [r.getMessage() for r in about]
