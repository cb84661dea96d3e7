"""The coordinator accepts, queues, schedules, runs (in local slots), cancels, retries and reports tasks.

Each test drives a real Coordinator on the test's event loop, with real slot threads running small
in-process tasks. Blocking tasks wait on gates that the harness releases in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fastworker.client import TaskCancelled, TaskInterrupted
from fastworker.controlplane import coordinator as coordinator_module
from fastworker.controlplane import local as local_module
from fastworker.controlplane.coordinator import SLOT_LOCK_YIELDS, Coordinator, RequestRefused
from fastworker.controlplane.expiry import COMPACT_ABOVE, ExpiryWatch
from fastworker.controlplane.local import LocalExecutor, SlotRuns
from fastworker.controlplane.records import (
    CANCELLED,
    FAILURE,
    LOCAL_WORKER_ID,
    PENDING,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    TaskRecord,
)
from fastworker.controlplane.waits import MAX_WAIT
from fastworker.protocol.payload import decode_value
from fastworker.protocol.v1 import client_pb2, error_pb2, task_pb2

BOUND = 10.0


async def until(predicate: Callable[[], bool], bound: float = BOUND) -> None:
    """Yield to the loop until predicate() holds (bounded)."""
    async with asyncio.timeout(bound):
        while not predicate():
            await asyncio.sleep(0.002)


def blocking_task(harness: Any, name: str = "block") -> tuple[threading.Event, threading.Event]:
    """Register a sync task that signals `started` and then waits for `release`; returns both events."""
    started, release = threading.Event(), harness.gate()

    def block() -> str:
        started.set()
        assert release.wait(BOUND), "test never released the blocking task"
        return "released"

    harness.task(block, name=name)
    return started, release


async def occupy_the_only_slot(harness: Any, coordinator: Coordinator) -> tuple[str, threading.Event]:
    """Start the blocking task in the coordinator's one slot and wait until it runs; returns (id, release)."""
    started, release = blocking_task(harness)
    record, _ = coordinator.submit(harness.spec("block"))
    await until(started.is_set)
    assert record.state == RUNNING
    return record.task_id, release


# ---------------------------------------------------------------------------------------------- submit


async def test_a_submitted_task_is_pending_then_runs_locally_and_succeeds_with_its_result(harness: Any) -> None:
    # Given a coordinator whose only slot is busy
    harness.task(lambda x, y: x + y, name="add")
    coordinator = harness.coordinator(local_concurrency=1)
    blocker_id, release = await occupy_the_only_slot(harness, coordinator)

    # When a task is submitted
    record, duplicate = coordinator.submit(harness.spec("add", 2, 3))

    # Then it is accepted as PENDING and queued
    assert not duplicate
    assert record.state == PENDING
    assert coordinator.find(record.task_id) is record
    assert len(coordinator.queue) == 1

    # When the slot frees up, it runs to SUCCESS with its result, on the control plane
    release.set()
    done = await harness.final(coordinator, record.task_id)
    assert done is record
    assert record.state == SUCCESS
    assert record.result is not None and decode_value(record.result) == 5
    assert record.error is None
    assert record.attempts == 1
    assert record.worker == LOCAL_WORKER_ID
    assert 0 < record.queued_at <= record.started_at <= record.finished_at
    assert record.task_id not in coordinator.active
    assert coordinator.find(record.task_id) is record  # from the result cache now
    assert (await harness.final(coordinator, blocker_id)).state == SUCCESS


async def test_an_async_task_runs_on_the_loop_and_succeeds(harness: Any) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0.001)
        return 2 * x

    harness.task(double)
    coordinator = harness.coordinator()

    record, _ = coordinator.submit(harness.spec("double", 21))
    done = await harness.final(coordinator, record.task_id)

    assert done.state == SUCCESS
    assert done.result is not None and decode_value(done.result) == 42


async def test_keyword_arguments_reach_the_task(harness: Any) -> None:
    harness.task(lambda a, *, b=0: [a, b], name="kw")
    coordinator = harness.coordinator()

    record, _ = coordinator.submit(harness.spec("kw", "x", b=7))
    done = await harness.final(coordinator, record.task_id)

    assert done.result is not None and decode_value(done.result) == ["x", 7]


async def test_the_priority_defaults_to_the_tasks_own_and_a_spec_priority_overrides_it(harness: Any) -> None:
    harness.task(lambda: None, name="urgent", priority="high")
    coordinator = harness.coordinator(local_concurrency=0)

    default, _ = coordinator.submit(harness.spec("urgent"))
    explicit, _ = coordinator.submit(harness.spec("urgent", priority=task_pb2.PRIORITY_LOW))

    assert default.priority == task_pb2.PRIORITY_HIGH
    assert explicit.priority == task_pb2.PRIORITY_LOW


async def test_a_spec_with_an_unknown_priority_is_refused_as_invalid(harness: Any) -> None:
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)

    with pytest.raises(RequestRefused) as caught:
        coordinator.submit(harness.spec("noop", priority=99))

    assert caught.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    assert len(coordinator.active) == 0


@pytest.mark.parametrize(("field", "value"), [("timeout", -5.0), ("soft_timeout", float("nan")), ("eta", float("inf"))])
async def test_a_spec_with_a_time_limit_or_time_no_run_could_honour_is_refused_as_invalid(
    harness: Any, field: str, value: float
) -> None:
    # A hand-made frame (the client checks these): a negative time limit jammed a subworker's slot.
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)
    spec = harness.spec("noop")
    setattr(spec, field, value)

    with pytest.raises(RequestRefused, match=field) as caught:
        coordinator.submit(spec)
    with pytest.raises(RequestRefused, match=f"step 1 .*{field}"):
        coordinator.submit_workflow("wf-bad", [spec])

    assert caught.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    assert len(coordinator.active) == 0


@pytest.mark.parametrize("task_id", ["", "x" * 201])
async def test_a_task_id_that_is_empty_or_too_long_is_refused(harness: Any, task_id: str) -> None:
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)
    spec = harness.spec("noop")
    spec.task_id = task_id

    with pytest.raises(RequestRefused) as caught:
        coordinator.submit(spec)

    assert caught.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST


async def test_submitting_a_task_id_twice_returns_the_existing_record_and_runs_it_once(harness: Any) -> None:
    # Given a task that counts its executions
    calls: list[int] = []
    harness.task(lambda n: calls.append(n) or n, name="count")
    coordinator = harness.coordinator()
    spec = harness.spec("count", 1, task_id="same-id")

    # When the same task id is submitted twice
    first, first_duplicate = coordinator.submit(spec)
    second, second_duplicate = coordinator.submit(spec)

    # Then the second submission is the first record, flagged as a duplicate
    assert (first_duplicate, second_duplicate) == (False, True)
    assert second is first
    await harness.final(coordinator, "same-id")

    # And after it finished, a third submission is still a duplicate of the cached record
    third, third_duplicate = coordinator.submit(spec)
    assert third is first and third_duplicate
    await asyncio.sleep(0.05)
    assert calls == [1]
    assert coordinator.counters.submitted == 1


async def test_an_unknown_task_name_is_refused_at_submit(harness: Any) -> None:
    coordinator = harness.coordinator()

    with pytest.raises(RequestRefused) as caught:
        coordinator.submit(harness.spec("no.such.task"))

    assert caught.value.code == error_pb2.ERROR_CODE_UNKNOWN_TASK
    assert "no.such.task" in caught.value.message
    assert coordinator.counters.submitted == 0
    assert len(coordinator.active) == 0


