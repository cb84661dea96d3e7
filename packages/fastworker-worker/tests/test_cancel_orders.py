"""Stop orders from the control plane: every cancelled run reports one CANCELLED outcome and frees its slot.

Driven on the worker's own state (no sockets); the tasks are async, so they run on this loop.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from fastworker.client.task import TaskRegistry, task
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import task_pb2
from fastworker.worker.runtime import Worker, WorkerSettings


@pytest.fixture
async def worker() -> Worker:
    registry = TaskRegistry()

    @task(name="quick")
    async def quick() -> str:
        await asyncio.sleep(0.05)
        return "done"

    registry.register(quick)
    worker = Worker(WorkerSettings(task_modules=(), concurrency=2, worker_id="w-orders"), registry)
    worker._progress.attach(asyncio.get_running_loop())
    return worker


def spec() -> task_pb2.TaskSpec:
    return task_pb2.TaskSpec(task_id=str(uuid.uuid4()), name="quick", arguments=encode_arguments((), {}), attempt=1)


@pytest.mark.parametrize("moment", ["after its first step", "before its first step"])
async def test_a_stop_order_ends_the_run_cancelled_reports_it_once_and_frees_the_slot(
    worker: Worker, moment: str
) -> None:
    # Given a run the worker just started
    order = spec()
    worker._run(order, "instance")
    if moment == "after its first step":
        await asyncio.sleep(0.01)
    # When the control plane's stop order for it is handled (before its first step: in the same loop turn)
    worker._cancel_tasks([order.task_id])
    async with asyncio.timeout(5):
        while worker._running:
            await asyncio.sleep(0.01)
    # Then it reported one outcome, CANCELLED, and holds no slot nor any trace of the order
    reported = [(outcome.task_id, outcome.state) for _, outcome in worker._results]
    assert reported == [(order.task_id, task_pb2.TASK_STATE_CANCELLED)]
    assert worker._occupied() == 0
    assert order.task_id not in worker._stopping and order.task_id not in worker._cancelled
    worker._progress.close()
