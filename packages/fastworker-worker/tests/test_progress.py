"""Progress on its way out of a task: bound around each run, coalesced, rate-limited, last value first.

Behaviour only: a flood of reports becomes a handful of deliveries, and the last value always gets
through (with or before the outcome).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import NoCurrentTask, Progress, report_progress
from fastworker.client.task import TaskFunction, task
from fastworker.protocol.payload import encode_arguments
from fastworker.worker.child import PROGRESS, decode, decode_progress, encode_progress
from fastworker.worker.executor import run_async, run_sync
from fastworker.worker.pool import ProcessPool
from fastworker.worker.progress import (
    REARM_AFTER,
    LatestProgress,
    ProgressPump,
    ProgressRelay,
    Reported,
    SlotProgress,
)

FLOOD = 100_000
TASKS_DIR = str(Path(__file__).parent)


def value(n: int, total: int = FLOOD) -> Progress:
    return Progress(n, total, f"step {n}")


class Deliveries:
    """Collects what a relay delivers, and lets a test wait for a delivery."""

    def __init__(self) -> None:
        self.batches: list[list[Reported]] = []
        self.arrived = asyncio.Event()

    def __call__(self, batch: list[Reported]) -> None:
        self.batches.append(batch)
        self.arrived.set()

    async def next(self) -> list[Reported]:
        await asyncio.wait_for(self.arrived.wait(), timeout=10)
        self.arrived.clear()
        return self.batches[-1]


# ----------------------------------------------------------------------------------------- the relay


async def test_a_flood_on_the_loop_is_delivered_once_with_its_last_value() -> None:
    deliveries = Deliveries()
    relay = ProgressRelay(deliveries)
    sink = relay.sink("t1", 1)
    for n in range(1, FLOOD + 1):
        sink(value(n))
    assert deliveries.batches == []  # nothing is delivered per call
    assert await deliveries.next() == [("t1", 1, value(FLOOD))]
    await asyncio.sleep(0.3)  # longer than an interval: nothing more was pending
    assert len(deliveries.batches) == 1
    assert relay.finish(sink) == value(FLOOD)


async def test_a_flood_from_another_thread_wakes_the_loop_a_few_times_and_ends_on_its_last_value() -> None:
    deliveries = Deliveries()
    relay = ProgressRelay(deliveries, loop=asyncio.get_running_loop())
    sink = relay.sink("t1", 3)

    def flood() -> None:
        for n in range(1, FLOOD + 1):
            sink(value(n))

    await asyncio.to_thread(flood)
    while deliveries.batches[-1:] != [[("t1", 3, value(FLOOD))]]:
        await deliveries.next()
    assert len(deliveries.batches) < 1_000  # not one per call (a few per second of flooding)
    assert all(len(batch) == 1 for batch in deliveries.batches)


async def test_runs_reported_together_are_delivered_in_one_batch() -> None:
    deliveries = Deliveries()
    relay = ProgressRelay(deliveries)
    first, second = relay.sink("a", 1), relay.sink("b", 2)
    first(Progress(1, 2))
    second(Progress(5, None, "counting"))
    first(Progress(2, 2))
    assert await deliveries.next() == [("a", 1, Progress(2, 2)), ("b", 2, Progress(5, None, "counting"))]


async def test_finish_takes_the_last_value_out_of_the_next_delivery() -> None:
    deliveries = Deliveries()
    relay = ProgressRelay(deliveries)
    quiet = relay.sink("quiet", 1)
    assert relay.finish(quiet) is None  # never reported
    sink, other = relay.sink("t1", 1), relay.sink("t2", 1)
    sink(Progress(1, 3))
    sink(Progress(2, 3))
    other(Progress(1, 1))
    assert relay.finish(sink) == Progress(2, 3)  # undelivered: the caller sends it with the outcome
    assert await deliveries.next() == [("t2", 1, Progress(1, 1))]


async def test_a_failing_delivery_is_logged_and_later_ones_still_come(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[list[Reported]] = []
    arrived = asyncio.Event()

    def deliver(batch: list[Reported]) -> None:
        calls.append(batch)
        arrived.set()
        if len(calls) == 1:
            raise RuntimeError("downstream broke")

    relay = ProgressRelay(deliver, interval=0.01)
    sink = relay.sink("t1", 1)
    sink(Progress(1, 2))
    await asyncio.wait_for(arrived.wait(), 10)
    arrived.clear()
    sink(Progress(2, 2))
    await asyncio.wait_for(arrived.wait(), 10)
    assert calls[-1] == [("t1", 1, Progress(2, 2))]
    assert "delivering the progress" in caplog.text


# ----------------------------------------------------------------------------------- the child's pump


class FrozenClock:
    def __call__(self) -> float:
        return 100.0


def test_a_pump_emits_at_most_its_first_and_its_last_value_while_time_stands_still() -> None:
    emitted: list[Progress] = []
    pump = ProgressPump(emitted.append, clock=FrozenClock())
    pump.start_run()
    for n in range(1, FLOOD + 1):
        pump(value(n))
    pump.end_run()
    assert 1 <= len(emitted) <= 2
    assert emitted[-1] == value(FLOOD)  # the last value, written before end_run returned


def test_a_pump_writes_a_held_value_without_waiting_for_the_run_to_end() -> None:
    emitted: list[Progress] = []
    written = threading.Event()

    def emit(progress: Progress) -> None:
        emitted.append(progress)
        written.set()

    pump = ProgressPump(emit)
    pump.start_run()
    pump(Progress(1, 2, "sleeping"))
    assert written.wait(10)
    assert emitted == [Progress(1, 2, "sleeping")]
    pump.end_run()
    assert emitted == [Progress(1, 2, "sleeping")]  # nothing new was held


def test_a_pump_refuses_reports_between_runs() -> None:
    emitted: list[Progress] = []
    pump = ProgressPump(emitted.append, clock=FrozenClock())
    with pytest.raises(NoCurrentTask):
        pump(Progress(1, 1, "before any run"))
    pump.start_run()
    pump.end_run()
    with pytest.raises(NoCurrentTask):
        pump(Progress(9, 9, "late"))
    assert emitted == []


async def test_a_slot_sink_serves_run_after_run_and_refuses_between_runs() -> None:
    deliveries = Deliveries()
    relay = ProgressRelay(deliveries)
    slot = SlotProgress(relay)
    with pytest.raises(NoCurrentTask):
        slot(Progress(1, 2))
    slot.start("t1", 2)
    slot(Progress(1, 2))
    slot.active = False
    assert slot.finish() == Progress(1, 2)  # the last value goes with the outcome
    slot.start("t2", 1)
    slot(Progress(5, 9))
    slot.active = False  # ended without finish (interrupted): the next start drops its value
    slot.start("t3", 1)
    slot(Progress(1, 3))
    assert await deliveries.next() == [("t3", 1, Progress(1, 3))]
    with pytest.raises(NoCurrentTask):
        slot.active = False
        slot(Progress(2, 3))


def test_progress_frames_round_trip_and_refuse_garbage() -> None:
    for progress in (Progress(3, 10, "rendering", reported_at=12.5), Progress(7, None, "")):
        message = decode(encode_progress(progress))
        assert message[0] == PROGRESS
        decoded = decode_progress(message)
        assert decoded == progress and decoded.reported_at == progress.reported_at
    for bad in ([PROGRESS, -1, 10, "", 0.0], [PROGRESS, "3", 10, "", 0.0], [PROGRESS, 3, 10, b"x", 0.0]):
        with pytest.raises(ValueError):
            decode_progress(bad)


# --------------------------------------------------------------------------------------- the executor


def _reporting_sync(done: int) -> int:
    report_progress(done, 10, "sync")
    return done


async def _reporting_async(done: int) -> int:
    report_progress(done, 10, "async")
    return done


SYNC: TaskFunction[Any, Any] = task(name="progress.sync_unit")(_reporting_sync)
ASYNC: TaskFunction[Any, Any] = task(name="progress.async_unit")(_reporting_async)


async def test_run_sync_and_run_async_bind_the_sink_for_the_run_only() -> None:
    sink = LatestProgress()
    assert run_sync(SYNC, (4,), {}, progress=sink).succeeded
    assert sink.value == Progress(4, 10, "sync")
    outcome = await run_async(ASYNC, (6,), {}, progress=sink)
    assert outcome.succeeded and sink.value == Progress(6, 10, "async")
    with pytest.raises(NoCurrentTask):
        report_progress(1, 2)  # unbound again after the runs


def test_a_run_without_a_sink_fails_its_task_with_no_current_task() -> None:
    outcome = run_sync(SYNC, (1,), {})
    assert not outcome.succeeded and outcome.error is not None
    assert outcome.error.type == "NoCurrentTask"


# ------------------------------------------------------------------------------------------- the pool


@pytest.fixture
async def pool() -> Any:
    pool = ProcessPool(1, ["pool_tasks_for_tests"], sys_path=[TASKS_DIR])
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_flood_in_a_child_reaches_the_pool_as_a_few_frames_ending_on_the_last_value(pool: Any) -> None:
    received: list[Progress] = []
    outcome = await pool.run("flood", "pool.progress_flood", encode_arguments((FLOOD,), {}), progress=received.append)
    assert outcome.succeeded, outcome.error
    assert 1 <= len(received) < 1_000
    assert received[-1] == value(FLOOD)  # before the outcome
    assert received[-1].reported_at > 0


async def test_progress_of_a_sleeping_child_arrives_while_it_runs(pool: Any) -> None:
    received: list[Progress] = []
    seen = asyncio.Event()

    def sink(progress: Progress) -> None:
        received.append(progress)
        seen.set()

    run = asyncio.ensure_future(
        pool.run("sleeper", "pool.progress_then_sleep", encode_arguments((60.0,), {}), progress=sink)
    )
    await asyncio.wait_for(seen.wait(), 30)
    assert not run.done()
    assert received == [Progress(1, 2, "sleeping")]
    assert pool.cancel("sleeper")
    outcome = await run
    assert outcome.error is not None and outcome.error.type == "TaskCancelled"


async def test_a_relay_whose_wake_up_was_lost_arms_again() -> None:
    deliveries = Deliveries()
    relay = ProgressRelay(deliveries)
    sink = relay.sink("t1", 1)
    # As if a slot thread was interrupted between arming the relay and scheduling its wake-up.
    relay._armed, relay._armed_at = True, time.monotonic() - 2 * REARM_AFTER
    sink(Progress(1, 2))
    assert await deliveries.next() == [("t1", 1, Progress(1, 2))]


async def test_a_report_from_a_thread_before_the_relay_knows_its_loop_waits_for_the_next_one() -> None:
    deliveries = Deliveries()
    relay = ProgressRelay(deliveries)
    sink = relay.sink("t1", 1)
    await asyncio.to_thread(sink, Progress(1, 3))  # no loop to wake: kept pending
    assert relay.finish(sink) == Progress(1, 3)
    late = relay.sink("t2", 1)
    await asyncio.to_thread(late, Progress(1, 3))
    late(Progress(2, 3))  # from the loop's thread: the relay finds its loop and delivers
    assert await deliveries.next() == [("t2", 1, Progress(2, 3))]