async def test_a_full_queue_refuses_new_tasks_until_one_leaves_it(harness: Any) -> None:
    # Given no local slots (nothing runs) and a bound of three waiting tasks
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0, max_queue=3)
    queued = [coordinator.submit(harness.spec("noop"))[0] for _ in range(2)]
    coordinator.submit(harness.spec("noop", eta=time.time() + 3600))  # SCHEDULED counts too

    # When a fourth is submitted, it is refused with QUEUE_FULL
    with pytest.raises(RequestRefused) as caught:
        coordinator.submit(harness.spec("noop"))
    assert caught.value.code == error_pb2.ERROR_CODE_QUEUE_FULL
    assert coordinator.counters.submitted == 3

    # When one waiting task is cancelled, there is room again
    coordinator.cancel(queued[0].task_id)
    coordinator.submit(harness.spec("noop"))
    assert len(coordinator.queue) + len(coordinator.schedule) == 3


async def test_refusals_in_a_batch_leave_no_garbage_cycle_holding_the_request(harness: Any) -> None:
    # A flood of refused batches kept ~100 MB of requests alive between collections: each refusal's
    # traceback held the frame that held the whole batch, and the batch's outcomes held the refusal
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0, max_queue=1)
    badly_queued = harness.spec("noop")
    badly_queued.queue = "no spaces allowed"  # refused from inside an except clause (a chained refusal)
    batch = [badly_queued, harness.spec("noop"), harness.spec("noop"), harness.spec("nope")]
    gc.collect()
    gc.disable()
    try:
        outcomes = coordinator.submit_many(batch)
        codes = [outcome.code for outcome in outcomes if isinstance(outcome, RequestRefused)]
        del outcomes
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert codes == [
        error_pb2.ERROR_CODE_INVALID_REQUEST,
        error_pb2.ERROR_CODE_QUEUE_FULL,
        error_pb2.ERROR_CODE_UNKNOWN_TASK,
    ]
    assert unreachable == 0


async def test_a_full_queue_refuses_a_retry_too_and_says_how_many_wait(harness: Any) -> None:
    # Given a failed task, and then a queue at its bound of two (one waiting for the other: SCHEDULED)
    def boom() -> None:
        raise RuntimeError("boom")

    harness.task(boom, name="boom")
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=1, max_queue=2)
    failed, _ = coordinator.submit(harness.spec("boom"))
    await harness.final(coordinator, failed.task_id)
    coordinator.set_paused(task_pb2.PRIORITY_NORMAL, True)
    first, _ = coordinator.submit(harness.spec("noop"))
    then = harness.spec("noop")
    then.dependencies.task_ids.append(first.task_id)
    coordinator.submit(then)
    assert coordinator.scheduled_count == 1  # what stats, queues and /metrics show as scheduled

    # When the failed task is retried, it is refused as a new submission would be
    with pytest.raises(RequestRefused) as caught:
        coordinator.retry(failed.task_id)
    assert caught.value.code == error_pb2.ERROR_CODE_QUEUE_FULL
    assert "2 tasks wait, --max-queue is 2" in str(caught.value)
    assert coordinator.find(failed.task_id).state == FAILURE


async def test_the_queue_bound_does_not_count_running_tasks(harness: Any) -> None:
    # Given one slot busy running a task and a bound of one waiting task
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=1, max_queue=1)
    await occupy_the_only_slot(harness, coordinator)

    # Then one more task can wait, and a second is refused
    coordinator.submit(harness.spec("noop"))
    with pytest.raises(RequestRefused) as caught:
        coordinator.submit(harness.spec("noop"))
    assert caught.value.code == error_pb2.ERROR_CODE_QUEUE_FULL


async def test_a_coordinator_that_stopped_accepting_refuses_submissions(harness: Any) -> None:
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator()

    coordinator.stop_accepting()

    with pytest.raises(RequestRefused) as caught:
        coordinator.submit(harness.spec("noop"))
    assert caught.value.code == error_pb2.ERROR_CODE_SHUTTING_DOWN
    assert coordinator.counters.submitted == 0


# ---------------------------------------------------------------------------------------------- failures


async def test_wrong_arguments_end_the_task_as_failure_with_the_type_error_text(harness: Any) -> None:
    def add(x: int, y: int) -> int:
        return x + y

    harness.task(add)
    coordinator = harness.coordinator()

    record, _ = coordinator.submit(harness.spec("add", 1))
    done = await harness.final(coordinator, record.task_id)

    assert done.state == FAILURE
    assert done.error is not None
    assert done.error.type == "TypeError"
    assert "missing 1 required positional argument: 'y'" in done.error.message
    assert done.result is None
    assert coordinator.counters.failed == 1


async def test_a_task_that_raises_fails_with_its_error_type_message_and_traceback(harness: Any) -> None:
    def explode(what: str) -> None:
        raise ValueError(f"bad {what}")

    harness.task(explode)
    coordinator = harness.coordinator()

    record, _ = coordinator.submit(harness.spec("explode", "input"))
    done = await harness.final(coordinator, record.task_id)

    assert done.state == FAILURE
    assert done.error is not None
    assert (done.error.type, done.error.message) == ("ValueError", "bad input")
    assert "Traceback" in done.error.traceback
    assert "explode" in done.error.traceback
    assert "ValueError: bad input" in done.error.traceback


async def test_an_async_task_that_raises_fails_with_its_error(harness: Any) -> None:
    async def explode_async() -> None:
        await asyncio.sleep(0)
        raise KeyError("missing")

    harness.task(explode_async)
    coordinator = harness.coordinator()

    record, _ = coordinator.submit(harness.spec("explode_async"))
    done = await harness.final(coordinator, record.task_id)

    assert done.state == FAILURE
    assert done.error is not None and done.error.type == "KeyError"


async def test_a_task_calling_sys_exit_fails_and_the_slot_keeps_serving(harness: Any) -> None:
    def leave() -> None:
        raise SystemExit(3)

    harness.task(leave)
    harness.task(lambda: "still here", name="after")
    coordinator = harness.coordinator(local_concurrency=1)

    bad, _ = coordinator.submit(harness.spec("leave"))
    good, _ = coordinator.submit(harness.spec("after"))

    assert (await harness.final(coordinator, bad.task_id)).state == FAILURE
    done = await harness.final(coordinator, good.task_id)
    assert done.state == SUCCESS


# ---------------------------------------------------------------------------------------------- cancel


async def test_an_async_task_that_catches_its_cancellation_and_returns_still_ends_cancelled(harness: Any) -> None:
    # Given a running async task that swallows asyncio.CancelledError and returns a value later
    started = asyncio.Event()

    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # clean-up that takes a moment, then a value
        return "ran on"

    harness.task(stubborn)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("stubborn"))
    async with asyncio.timeout(BOUND):
        await started.wait()

    # When it is cancelled, it ends CANCELLED, its value dropped: the reply said it was cancelled
    assert coordinator.cancel(record.task_id) == (True, RUNNING)
    done = await harness.final(coordinator, record.task_id)
    assert (done.state, done.error.type, done.result) == (CANCELLED, "TaskCancelled", None)
    assert "caught the cancellation" in done.error.message


@pytest.mark.parametrize("kind", ["sync", "async", "sync after short ones"])
async def test_the_event_stream_sees_a_local_task_running_while_it_runs_and_once(harness: Any, kind: str) -> None:
    # Given a task on the control plane's own slots that runs until released
    if kind.startswith("sync"):
        started, release = blocking_task(harness)
    else:
        started, gate = threading.Event(), asyncio.Event()

        async def block() -> str:
            started.set()
            await gate.wait()
            return "released"

        harness.task(block)
    coordinator = harness.coordinator(local_concurrency=1)
    seen: list[tuple[str, int]] = []
    coordinator.events.subscribe(lambda event: seen.append((event.task.task_id, event.task.state)))
    if kind == "sync after short ones":  # the slots are in use: the loop looks for starts on its own
        harness.task(lambda: None, name="short")
        shorts = [coordinator.submit(harness.spec("short"))[0] for _ in range(20)]
        await until(lambda: all(short.state == SUCCESS for short in shorts))
        assert [state for task_id, state in seen if task_id == shorts[-1].task_id] == [PENDING, RUNNING, SUCCESS]
        assert coordinator.local._watching  # (the path under test: no wake-up of its own for the start)
    record, _ = coordinator.submit(harness.spec("block"))

    # When it runs: the stream says so while it runs (it said so only with its outcome)
    await until(started.is_set)
    await until(lambda: (record.task_id, RUNNING) in seen)
    assert record.state == RUNNING

    # Then, released, it ends; RUNNING was told once
    if kind.startswith("sync"):
        release.set()
    else:
        gate.set()
    await until(lambda: (record.task_id, SUCCESS) in seen)
    assert [state for task_id, state in seen if task_id == record.task_id] == [PENDING, RUNNING, SUCCESS]


