"""How outcomes reach the control plane when it runs out of work: never stuck behind a held request.

Driven on the worker's own pull loop (no sockets): a stand-in link answers the first work request
with one task and holds every later one, as a control plane with an empty queue does, and records
which message carried each outcome. The tasks are async, so they run on this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from fastworker.client.task import TaskRegistry, task
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import task_pb2, worker_pb2
from fastworker.worker import runtime
from fastworker.worker.runtime import Worker, WorkerSettings, WorkerState


class EmptyingLink:
    """Gives one task to the first work request, then holds requests; records what carried outcomes."""

    def __init__(self) -> None:
        self.instance_id = "instance"
        self.last_contact = time.monotonic()
        #: ("pull" or "report", the task ids of the outcomes it carried), in order.
        self.sent: list[tuple[str, list[str]]] = []
        self.reported = asyncio.Event()

    async def pull(self, worker_id: str, hold: float, outcomes: Any = (), *_: Any, **__: Any) -> worker_pb2.Dispatch:
        self._record("pull", outcomes)
        self.last_contact = time.monotonic()
        if len(self.sent) == 1:
            spec = task_pb2.TaskSpec(task_id="t1", name="pull_path_job", attempt=1, arguments=encode_arguments((), {}))
            return worker_pb2.Dispatch(tasks=[spec], instance_id=self.instance_id)
        await asyncio.Event().wait()  # no more work: held until the test ends
        raise AssertionError("unreachable")

    async def send_results(self, worker_id: str, outcomes: Any, claims: Any = (), **_: Any) -> list[str]:
        self._record("report", outcomes)
        return list(claims)

    def _record(self, kind: str, outcomes: Any) -> None:
        ids = [outcome.task_id for outcome in outcomes]
        self.sent.append((kind, ids))
        if ids:
            self.reported.set()


def running_worker(concurrency: int, *, task_time: float, release: asyncio.Event | None = None) -> Worker:
    registry = TaskRegistry()

    @task(name="pull_path_job")
    async def job() -> str:
        if release is not None:
            await release.wait()
        return "done"

    registry.register(job)
    worker = Worker(WorkerSettings(task_modules=(), concurrency=concurrency, prefetch=4 * concurrency), registry)
    worker.state = WorkerState.RUNNING
    worker._registered.set()
    worker._run_time = task_time  # what recent tasks took (decides prefetch and gathering)
    worker._link = EmptyingLink()  # type: ignore[assignment]
    return worker


async def pull_until_reported(worker: Worker) -> EmptyingLink:
    link: Any = worker._link
    loop = asyncio.ensure_future(worker._pull_loop())
    try:
        async with asyncio.timeout(5):
            await link.reported.wait()
        await asyncio.sleep(0.01)  # anything else it was about to send
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    return link  # type: ignore[no-any-return]


async def test_a_full_worker_reports_at_once_when_the_control_plane_had_no_more_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Concurrency 1: the task fills the only slot, so the next request is a refill; the control plane,
    # which gave one task of the several asked for, holds it. The outcome must not wait for its answer.
    monkeypatch.setattr(runtime, "REFILL_REPORT_DELAY", 60.0)  # waiting for the refill outlasts the bound
    monkeypatch.setattr(runtime, "PULL_GATHER", 0.0)  # no gathering: the refill goes out at once
    worker = running_worker(concurrency=1, task_time=0.001)

    link = await pull_until_reported(worker)

    assert ("report", ["t1"]) in link.sent


async def test_the_next_work_request_carries_a_short_tasks_outcome_when_the_control_plane_had_no_more_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "PULL_GATHER", 30.0)  # a wait for the timer would outlast the bound
    worker = running_worker(concurrency=16, task_time=0.0001)

    link = await pull_until_reported(worker)

    # One message each way per task: the task's answer, then a request with its outcome (held).
    assert link.sent == [("pull", []), ("pull", ["t1"])]


async def test_a_worker_whose_tasks_are_long_asks_for_more_work_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Free slots are not held back waiting for a task that is not expected to end within the window.
    monkeypatch.setattr(runtime, "PULL_GATHER", 30.0)
    release = asyncio.Event()
    worker = running_worker(concurrency=16, task_time=60.0, release=release)
    loop = asyncio.ensure_future(worker._pull_loop())
    link: Any = worker._link
    try:
        async with asyncio.timeout(5):
            while len(link.sent) < 2:
                await asyncio.sleep(0.01)
        assert link.sent == [("pull", []), ("pull", [])]  # asked again while t1 still runs
        assert "t1" in worker._running
    finally:
        release.set()
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_worker_that_starts_draining_while_it_waits_for_its_short_task_asks_for_no_more_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "PULL_GATHER", 0.2)
    release = asyncio.Event()
    worker = running_worker(concurrency=16, task_time=0.0001, release=release)
    link: Any = worker._link
    loop = asyncio.ensure_future(worker._pull_loop())
    try:
        async with asyncio.timeout(5):
            while "t1" not in worker._running:
                await asyncio.sleep(0.01)
        worker.state = WorkerState.DRAINING  # during the wait for t1
        async with asyncio.timeout(5):
            await asyncio.shield(loop)  # the loop ends by itself once the wait is over
        assert link.sent == [("pull", [])]
    finally:
        release.set()
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_run_that_cannot_even_start_is_reported_failed_and_frees_its_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A spec the worker cannot honour (a negative time limit from a hand-made frame made the process
    # pool raise): the run used to die unseen, leaving the task RUNNING and the slot taken for good.
    worker = running_worker(1, task_time=1.0)
    carried: list[worker_pb2.TaskOutcome] = []
    link: Any = worker._link
    recorded = link._record

    def record(kind: str, outcomes: Any) -> None:
        carried.extend(outcomes)
        recorded(kind, outcomes)

    link._record = record

    async def cannot_start(spec: task_pb2.TaskSpec, running: Any) -> Any:
        raise ValueError(f"timeout must be 0 or more seconds, got {-5.0!r}")

    monkeypatch.setattr(worker, "_outcome", cannot_start)
    await pull_until_reported(worker)

    assert [(o.task_id, o.state, o.error.type) for o in carried] == [("t1", task_pb2.TASK_STATE_FAILURE, "ValueError")]
    assert "could not run the task" in carried[0].error.message
    assert worker._running == {} and worker.failed == 1


async def test_a_results_flush_cancelled_as_the_worker_stops_leaves_no_successor_behind() -> None:
    # A refused worker printed "coroutine ... was never awaited" and "Task was destroyed but it is
    # pending" at exit: the cancelled flush spawned another one that the closing loop never ran.
    worker = Worker(WorkerSettings(task_modules=()), TaskRegistry())

    class Hanging:
        instance_id = "instance"

        async def send_results(self, *args: object, **kwargs: object) -> list[str]:
            await asyncio.sleep(3600)
            return []

    worker._link = Hanging()  # type: ignore[assignment]
    # Not registered (refused): the flush waits for a registration, its outcome still queued
    worker._results.append(("instance", worker_pb2.TaskOutcome(task_id="t1")))
    flush = asyncio.create_task(worker._flush_results())
    await asyncio.sleep(0.05)
    flush.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flush
    assert not worker._background  # nothing spawned to run after the loop is gone


class DrainRaceLink(EmptyingLink):
    """Holds the first work request; hearing of the drain, answers it with a task given just before."""

    def __init__(self) -> None:
        super().__init__()
        self.answer: asyncio.Future[worker_pb2.Dispatch] = asyncio.get_running_loop().create_future()
        self.returned: list[str] | None = None

    async def pull(self, worker_id: str, hold: float, outcomes: Any = (), *_: Any, **__: Any) -> worker_pb2.Dispatch:
        self._record("pull", outcomes)
        if len(self.sent) == 1:
            return await self.answer
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def farewell_timeout(self, heartbeat_timeout: float) -> float:
        return 1.0

    def farewell_unanswered(self) -> None:
        raise AssertionError("the drain's heartbeat was answered")

    async def heartbeat(self, beat: Any, timeout: float) -> worker_pb2.Heartbeat:
        spec = task_pb2.TaskSpec(task_id="late", name="pull_path_job", attempt=1, arguments=encode_arguments((), {}))
        self.answer.set_result(worker_pb2.Dispatch(tasks=[spec], instance_id=self.instance_id))
        return worker_pb2.Heartbeat()

    async def deregister(self, worker_id: str, returned: list[str], timeout: float) -> None:
        self.returned = list(returned)


async def test_a_task_whose_answer_lands_after_the_drain_began_goes_back_unstarted_with_the_deregistration() -> None:
    # Given a worker with a work request out (held: the control plane had nothing for it)
    worker = running_worker(concurrency=2, task_time=0.0001)
    link = worker._link = DrainRaceLink()  # type: ignore[assignment]
    loop = asyncio.ensure_future(worker._pull_loop())
    try:
        async with asyncio.timeout(5):
            while not link.sent:
                await asyncio.sleep(0.01)
        # When it drains, and the answer to that request brings a task given to it just before
        async with asyncio.timeout(5):
            await worker._drain()
        # Then that task never starts here: it goes back with the deregistration, unstarted
        assert link.returned == ["late"]
        assert "late" not in worker._running and worker.processed == 0
        assert loop.done()  # the pull loop ended with the answer
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
