"""Stop orders from the control plane: every cancelled run reports one CANCELLED outcome and frees its slot.

Driven on the worker's own state (no sockets); the tasks are async, so they run on this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import pytest

from fastworker.client.task import TaskRegistry, task
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import task_pb2
from fastworker.worker import runtime
from fastworker.worker.runtime import Worker, WorkerSettings, WorkerState


@pytest.fixture
async def worker() -> Worker:
    registry = TaskRegistry()

    @task(name="orders.quick")
    async def quick() -> str:
        await asyncio.sleep(0.05)
        return "done"

    registry.register(quick)
    worker = Worker(WorkerSettings(task_modules=(), concurrency=2, worker_id="w-orders"), registry)
    worker._progress.attach(asyncio.get_running_loop())
    return worker


def spec() -> task_pb2.TaskSpec:
    return task_pb2.TaskSpec(
        task_id=str(uuid.uuid4()), name="orders.quick", arguments=encode_arguments((), {}), attempt=1
    )


@pytest.mark.parametrize("moment", ["after its first step", "before its first step"])
async def test_a_stop_order_ends_the_run_cancelled_reports_it_once_and_frees_the_slot(
    worker: Worker, moment: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a run the worker just started
    order = spec()
    worker._run(order, "instance")
    if moment == "after its first step":
        await asyncio.sleep(0.01)
    # When the control plane's stop order for it is handled (before its first step: in the same loop turn)
    with caplog.at_level(logging.INFO, logger="fastworker.worker.runtime"):
        worker._cancel_tasks([order.task_id])
    async with asyncio.timeout(5):
        while worker._running:
            await asyncio.sleep(0.01)
    # Then it reported one outcome, CANCELLED, and holds no slot nor any trace of the order
    reported = [(outcome.task_id, outcome.state) for _, outcome in worker._results]
    assert reported == [(order.task_id, task_pb2.TASK_STATE_CANCELLED)]
    assert worker._occupied() == 0
    assert order.task_id not in worker._stopping and order.task_id not in worker._cancelled
    # and its log line carries the task's fields (for a log shipper filtering on task_id)
    (line,) = [r for r in caplog.records if r.getMessage().startswith("cancelling task")]
    assert (line.task_id, line.task_name, line.attempt) == (order.task_id, "orders.quick", 1)  # type: ignore[attr-defined]
    worker._progress.close()


class DrainLink:
    """A link whose control plane does not answer the drain's heartbeat, and takes the farewell."""

    def __init__(self) -> None:
        self.last_contact = time.monotonic()
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self.instance_id = "instance"

    def farewell_timeout(self, heartbeat_timeout: float) -> float:
        return 1.0

    def farewell_unanswered(self) -> None:
        pass

    async def heartbeat(self, beat: Any, *, timeout: float) -> None:
        raise runtime.ControlPlaneUnavailable("no answer")

    async def deregister(self, worker_id: str, returned: Any, *, timeout: float) -> None:
        return None

    async def send_results(self, worker_id: str, outcomes: Any, claims: Any = (), **_: Any) -> list[str]:
        return list(claims)


class SpanRecorder:
    """Stands in for ``tracing.process``: how each run's span was told to end."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, ...]] = []

    @contextlib.contextmanager
    def process(self, spec: task_pb2.TaskSpec, attempt: int, worker_id: str, ready_at: float | None = None) -> Any:
        recorder = self

        class Span:
            def ended(self, *how: str) -> None:
                recorder.ended.append(how)

        yield Span()


async def test_a_run_stopped_at_the_drain_timeout_ends_its_span_and_log_line_with_worker_lost(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a draining worker (0.2 s drain timeout) running a task that does not end by itself
    spans = SpanRecorder()
    monkeypatch.setattr(runtime.tracing, "process", spans.process)
    registry = TaskRegistry()

    @task(name="orders.forever")
    async def forever() -> None:
        await asyncio.sleep(60)

    registry.register(forever)
    worker = Worker(WorkerSettings(task_modules=(), concurrency=1, drain_timeout=0.2), registry)
    worker.heartbeat_timeout = 5.0
    worker._registered.set()
    worker.state = WorkerState.RUNNING
    worker._link = DrainLink()  # type: ignore[assignment]
    spec = task_pb2.TaskSpec(task_id="f", name="orders.forever", arguments=encode_arguments((), {}), attempt=1)
    worker._start(spec, "instance")
    await asyncio.sleep(0.05)

    # When the drain timeout passes
    with caplog.at_level(logging.INFO, logger="fastworker.task"):
        await asyncio.wait_for(worker._drain(), 10)

    # Then its span and its log line say how the control plane ends it: WorkerLost (no retry left: failure)
    assert [how[:2] for how in spans.ended] == [("failure", "WorkerLost")]
    (line,) = [r for r in caplog.records if r.name == "fastworker.task"]
    assert line.task_id == "f" and "WorkerLost" in line.getMessage()  # type: ignore[attr-defined]