async def test_cancelling_a_running_async_task_ends_it_as_cancelled(harness: Any) -> None:
    # Given an async task that is running (and would run for a long time)
    started = asyncio.Event()
    finished_normally: list[bool] = []

    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)
        finished_normally.append(True)

    harness.task(slow)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("slow"))
    async with asyncio.timeout(BOUND):
        await started.wait()
    await asyncio.sleep(0.05)  # well into its run (the just-started case has its own test below)
    assert record.state == RUNNING

    # When it is cancelled
    cancelled, previous = coordinator.cancel(record.task_id)

    # Then the cancel reports it was running, and the task ends as CANCELLED
    assert (cancelled, previous) == (True, RUNNING)
    done = await harness.final(coordinator, record.task_id)
    assert done.state == CANCELLED
    assert done.error is not None and done.error.type == "TaskCancelled"
    assert finished_normally == []
    assert coordinator.counters.cancelled == 1


async def test_a_task_cancelled_before_its_hand_over_reaches_the_loop_never_starts(harness: Any) -> None:
    # Given an async task a slot took (RUNNING) whose hand-over to the loop is still queued
    ran: list[str] = []

    async def slow() -> None:
        ran.append("started")

    harness.task(slow)
    coordinator = harness.coordinator(local_concurrency=0)
    record, _ = coordinator.submit(harness.spec("slow"))
    coordinator.local.concurrency = 1  # let take_local hand out one task, here, on the test's thread
    run = coordinator.take_local()
    assert run is not None and record.state == RUNNING

    # When it is cancelled before the hand-over runs, and then the hand-over runs
    assert coordinator.cancel(record.task_id) == (True, RUNNING)
    coordinator.local._start_on_loop(run)

    # Then it ends CANCELLED and never started
    done = await harness.final(coordinator, record.task_id)
    assert done.state == CANCELLED
    assert ran == []


async def test_a_sync_task_cancelled_after_a_slot_took_it_but_before_it_started_never_runs(harness: Any) -> None:
    # Given a sync task a slot took (RUNNING) but has not started yet
    ran: list[str] = []
    harness.task(lambda: ran.append("ran"), name="never")
    coordinator = harness.coordinator(local_concurrency=0)
    record, _ = coordinator.submit(harness.spec("never"))
    coordinator.local.concurrency = 1  # let take_local hand out one task, here, on the test's thread
    run = coordinator.take_local()
    assert run is not None and record.state == RUNNING

    # When it is cancelled, and then the slot gets to run it (as its thread would)
    assert coordinator.cancel(record.task_id) == (True, RUNNING)
    finished = coordinator.local._run_here(run, run.context, SlotRuns(), None)
    coordinator._release_local_place()
    coordinator.local._report(*finished)

    # Then it ends CANCELLED without running
    assert (await harness.final(coordinator, record.task_id)).state == CANCELLED
    assert ran == []


class SpanRecorder:
    """Stands in for ``tracing.process``: records each run's span and how it was told to end."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.ended: list[tuple[str, ...]] = []

    @contextlib.contextmanager
    def process(self, spec: task_pb2.TaskSpec, attempt: int, worker_id: str, ready_at: float | None = None) -> Any:
        self.opened.append(spec.task_id)
        recorder = self

        class Span:
            def ended(self, *how: str) -> None:
                recorder.ended.append(how)

        yield Span()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Trace the control plane's runs through this recorder (a tracer is configured, as far as runs can tell)."""
        monkeypatch.setattr(local_module.tracing, "tracer", lambda: object())
        monkeypatch.setattr(local_module.tracing, "process", self.process)


