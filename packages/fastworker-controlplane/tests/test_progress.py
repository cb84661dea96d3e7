"""Task progress on the control plane: kept per running attempt, published, kept once final, cleared for a retry.

From subworkers it arrives on results messages (each update only against its lease and attempt) and,
the last value, on the outcome; from the control plane's own slots through the local executor's
relay. The eager client keeps it too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from fastworker.client import Progress, TaskState, report_progress
from fastworker.client.task import SyncTaskFunction, TaskOptions, TaskRegistry
from fastworker.controlplane.eager import EagerClient
from fastworker.controlplane.records import RETRYING, RUNNING, SUCCESS
from fastworker.protocol.v1 import events_pb2, task_pb2, worker_pb2

BOUND = 10.0


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while not predicate():
        assert loop.time() < deadline, f"not within {BOUND} s: {what}"
        await asyncio.sleep(0.01)


def wire(done: int, total: int | None, message: str) -> task_pb2.Progress:
    return Progress(done, total, message, reported_at=123.0).to_wire()


def send_progress(rig: Any, worker_id: str, *updates: worker_pb2.TaskProgress) -> None:
    envelope = rig.envelope()
    envelope.results.worker_id = worker_id
    envelope.results.progress.extend(updates)
    assert rig.send(envelope, rig.pipes[worker_id]).envelope.WhichOneof("body") == "ack"


def task_events(coordinator: Any, task_id: str) -> list[events_pb2.Event]:
    events, _ = coordinator.events.read(0, task_ids=[task_id])
    return events


async def dispatched(rig: Any, name: str, *args: Any, **submit: Any) -> tuple[Any, task_pb2.TaskSpec]:
    record = rig.submit(name, *args, **submit)
    pull = rig.pull("w1")
    await until(lambda: pull.answered, "the pull answered")
    (spec,) = pull.tasks
    return record, spec


async def test_a_workers_progress_is_kept_published_and_its_last_value_rides_on_the_outcome(
    harness: Any, dispatch_rig: Any
) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["steps"])
    record, spec = await dispatched(rig, "steps")
    send_progress(
        rig,
        "w1",
        worker_pb2.TaskProgress(task_id=spec.task_id, attempt=spec.attempt, progress=wire(3, 10, "rendering")),
    )
    assert record.state == RUNNING and Progress.from_wire(record.progress) == Progress(3, 10, "rendering")
    info = task_pb2.TaskInfo()
    record.fill_info(info)
    assert Progress.from_wire(info.progress) == Progress(3, 10, "rendering")
    last = task_events(rig.coordinator, record.task_id)[-1]
    assert last.task.state == RUNNING and last.task.progress.message == "rendering"

    outcome = rig.success(spec, "ok")
    outcome.progress.CopyFrom(wire(10, 10, "done"))
    rig.report("w1", outcome)
    done = await harness.final(rig.coordinator, record.task_id)
    assert done.state == SUCCESS and Progress.from_wire(done.progress) == Progress(10, 10, "done")
    final_event = task_events(rig.coordinator, record.task_id)[-1]
    assert final_event.task.state == SUCCESS and final_event.task.progress.done == 10


async def test_progress_of_a_stale_attempt_another_workers_task_or_an_unknown_one_is_ignored(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["steps"])
    rig.register("w2", ["other"])
    record, spec = await dispatched(rig, "steps")
    published = len(task_events(rig.coordinator, record.task_id))
    send_progress(
        rig,
        "w1",
        worker_pb2.TaskProgress(task_id=spec.task_id, attempt=spec.attempt + 1, progress=wire(1, 2, "stale")),
        worker_pb2.TaskProgress(task_id="nobody", attempt=1, progress=wire(1, 2, "unknown")),
    )
    send_progress(
        rig, "w2", worker_pb2.TaskProgress(task_id=spec.task_id, attempt=spec.attempt, progress=wire(1, 2, "w2"))
    )
    assert record.progress is None
    assert len(task_events(rig.coordinator, record.task_id)) == published
    assert rig.coordinator.report_progress(spec.task_id, spec.attempt + 1, wire(1, 2, "stale")) is False


async def test_a_failed_attempt_going_to_retry_starts_without_progress(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", {"flaky": 2})
    record, spec = await dispatched(rig, "flaky")
    send_progress(
        rig, "w1", worker_pb2.TaskProgress(task_id=spec.task_id, attempt=spec.attempt, progress=wire(1, 2, "half"))
    )
    assert record.progress is not None
    failed = rig.failure(spec, "RuntimeError", "boom")
    failed.progress.CopyFrom(wire(1, 2, "half"))
    rig.report("w1", failed)
    assert record.state == RETRYING and record.progress is None


async def test_progress_from_the_control_planes_own_slots_reaches_the_record(harness: Any) -> None:
    gate = harness.gate()
    reached = threading.Event()

    def slow_steps() -> str:
        for done in range(1, 5_001):
            report_progress(done, 10_000, "first half")
        reached.set()
        gate.wait(BOUND)
        report_progress(10_000, 10_000, "done")
        return "ok"

    async def async_steps() -> str:
        report_progress(1, 2, "async half")
        while not gate.is_set():
            await asyncio.sleep(0.01)
        return "ok"

    harness.task(slow_steps)
    harness.task(async_steps)
    coordinator = harness.coordinator(local_concurrency=2)
    sync_record, _ = coordinator.submit(harness.spec("slow_steps"))
    async_record, _ = coordinator.submit(harness.spec("async_steps"))
    await until(lambda: sync_record.progress is not None and sync_record.progress.done == 5_000, "sync progress seen")
    await until(lambda: async_record.progress is not None, "async progress seen")
    assert Progress.from_wire(async_record.progress) == Progress(1, 2, "async half")
    assert sync_record.state == RUNNING
    events = task_events(coordinator, sync_record.task_id)
    assert len(events) < 100  # 5,000 reports: a few events, not one per call
    gate.set()
    done = await harness.final(coordinator, sync_record.task_id)
    assert Progress.from_wire(done.progress) == Progress(10_000, 10_000, "done")
    assert (await harness.final(coordinator, async_record.task_id)).state == SUCCESS


async def test_the_eager_client_keeps_the_last_progress_of_the_last_attempt() -> None:
    registry = TaskRegistry()

    def steps(n: int) -> int:
        for done in range(n + 1):
            report_progress(done, n, "eager")
        return n

    registry.register(SyncTaskFunction(steps, "steps", TaskOptions()))
    client = EagerClient(registry)
    info = await client.status(await client.delay("steps", 4))
    assert info.state is TaskState.SUCCESS and info.progress == Progress(4, 4, "eager")