async def test_a_sync_task_cancelled_before_its_code_started_still_ends_one_span_cancelled(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a traced control plane, and a sync task a slot took (RUNNING: a client may cancel it now)
    spans = SpanRecorder()
    spans.install(monkeypatch)
    harness.task(lambda: None, name="never")
    coordinator = harness.coordinator(local_concurrency=0)
    record, _ = coordinator.submit(harness.spec("never"))
    coordinator.local.concurrency = 1
    run = coordinator.take_local()
    assert run is not None and record.state == RUNNING

    # When the cancel lands before the task's code starts (here: before the slot registered it)
    assert coordinator.cancel(record.task_id) == (True, RUNNING)
    finished = coordinator.local._run_here(run, run.context, SlotRuns(), None)

    # Then the run still has its span, ended cancelled, as a run cancelled later has
    assert finished[1].error is not None and finished[1].error.type == "TaskCancelled"
    assert spans.opened == [record.task_id]
    assert [how[:2] for how in spans.ended] == [("cancelled", "TaskCancelled")]
    coordinator._release_local_place()
    coordinator.local._report(*finished)


@pytest.mark.parametrize("moment", ["before the hand-over reached the loop", "before its first step on the loop"])
async def test_an_async_task_cancelled_before_its_code_started_still_ends_one_span_cancelled(
    harness: Any, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    # Given a traced control plane, and an async task a slot took (RUNNING: a client may cancel it now)
    spans = SpanRecorder()
    spans.install(monkeypatch)
    ran: list[str] = []

    async def slow() -> None:
        ran.append("started")

    harness.task(slow)
    coordinator = harness.coordinator(local_concurrency=0)
    record, _ = coordinator.submit(harness.spec("slow"))
    coordinator.local.concurrency = 1
    run = coordinator.take_local()
    assert run is not None and record.state == RUNNING

    # When the cancel lands before its coroutine ran a step
    if moment == "before its first step on the loop":
        coordinator.local._start_on_loop(run)
        assert coordinator.cancel(record.task_id) == (True, RUNNING)
    else:
        assert coordinator.cancel(record.task_id) == (True, RUNNING)
        coordinator.local._start_on_loop(run)

    # Then it ends CANCELLED, never ran, and still has its span, ended cancelled
    assert (await harness.final(coordinator, record.task_id)).state == CANCELLED
    assert ran == []
    assert spans.opened == [record.task_id]
    assert [how[:2] for how in spans.ended] == [("cancelled", "TaskCancelled")]


async def test_a_slot_whose_take_failed_frees_its_last_run_s_place_once(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given one slot that ended a run (its place is freed by its next take)
    harness.task(lambda: 1, name="quick")
    coordinator = harness.coordinator(local_concurrency=1)
    first, _ = coordinator.submit(harness.spec("quick"))
    assert (await harness.final(coordinator, first.task_id)).state == SUCCESS

    # When that take fails once (a bug the slot survives), and the slot runs another task
    pop, failed = coordinator.queue.pop, []

    def pop_failing_once(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(True)
            raise RuntimeError("a bug in the take")
        return pop(*args, **kwargs)

    monkeypatch.setattr(coordinator.queue, "pop", pop_failing_once)
    second, _ = coordinator.submit(harness.spec("quick"))
    assert (await harness.final(coordinator, second.task_id)).state == SUCCESS

    # Then the place count is back to none taken (freed twice, it went below zero and stopped bounding runs)
    await until(lambda: coordinator._local_places == 0)
    await asyncio.sleep(0.1)
    assert failed and coordinator._local_places == 0


async def test_runs_stopped_by_the_shutdown_end_their_span_and_log_line_as_such_not_as_cancelled(
    harness: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a traced control plane running an async task on its loop and a sync one on a slot
    spans = SpanRecorder()
    spans.install(monkeypatch)
    loop_started, gate = asyncio.Event(), harness.gate()

    async def slow() -> None:
        loop_started.set()
        await asyncio.sleep(60)

    harness.task(slow)
    harness.task(lambda: gate.wait(10), name="blocked")
    coordinator = harness.coordinator(local_concurrency=2)
    on_loop, _ = coordinator.submit(harness.spec("slow"))
    on_slot, _ = coordinator.submit(harness.spec("blocked"))
    await asyncio.wait_for(loop_started.wait(), BOUND)
    await until(lambda: on_slot.task_id in coordinator.local._sync_runs)

    # When the control plane stops them (its drain timeout passed)
    with caplog.at_level(logging.INFO, logger="fastworker.task"):
        coordinator.local.close(timeout=0.1)
        await asyncio.sleep(0.1)
    gate.set()

    # Then the loop run's span, and both runs' log lines, say the shutdown stopped them (nobody cancelled them)
    assert [how[:2] for how in spans.ended] == [("failure", "ControlPlaneLost")]
    lines = {r.task_id: r.getMessage() for r in caplog.records if r.name == "fastworker.task"}  # type: ignore[attr-defined]
    assert set(lines) == {on_loop.task_id, on_slot.task_id}
    assert all("ControlPlaneLost: stopped as the control plane shut down" in line for line in lines.values()), lines


def interruptible_task(harness: Any, name: str = "spin") -> tuple[threading.Event, list[str]]:
    """Register a sync task that runs Python code until cancelled, recording whether its end ever ran."""
    started, reached = threading.Event(), []

    def spin() -> str:
        started.set()
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            time.sleep(0.005)
        reached.append("the code after the loop")
        return "never cancelled"

    harness.task(spin, name=name)
    return started, reached


async def test_a_running_sync_task_is_interrupted_its_remaining_code_never_runs_and_the_slot_lives_on(
    harness: Any,
) -> None:
    # Given a sync task running Python code on the only slot
    started, reached = interruptible_task(harness)
    harness.task(lambda: "next", name="next")
    coordinator = harness.coordinator(local_concurrency=1)
    record, _ = coordinator.submit(harness.spec("spin"))
    await until(started.is_set)

    # When it is cancelled
    assert coordinator.cancel(record.task_id) == (True, RUNNING)

    # Then it ends CANCELLED, its remaining code never ran, and the slot runs the next task
    done = await harness.final(coordinator, record.task_id)
    assert done.state == CANCELLED
    assert done.error is not None and done.error.type == "TaskCancelled"
    assert reached == []
    following, _ = coordinator.submit(harness.spec("next"))
    assert (await harness.final(coordinator, following.task_id)).state == SUCCESS


@pytest.mark.parametrize("after_catching", ["returns", "raises another error"])
async def test_a_sync_task_that_catches_its_cancel_still_ends_cancelled_and_never_runs_again(
    harness: Any, after_catching: str
) -> None:
    # Given a sync task with retries left, on the only slot, that catches its interrupt (as code
    # catching BaseException does) and then returns, or raises an error of its own
    started, runs = threading.Event(), []

    def stubborn() -> str:
        runs.append("run")
        started.set()
        try:
            while True:
                time.sleep(0.005)
        except TaskInterrupted:
            if after_catching == "raises another error":
                raise RuntimeError("wrapped the interrupt") from None
        return "ran on"

    harness.task(stubborn, name="stubborn", retries=2)
    coordinator = harness.coordinator(local_concurrency=1)
    record, _ = coordinator.submit(harness.spec("stubborn"))
    await until(started.is_set)

    # When it is cancelled
    assert coordinator.cancel(record.task_id) == (True, RUNNING)

    # Then it ends CANCELLED, what it did after the interrupt dropped, and it is not retried
    done = await harness.final(coordinator, record.task_id)
    assert done.state == CANCELLED
    assert done.error is not None and done.error.type == "TaskCancelled"
    assert "caught the interrupt" in done.error.message
    await asyncio.sleep(0.2)
    assert runs == ["run"] and done.attempts == 1


async def test_a_cancelled_sync_run_is_logged_with_the_time_it_ran(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a sync task that has run for 0.3 s on the only slot
    started, _ = interruptible_task(harness)
    coordinator = harness.coordinator(local_concurrency=1)
    record, _ = coordinator.submit(harness.spec("spin"))
    await until(started.is_set)
    await asyncio.sleep(0.3)

    # When it is cancelled
    with caplog.at_level(logging.INFO, logger="fastworker.task"):
        assert coordinator.cancel(record.task_id) == (True, RUNNING)
        await harness.final(coordinator, record.task_id)
        await asyncio.sleep(0.05)

    # Then its log line says how long it ran, as a subworker's does (it said 0.000 s)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "fastworker.task"]
    took = float(line.rsplit("cancelled after ", 1)[1].split(" ")[0])
    assert took >= 0.3, line


async def test_a_cancelled_sync_task_can_clean_up_by_catching_the_public_task_cancelled(harness: Any) -> None:
    # Given a sync task on the only slot that cleans up on fastworker.client.TaskInterrupted
    started, caught = threading.Event(), []

    def tidy() -> str:
        started.set()
        try:
            while True:
                time.sleep(0.005)
        except TaskInterrupted as stop:
            caught.append(stop)
            raise

    harness.task(tidy, name="tidy")
    coordinator = harness.coordinator(local_concurrency=1)
    record, _ = coordinator.submit(harness.spec("tidy"))
    await until(started.is_set)

    # When it is cancelled
    assert coordinator.cancel(record.task_id) == (True, RUNNING)

    # Then what it caught is the TaskCancelled that fastworker.client exports, and it ends CANCELLED
    assert (await harness.final(coordinator, record.task_id)).state == CANCELLED
    assert len(caught) == 1 and type(caught[0]) is TaskCancelled


async def test_a_sync_task_blocked_in_one_call_stops_when_the_call_returns(harness: Any) -> None:
    # Given a sync task blocked in a single C-level wait on the only slot
    after: list[str] = []
    started, release = threading.Event(), harness.gate()

    def block() -> None:
        started.set()
        release.wait(BOUND)
        after.append("ran on")

    harness.task(block, name="block")
    coordinator = harness.coordinator(local_concurrency=1)
    record, _ = coordinator.submit(harness.spec("block"))
    await until(started.is_set)

    # When it is cancelled, it is still running until the call returns
    assert coordinator.cancel(record.task_id) == (True, RUNNING)
    assert record.state == RUNNING
    release.set()

    # Then it ends CANCELLED without running the rest of its code
    assert (await harness.final(coordinator, record.task_id)).state == CANCELLED
    assert after == []


async def test_cancelling_a_pending_task_makes_it_cancelled_and_it_never_runs(harness: Any) -> None:
    # Given a pending task behind a busy slot
    calls: list[str] = []
    harness.task(lambda: calls.append("ran"), name="victim")
    harness.task(lambda: "ok", name="after")
    coordinator = harness.coordinator(local_concurrency=1)
    blocker_id, release = await occupy_the_only_slot(harness, coordinator)
    victim, _ = coordinator.submit(harness.spec("victim"))

    # When it is cancelled
    cancelled, previous = coordinator.cancel(victim.task_id)

    # Then it is CANCELLED at once and leaves the queue
    assert (cancelled, previous) == (True, PENDING)
    assert victim.state == CANCELLED
    assert victim.error is not None and victim.error.type == "TaskCancelled"
    assert len(coordinator.queue) == 0
    assert coordinator.counters.cancelled == 1

    # And when the slot frees up and runs a later task, the cancelled one never ran
    after, _ = coordinator.submit(harness.spec("after"))
    release.set()
    await harness.final(coordinator, blocker_id)
    assert (await harness.final(coordinator, after.task_id)).state == SUCCESS
    assert calls == []
    assert victim.attempts == 0


async def test_cancelling_a_scheduled_task_makes_it_cancelled_and_it_never_runs(harness: Any) -> None:
    calls: list[str] = []
    harness.task(lambda: calls.append("ran"), name="later")
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("later", eta=time.time() + 0.2))
    assert record.state == SCHEDULED

    assert coordinator.cancel(record.task_id) == (True, SCHEDULED)

    assert record.state == CANCELLED
    assert len(coordinator.schedule) == 0
    await asyncio.sleep(0.4)  # past the eta
    assert calls == []
    assert record.state == CANCELLED


async def test_cancelling_a_finished_task_changes_nothing_and_reports_its_final_state(harness: Any) -> None:
    harness.task(lambda: 1, name="one")
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("one"))
    await harness.final(coordinator, record.task_id)

    assert coordinator.cancel(record.task_id) == (False, SUCCESS)

    assert record.state == SUCCESS
    assert coordinator.counters.cancelled == 0


async def test_cancelling_an_unknown_task_is_refused_as_not_found(harness: Any) -> None:
    coordinator = harness.coordinator()

    with pytest.raises(RequestRefused) as caught:
        coordinator.cancel("never-seen")

    assert caught.value.code == error_pb2.ERROR_CODE_TASK_NOT_FOUND


# ----------------------------------------------------------------------------------------------- retry


async def test_retrying_a_failed_task_reruns_it_under_the_same_id_and_attempts_keep_counting(harness: Any) -> None:
    # Given a task that fails on its first execution only
    executions: list[int] = []

    def flaky() -> str:
        executions.append(1)
        if len(executions) == 1:
            raise RuntimeError("first time fails")
        return "second time works"

    harness.task(flaky)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("flaky", task_id="flaky-1"))
    assert (await harness.final(coordinator, "flaky-1")).state == FAILURE
    assert record.attempts == 1

    # When it is retried
    retried = coordinator.retry("flaky-1")

    # Then the same record is re-queued, cleared of its error, and runs again to SUCCESS
    assert retried is record
    assert retried.state in (PENDING, RUNNING, SUCCESS)
    done = await harness.final(coordinator, "flaky-1")
    assert done is record
    assert done.state == SUCCESS
    assert done.error is None
    assert done.result is not None and decode_value(done.result) == "second time works"
    assert done.attempts == 2
    assert len(executions) == 2
    assert coordinator.counters.retried == 1
    assert coordinator.counters.submitted == 1


async def test_a_task_cancelled_while_pending_then_retried_runs_exactly_once(harness: Any) -> None:
    # Given a pending task behind a busy slot, cancelled, then retried before the slot frees up:
    # its first queue entry is still in the queue, next to the new one
    executions: list[str] = []
    harness.task(lambda: executions.append("ran"), name="once")
    coordinator = harness.coordinator(local_concurrency=1)
    blocker_id, release = await occupy_the_only_slot(harness, coordinator)
    record, _ = coordinator.submit(harness.spec("once", task_id="once-1"))
    coordinator.cancel("once-1")
    coordinator.retry("once-1")
    assert record.state == PENDING

    # When the slot frees up
    release.set()
    await harness.final(coordinator, blocker_id)
    done = await harness.final(coordinator, "once-1")

    # Then the task ran once, not twice
    assert done.state == SUCCESS
    await asyncio.sleep(0.05)
    assert executions == ["ran"]
    assert done.attempts == 1
    assert len(coordinator.queue) == 0


async def test_a_task_cancelled_while_scheduled_then_retried_runs_once_even_when_its_old_eta_passes(
    harness: Any,
) -> None:
    # Given a scheduled task, cancelled, then retried (queued at once under the same id)
    executions: list[str] = []
    harness.task(lambda: executions.append("ran"), name="once")
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("once", task_id="sched-1", eta=time.time() + 0.2))
    coordinator.cancel("sched-1")
    coordinator.retry("sched-1")

    # When it has run and its original eta has passed
    assert (await harness.final(coordinator, "sched-1")).state == SUCCESS
    await asyncio.sleep(0.4)

    # Then the stale schedule entry did not run it a second time
    assert executions == ["ran"]
    assert record.attempts == 1
    assert len(coordinator.schedule) == 0


async def test_retrying_a_successful_task_is_refused(harness: Any) -> None:
    harness.task(lambda: 1, name="one")
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("one"))
    await harness.final(coordinator, record.task_id)

    with pytest.raises(RequestRefused) as caught:
        coordinator.retry(record.task_id)

    assert caught.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    assert "SUCCESS" in caught.value.message
    assert record.state == SUCCESS
    assert coordinator.counters.retried == 0


async def test_retrying_a_task_that_is_not_final_or_unknown_is_refused(harness: Any) -> None:
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)
    record, _ = coordinator.submit(harness.spec("noop"))

    with pytest.raises(RequestRefused) as pending:
        coordinator.retry(record.task_id)
    with pytest.raises(RequestRefused) as unknown:
        coordinator.retry("never-seen")

    assert pending.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    assert unknown.value.code == error_pb2.ERROR_CODE_TASK_NOT_FOUND


# ------------------------------------------------------------------------------------------------ wait


async def test_wait_answers_at_once_with_final_and_missing_tasks(harness: Any) -> None:
    harness.task(lambda: 1, name="one")
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("one"))
    await harness.final(coordinator, record.task_id)
    answers: list[tuple[list[Any], list[str], list[str]]] = []

    # When waiting for a final task and an unknown id
    coordinator.wait([record.task_id, "never-seen"], 10.0, lambda f, p, m: answers.append((f, p, m)))

    # Then the callback ran synchronously, before wait returned
    assert answers == [([record], [], ["never-seen"])]


async def test_wait_for_only_unknown_ids_answers_at_once(harness: Any) -> None:
    coordinator = harness.coordinator()
    answers: list[tuple[list[Any], list[str], list[str]]] = []

    coordinator.wait(["a", "b"], 10.0, lambda f, p, m: answers.append((f, p, m)))

    assert answers == [([], [], ["a", "b"])]


async def test_wait_with_a_zero_timeout_answers_at_once_with_pending_ids(harness: Any) -> None:
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)
    record, _ = coordinator.submit(harness.spec("noop"))
    answers: list[tuple[list[Any], list[str], list[str]]] = []

    coordinator.wait([record.task_id], 0.0, lambda f, p, m: answers.append((f, p, m)))

    assert answers == [([], [record.task_id], [])]


async def test_wait_times_out_with_the_ids_still_pending(harness: Any) -> None:
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)
    first, _ = coordinator.submit(harness.spec("noop"))
    second, _ = coordinator.submit(harness.spec("noop"))

    started = time.monotonic()
    finished, pending, missing = await harness.wait(coordinator, [first.task_id, second.task_id], 0.15)

    assert time.monotonic() - started >= 0.14
    assert (finished, pending, missing) == ([], [first.task_id, second.task_id], [])


async def test_a_wait_that_times_out_still_reports_the_ids_that_were_unknown(harness: Any) -> None:
    # Given one pending task and one id the coordinator never saw
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)
    record, _ = coordinator.submit(harness.spec("noop"))

    # When waiting for both until the wait times out
    finished, pending, missing = await harness.wait(coordinator, [record.task_id, "never-seen"], 0.1)

    # Then the reply accounts for every requested id: the unknown one is reported missing
    assert finished == []
    assert pending == [record.task_id]
    assert missing == ["never-seen"]


async def test_a_wait_ends_as_soon_as_any_awaited_task_is_final(harness: Any) -> None:
    # Given one task that will finish and one that never runs (queued behind a busy slot)
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=1)
    blocker_id, release = await occupy_the_only_slot(harness, coordinator)
    stuck, _ = coordinator.submit(harness.spec("noop"))
    coordinator.queue.paused.add(stuck.priority)  # keep it waiting after the blocker ends

    # When waiting for both with a long timeout, and the blocker is released
    waiting = asyncio.ensure_future(harness.wait(coordinator, [blocker_id, stuck.task_id], 20.0))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    started = time.monotonic()
    release.set()
    finished, pending, missing = await waiting

    # Then the wait answers with the finished one well before its timeout
    assert time.monotonic() - started < 5.0
    assert [r.task_id for r in finished] == [blocker_id]
    assert pending == [stuck.task_id]
    assert missing == []


async def test_wait_timeouts_are_capped_at_max_wait(harness: Any) -> None:
    # Given a pending task and a wait asking for far longer than MAX_WAIT
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)
    record, _ = coordinator.submit(harness.spec("noop"))
    loop = asyncio.get_running_loop()

    coordinator.wait([record.task_id], 10_000.0, lambda f, p, m: None)

    # Then the timer is armed for at most MAX_WAIT seconds
    (waiter,) = coordinator.waits._by_task[record.task_id]
    assert waiter.timer is not None
    assert waiter.timer.when() - loop.time() <= MAX_WAIT + 0.5


# ----------------------------------------------------------------------------------------------- eta


async def test_a_task_with_a_future_eta_is_scheduled_then_runs_when_due(harness: Any) -> None:
    harness.task(lambda: "on time", name="later")
    coordinator = harness.coordinator()
    eta = time.time() + 0.3

    record, _ = coordinator.submit(harness.spec("later", eta=eta))

    assert record.state == SCHEDULED
    assert record.eta == eta
    assert len(coordinator.schedule) == 1
    assert len(coordinator.queue) == 0
    done = await harness.final(coordinator, record.task_id)
    assert done.state == SUCCESS
    assert done.started_at >= eta
    assert len(coordinator.schedule) == 0


@pytest.mark.parametrize("backoff", [0.0, 0.4], ids=["retried at once", "retried after a backoff"])
async def test_a_task_that_started_is_retried_past_its_expiry_not_expired(harness: Any, backoff: float) -> None:
    # Given a task with retries whose first attempt fails, and an expiry that passes before its retry starts
    calls: list[int] = []
    release = threading.Event()

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            release.wait(5)  # holds the slot until the expiry has passed
            raise RuntimeError("first attempt fails")
        return "second attempt ok"

    harness.task(flaky, name="flaky", retries=3, retry_backoff=backoff)
    coordinator = harness.coordinator(local_concurrency=1)
    spec = harness.spec("flaky")
    spec.expires = time.time() + 0.2
    record, _ = coordinator.submit(spec)
    await until(lambda: len(calls) == 1)
    await asyncio.sleep(0.3)
    release.set()

    # When it is retried: then its retry runs ("expires" is about starting, and it started)
    done = await harness.final(coordinator, record.task_id)
    assert (done.state, done.attempts, len(calls)) == (SUCCESS, 2, 2)


async def test_a_task_a_slot_marked_expired_cannot_be_retried_until_the_loop_ended_it(harness: Any) -> None:
    # Given a queued task that a slot just took as expired: CANCELLED, its end still on its way to the loop
    harness.task(lambda: "ran", name="job")
    coordinator = harness.coordinator(local_concurrency=0)
    record, _ = coordinator.submit(harness.spec("job"))
    with coordinator.lock:
        coordinator.queue.discard(record)
        record.state = CANCELLED

    # When a client retries it in that moment, then it is refused (queued now, it would be ended, its place leaked)
    with pytest.raises(RequestRefused, match="is ending"):
        coordinator.retry(record.task_id)

    # And once the loop ended it, a retry queues it again, counted once
    coordinator.expire(record)
    assert coordinator.retry(record.task_id).state == PENDING
    assert (len(coordinator.queue), coordinator.active_by_name["job"]) == (1, 1)


async def test_a_task_that_expires_before_its_eta_ends_at_its_expiry_not_when_due(harness: Any) -> None:
    harness.task(lambda: "too late", name="later")
    coordinator = harness.coordinator()
    spec = harness.spec("later", eta=time.time() + 60)
    spec.expires = time.time() + 0.2

    record, _ = coordinator.submit(spec)
    assert record.state == SCHEDULED

    done = await harness.final(coordinator, record.task_id)
    assert (done.state, done.error.type) == (CANCELLED, "Expired")
    assert done.started_at == 0  # it never ran
    assert len(coordinator.schedule) == 0  # no longer counted against --max-queue


@pytest.mark.parametrize("waits", ["in a queue nobody takes from", "in a paused level", "for its dependency"])
async def test_a_task_that_expires_while_it_waits_ends_at_its_expiry_and_frees_its_room_and_key(
    harness: Any, waits: str
) -> None:
    # Given a control plane with room for two waiting tasks, and a task that will wait past its expiry
    harness.task(lambda: "too late", name="later")
    gate = harness.gate()
    harness.task(lambda: gate.wait(BOUND), name="blocker")
    coordinator = harness.coordinator(local_concurrency=0 if waits != "for its dependency" else 1, max_queue=2)
    spec = harness.spec("later", unique_key="nightly")
    spec.expires = time.time() + 0.2
    if waits == "in a paused level":
        coordinator.set_paused(task_pb2.PRIORITY_NORMAL, True)
    elif waits == "for its dependency":
        blocker, _ = coordinator.submit(harness.spec("blocker"))
        spec.dependencies.task_ids.append(blocker.task_id)

    record, _ = coordinator.submit(spec)
    assert not record.is_final

    # When its expiry passes, it ends then, though nothing took it
    done = await harness.final(coordinator, record.task_id)
    assert (done.state, done.error.type, done.attempts) == (CANCELLED, "Expired", 0)
    # Then it holds no room under --max-queue and no uniqueness key any more
    assert len(coordinator.queue) + len(coordinator.graph) == 0
    fresh, duplicate = coordinator.submit(harness.spec("later", unique_key="nightly"))
    assert not duplicate and fresh.task_id != record.task_id
    gate.set()


async def test_a_task_submitted_after_its_expiry_ends_at_once_though_it_waits_for_nothing(harness: Any) -> None:
    harness.task(lambda: "too late", name="later")
    coordinator = harness.coordinator(local_concurrency=0)
    spec = harness.spec("later")
    spec.expires = time.time() - 60

    record, _ = coordinator.submit(spec)

    done = await harness.final(coordinator, record.task_id)
    assert (done.state, done.error.type) == (CANCELLED, "Expired")


async def test_a_task_a_slot_finds_expired_reads_whole_the_moment_it_reads_final(harness: Any) -> None:
    # Given the one slot busy, and a task queued behind it whose expiry passes (on the coordinator's
    # clock only: the expiry watch's loop timer stays far off, so the slot is the one to find it)
    gate = harness.gate()
    harness.task(lambda: gate.wait(BOUND), name="blocker")
    harness.task(lambda: "too late", name="later")
    coordinator = harness.coordinator(local_concurrency=1)
    coordinator.submit(harness.spec("blocker"))
    spec = harness.spec("later")
    spec.expires = time.time() + 60
    record, _ = coordinator.submit(spec)
    coordinator.clock = lambda: time.time() + 120
    seen: list[tuple[int, str | None, bool]] = []
    finish = coordinator.expire

    def expire(expired: TaskRecord) -> None:  # what a wait or a status would read before the loop finishes it
        seen.append((expired.state, expired.error.type if expired.error else None, expired.finished_at > 0))
        finish(expired)

    coordinator.expire = expire  # type: ignore[method-assign]

    # When the slot comes free and takes it
    gate.set()
    done = await harness.final(coordinator, record.task_id)

    # Then it was CANCELLED with its error and end time already, and ends so
    assert seen == [(CANCELLED, "Expired", True)]
    assert (done.state, done.error.type, done.attempts) == (CANCELLED, "Expired", 0)


async def test_a_periodic_run_for_a_slot_still_ahead_is_scheduled_until_it_then_runs(harness: Any) -> None:
    harness.task(lambda: "tick", name="tick")
    coordinator = harness.coordinator(local_concurrency=1)
    slot = time.time() + 0.3

    ahead = coordinator.find(coordinator.submit_periodic("tick", slot) or "")
    due = coordinator.find(coordinator.submit_periodic("tick", time.time() - 1) or "")

    assert ahead is not None and due is not None
    assert (ahead.state, ahead.eta) == (SCHEDULED, slot)
    assert due.state in (PENDING, RUNNING, SUCCESS) and due.eta == 0
    done = await harness.final(coordinator, ahead.task_id)
    assert done.state == SUCCESS and done.started_at >= slot


@pytest.mark.parametrize("policy", ["skip", "run_once"])
async def test_a_periodic_run_the_control_plane_could_only_release_late_is_a_missed_slot_under_skip(
    harness: Any, policy: str
) -> None:
    # Given a periodic run queued ahead of its slot (SCHEDULED until then)
    ran: list[str] = []
    harness.task(lambda: ran.append("ran"), name="tick")
    coordinator = harness.coordinator(local_concurrency=1)
    coordinator.periodic_missed_after = 1.0 if policy == "skip" else None
    slot = time.time() + 0.1
    record = coordinator.find(coordinator.submit_periodic("tick", slot) or "")
    assert record is not None and record.state == SCHEDULED

    # When the control plane stalls past the slot and its grace (its loop blocked, as under SIGSTOP)
    time.sleep(1.4)
    done = await harness.final(coordinator, record.task_id)

    # Then under skip the missed slot does not run late, counted on /metrics; under run_once it runs
    skipped = coordinator.metrics.snapshot()["tick"].periodic_skipped
    if policy == "skip":
        assert (done.state, done.error.type, ran) == (CANCELLED, "Expired", [])
        assert "missed slot" in done.error.message
        assert skipped == {"missed": 1}
    else:
        assert done.state == SUCCESS and ran == ["ran"]
        assert skipped == {}


async def test_a_periodic_run_released_on_time_runs_under_skip(harness: Any) -> None:
    harness.task(lambda: "tick", name="tick")
    coordinator = harness.coordinator(local_concurrency=1)
    coordinator.periodic_missed_after = 1.0
    record = coordinator.find(coordinator.submit_periodic("tick", time.time() + 0.1) or "")
    assert record is not None
    assert (await harness.final(coordinator, record.task_id)).state == SUCCESS


async def test_retrying_a_task_that_expired_runs_it_its_passed_expiry_no_longer_applies(harness: Any) -> None:
    harness.task(lambda: "ran", name="later")
    coordinator = harness.coordinator(local_concurrency=1)
    spec = harness.spec("later", task_id="late-1")
    spec.expires = time.time() - 60
    coordinator.submit(spec)
    assert (await harness.final(coordinator, "late-1")).error.type == "Expired"

    record = coordinator.retry("late-1")

    done = await harness.final(coordinator, "late-1")
    assert (done.state, done.attempts, decode_value(done.result)) == (SUCCESS, 1, "ran")
    assert record.spec.expires == 0  # dropped from what the journal writes too


async def test_retrying_a_cancelled_task_keeps_an_expiry_still_ahead(harness: Any) -> None:
    harness.task(lambda: "ran", name="later")
    coordinator = harness.coordinator(local_concurrency=0)
    spec = harness.spec("later", task_id="soon-1")
    spec.expires = expires = time.time() + 600
    coordinator.submit(spec)
    assert coordinator.cancel("soon-1")[0]

    record = coordinator.retry("soon-1")

    assert (record.state, record.expires, record.spec.expires) == (PENDING, expires, expires)


def test_the_expiry_watch_stays_proportional_to_the_live_tasks() -> None:
    watch = ExpiryWatch()
    live: set[str] = set()
    for i in range(10_000):  # far-off expiries of tasks that end at once: 10,000 entries, 1 live
        live = {f"t{i}"}
        watch.add(f"t{i}", 1e10, live)
    assert len(watch) <= COMPACT_ABOVE + 2
    assert watch.pop_due(2e10)[-1] == "t9999"


async def test_a_task_that_expires_after_its_eta_runs_when_due(harness: Any) -> None:
    harness.task(lambda: "on time", name="later")
    coordinator = harness.coordinator()
    spec = harness.spec("later", eta=time.time() + 0.2)
    spec.expires = time.time() + 60

    record, _ = coordinator.submit(spec)

    done = await harness.final(coordinator, record.task_id)
    assert (done.state, decode_value(done.result)) == (SUCCESS, "on time")


async def test_a_task_with_a_past_eta_is_queued_at_once(harness: Any) -> None:
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)

    record, _ = coordinator.submit(harness.spec("noop", eta=time.time() - 10))

    assert record.state == PENDING
    assert len(coordinator.schedule) == 0


async def test_scheduled_tasks_run_in_eta_order_whatever_the_submit_order(harness: Any) -> None:
    order: list[str] = []
    harness.task(lambda tag: order.append(tag), name="tag")
    coordinator = harness.coordinator(local_concurrency=1)
    now = time.time()

    late, _ = coordinator.submit(harness.spec("tag", "late", eta=now + 0.3))
    early, _ = coordinator.submit(harness.spec("tag", "early", eta=now + 0.1))

    await harness.final(coordinator, late.task_id)
    await harness.final(coordinator, early.task_id)
    assert order == ["early", "late"]


# ------------------------------------------------------------------------------------------- priority


async def test_with_one_slot_a_critical_task_runs_before_every_task_queued_earlier(harness: Any) -> None:
    # Given the only slot busy, and low and normal tasks queued before a critical one
    order: list[str] = []
    harness.task(lambda tag: order.append(tag), name="tag")
    coordinator = harness.coordinator(local_concurrency=1)
    blocker_id, release = await occupy_the_only_slot(harness, coordinator)
    specs = [harness.spec("tag", f"low-{i}", priority=task_pb2.PRIORITY_LOW) for i in range(3)]
    specs.append(harness.spec("tag", "normal", priority=task_pb2.PRIORITY_NORMAL))
    specs.append(harness.spec("tag", "high", priority=task_pb2.PRIORITY_HIGH))
    specs.append(harness.spec("tag", "critical", priority=task_pb2.PRIORITY_CRITICAL))
    for spec in specs:
        coordinator.submit(spec)
    assert coordinator.queue.depth(task_pb2.PRIORITY_LOW) == 3

    # When the slot frees up
    release.set()
    for spec in specs:
        await harness.final(coordinator, spec.task_id)

    # Then they start strictly by priority, FIFO within a level
    assert order == ["critical", "high", "normal", "low-0", "low-1", "low-2"]


# ------------------------------------------------------------------------------------ slots and the loop


class _CountedSleep:
    """The coordinator's ``time`` module, with ``sleep(0)`` counted (the slot's yields of the GIL)."""

    def __init__(self) -> None:
        self.yields = 0

    def sleep(self, seconds: float) -> None:
        if seconds == 0:
            self.yields += 1
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.mark.parametrize("held_for_yields", [3, SLOT_LOCK_YIELDS + 5])
async def test_a_slot_gives_up_the_gil_while_the_lock_is_held_then_blocks_on_it(
    harness: Any, monkeypatch: pytest.MonkeyPatch, held_for_yields: int
) -> None:
    # Given the coordinator's lock held by another thread until the slot yielded a number of times
    coordinator = harness.coordinator(local_concurrency=0)
    counted = _CountedSleep()
    monkeypatch.setattr(coordinator_module, "time", counted)
    held, taken = threading.Event(), threading.Event()

    def holder() -> None:
        with coordinator.lock:
            held.set()
            deadline = time.monotonic() + BOUND
            while counted.yields < min(held_for_yields, SLOT_LOCK_YIELDS) and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.05)  # a slot past its yields blocks meanwhile

    def slot() -> None:
        coordinator._lock_for_slot()
        taken.set()
        coordinator.lock.release()

    holding = threading.Thread(target=holder)
    holding.start()
    assert held.wait(BOUND)

    # When a slot takes the lock
    await asyncio.to_thread(slot)
    holding.join(BOUND)

    # Then it yielded while the holder kept the lock, at most SLOT_LOCK_YIELDS times, and then got it
    assert taken.is_set()
    assert 1 <= counted.yields <= SLOT_LOCK_YIELDS
    if held_for_yields > SLOT_LOCK_YIELDS:
        assert counted.yields == SLOT_LOCK_YIELDS  # then it blocked on the lock instead of spinning on


async def test_outcomes_that_arrive_while_the_loop_delivers_wait_for_the_next_wakeup(harness: Any) -> None:
    # Given two outcomes waiting for the loop, and a slot that adds a third while the loop delivers
    delivered: list[str] = []
    executor = LocalExecutor(
        asyncio.get_running_loop(),
        0,
        lambda ended: None,
        lambda record, outcome, cancelled: on_done(record),
        lambda: None,
    )

    def on_done(record: Any) -> None:
        delivered.append(record)
        if record == "first":
            executor._completed.append(("third", None, False))  # type: ignore[arg-type]

    executor._completed.extend([("first", None, False), ("second", None, False)])  # type: ignore[list-item]

    # When the loop delivers
    executor._deliver_completed()

    # Then it delivered what was there when it began, and leaves the third to the next wake-up (so it
    # serves requests and timers in between, however fast the slots add outcomes)
    assert delivered == ["first", "second"]
    assert [entry[0] for entry in executor._completed] == ["third"]


# ----------------------------------------------------------------------------------------------- drain


async def test_drain_returns_true_once_running_tasks_finish_and_starts_nothing_new(harness: Any) -> None:
    # Given a running task and one queued behind it
    calls: list[str] = []
    harness.task(lambda: calls.append("ran"), name="queued")
    coordinator = harness.coordinator(local_concurrency=1)
    blocker_id, release = await occupy_the_only_slot(harness, coordinator)
    queued, _ = coordinator.submit(harness.spec("queued"))

    # When draining while the running task is released
    draining = asyncio.ensure_future(coordinator.drain(BOUND))
    await asyncio.sleep(0.02)
    assert not draining.done()
    release.set()

    # Then the drain succeeds, the running task finished, and the queued one never started
    assert await draining is True
    assert (await harness.final(coordinator, blocker_id)).state == SUCCESS
    await asyncio.sleep(0.05)
    assert calls == []
    assert queued.state == PENDING


async def test_drain_with_nothing_running_returns_true_at_once(harness: Any) -> None:
    coordinator = harness.coordinator()

    async with asyncio.timeout(1.0):
        assert await coordinator.drain(5.0) is True


async def test_drain_returns_false_when_a_task_is_still_running_at_the_timeout(harness: Any) -> None:
    coordinator = harness.coordinator(local_concurrency=1)
    blocker_id, release = await occupy_the_only_slot(harness, coordinator)

    started = time.monotonic()
    assert await coordinator.drain(0.2) is False
    assert time.monotonic() - started >= 0.19

    # Release the stuck task so its thread exits
    release.set()
    assert (await harness.final(coordinator, blocker_id)).state == SUCCESS


# -------------------------------------------------------------------------------------------- counters


async def test_counters_count_each_outcome(harness: Any) -> None:
    def boom() -> None:
        raise ValueError("boom")

    harness.task(lambda: 1, name="one")
    harness.task(boom)
    coordinator = harness.coordinator(local_concurrency=1)

    ok, _ = coordinator.submit(harness.spec("one"))
    bad, _ = coordinator.submit(harness.spec("boom"))
    await harness.final(coordinator, ok.task_id)
    await harness.final(coordinator, bad.task_id)
    later, _ = coordinator.submit(harness.spec("one", eta=time.time() + 3600))
    coordinator.cancel(later.task_id)
    coordinator.retry(bad.task_id)
    await harness.final(coordinator, bad.task_id)

    c = coordinator.counters
    assert (c.submitted, c.succeeded, c.failed, c.cancelled, c.retried) == (3, 1, 2, 1, 1)
    assert c.executed_locally == 3
    assert c.rejected_frames == 0
    assert coordinator.running == 0


async def test_throughput_is_tasks_finished_per_second_over_the_last_minute(harness: Any) -> None:
    # Given a clock the test controls, starting at t=1000
    now = [1000.0]
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(clock=lambda: now[0])
    assert coordinator.history.throughput(coordinator.clock()) == 0.0

    # When three tasks finish at t=1000
    records = [coordinator.submit(harness.spec("noop"))[0] for _ in range(3)]
    for record in records:
        await harness.final(coordinator, record.task_id)

    # Then ten seconds after start, throughput is 3 over 10 s
    now[0] = 1010.0
    assert coordinator.history.throughput(coordinator.clock()) == pytest.approx(0.3)

    # And the window is at most a minute
    now[0] = 1030.0
    assert coordinator.history.throughput(coordinator.clock()) == pytest.approx(0.1)
    now[0] = 1059.5
    assert coordinator.history.throughput(coordinator.clock()) == pytest.approx(3 / 59.5)

    # And tasks older than a minute no longer count
    now[0] = 1100.0
    assert coordinator.history.throughput(coordinator.clock()) == 0.0


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


async def test_a_queued_task_costs_under_750_bytes_so_100000_fit_in_the_memory_budget(harness: Any) -> None:
    # Given 50,000 trivial tasks as the control plane receives them: parsed from batch frames
    harness.task(lambda x, y: x + y, name="app.add")
    coordinator = harness.coordinator(local_concurrency=0)
    count = 50_000
    frames = [
        client_pb2.SubmitBatchRequest(
            tasks=[harness.spec("app.add", i, i) for i in range(start, start + 1000)]
        ).SerializeToString()
        for start in range(0, count, 1000)
    ]
    gc.collect()
    before = _rss_bytes()  # resident memory, not tracemalloc: protobuf's arenas are not traced
    # When they are queued with no one to run them
    for frame in frames:
        outcomes = coordinator.submit_many(client_pb2.SubmitBatchRequest.FromString(frame).tasks)
        assert not any(isinstance(outcome, RequestRefused) for outcome in outcomes)
    del outcomes
    gc.collect()
    per_task = (_rss_bytes() - before) / count
    # Then each holds its record and encoded spec, not a parsed spec and its batch (about 980 bytes before)
    assert len(coordinator.queue) == count
    assert per_task < 750, f"{per_task:.0f} bytes per queued task"


@pytest.mark.parametrize("task_id", ["a/b", ".", "..", "tab\there", "bell\x07"])
async def test_a_task_id_no_url_or_terminal_can_show_is_refused_naming_it(harness: Any, task_id: str) -> None:
    # The dashboard's /tasks/ID could not reach "a/b" or "..", nor cancel or retry them
    harness.task(lambda: None, name="noop")
    coordinator = harness.coordinator(local_concurrency=0)
    with pytest.raises(RequestRefused, match="task_id must be printable characters without '/'") as refused:
        coordinator.submit(harness.spec("noop", task_id=task_id))
    assert refused.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST
