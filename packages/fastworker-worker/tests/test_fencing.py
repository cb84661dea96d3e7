"""The worker's side of the lease rule: what it holds starts only with a fresh lease and a grant.

Driven on the worker's own state (no sockets): a stand-in for the link says when the control plane
last answered; the tasks are async, so they run on this loop without child processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from fastworker.client.task import TaskRegistry, task
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE
from fastworker.protocol.lease import fence_after
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import task_pb2, worker_pb2
from fastworker.worker import runtime
from fastworker.worker.runtime import Worker, WorkerSettings, WorkerState

HEARTBEAT_TIMEOUT = 5.0


class SilentLink:
    """The part of ControlPlaneLink the fence reads: when the latest answered request was sent."""

    def __init__(self, last_contact: float) -> None:
        self.last_contact = last_contact
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE


@pytest.fixture
def worker() -> Worker:
    registry = TaskRegistry()
    ran: list[str] = []

    @task(name="job")
    async def job(key: str) -> str:
        ran.append(key)
        return key

    registry.register(job)
    worker = Worker(WorkerSettings(task_modules=(), concurrency=1), registry)
    worker.heartbeat_timeout = HEARTBEAT_TIMEOUT
    worker._registered.set()
    worker.ran = ran  # type: ignore[attr-defined]
    return worker


class ClaimingLink(SilentLink):
    """Answers claims at once, granting them all, and records each claim request's task ids."""

    def __init__(self) -> None:
        super().__init__(time.monotonic())
        self.instance_id = "instance"
        self.claims: list[list[str]] = []

    async def send_results(self, worker_id: str, outcomes: Any, claims: Any = (), **_: Any) -> list[str]:
        self.claims.append(list(claims))
        return list(claims)


def busy_worker(concurrency: int, busy: int) -> tuple[Worker, ClaimingLink]:
    """A running worker with ``busy`` of its slots taken by tasks that never end, and a ClaimingLink."""
    worker = Worker(WorkerSettings(task_modules=(), concurrency=concurrency), TaskRegistry())
    worker.heartbeat_timeout = HEARTBEAT_TIMEOUT
    worker._registered.set()
    worker.state = WorkerState.RUNNING
    worker._link = link = ClaimingLink()
    for n in range(busy):
        worker._running[f"busy{n}"] = object()  # type: ignore[assignment]
    return worker, link


def hold(worker: Worker, task_id: str, *, granted: bool) -> None:
    spec = task_pb2.TaskSpec(task_id=task_id, name="job", attempt=1, arguments=encode_arguments((task_id,), {}))
    worker._backlog[task_id] = (spec, "instance")
    if granted:
        worker._granted.add(task_id)


async def test_a_worker_whose_lease_lapsed_starts_nothing_it_holds_until_the_control_plane_answers(
    worker: Any,
) -> None:
    link = SilentLink(time.monotonic() - fence_after(HEARTBEAT_TIMEOUT) - 0.1)
    worker._link = link
    hold(worker, "t1", granted=True)

    worker._start_waiting(claim=False)
    await asyncio.sleep(0.05)
    assert worker.ran == [] and "t1" in worker._backlog  # fenced: held, not started

    link.last_contact = time.monotonic()  # an answer came back
    worker._start_waiting(claim=False)
    await asyncio.sleep(0.05)
    assert worker.ran == ["t1"]


async def test_a_prefetched_task_starts_only_once_granted(worker: Any) -> None:
    worker._link = SilentLink(time.monotonic())
    hold(worker, "t1", granted=False)

    worker._start_waiting(claim=False)
    await asyncio.sleep(0.05)
    assert worker.ran == []

    worker._take_grants(["t1"], ["t1"])
    worker._start_waiting(claim=False)
    await asyncio.sleep(0.05)
    assert worker.ran == ["t1"]


async def test_a_claim_the_control_plane_refuses_drops_the_task_it_took_back(worker: Any) -> None:
    worker._link = SilentLink(time.monotonic())
    hold(worker, "t1", granted=False)
    hold(worker, "t2", granted=False)

    worker._slot_free.clear()  # the pull loop waits: its backlog filled its room
    worker._take_grants(["t1", "t2"], ["t2"])

    assert "t1" not in worker._backlog and worker._granted == {"t2"}
    # Room again: the pull loop asks at once, and its request lists what this worker still holds
    # (a review found a worker paused past its fence waiting for ever, its leases stuck RUNNING)
    assert worker._slot_free.is_set()


async def test_a_task_dispatched_into_a_free_slot_after_the_fence_is_not_started(worker: Any) -> None:
    worker._link = SilentLink(time.monotonic() - HEARTBEAT_TIMEOUT)
    spec = task_pb2.TaskSpec(task_id="late", name="job", attempt=1, arguments=encode_arguments(("late",), {}))

    worker._slot_free.clear()
    worker._start(spec, "instance")
    await asyncio.sleep(0.05)

    assert worker.ran == [] and not worker._running and "late" not in worker._backlog
    assert worker._slot_free.is_set()  # the next work request goes out: it lets the control plane re-queue it


async def test_tasks_arriving_past_the_fence_are_explained_once_a_minute_with_what_to_do(
    worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A link whose round trip exceeds the fence: every answer comes too late (a worker that could
    # start nothing said nothing, or one line per task that read as if it never ran)
    worker._link = SilentLink(time.monotonic() - HEARTBEAT_TIMEOUT)
    with caplog.at_level(logging.WARNING, logger="fastworker.worker.runtime"):
        for n in range(3):
            worker._start(task_pb2.TaskSpec(task_id=f"late{n}", name="job", attempt=1), "instance")
    (line,) = [r.getMessage() for r in caplog.records if "past its fence" in r.getMessage()]
    assert line.startswith("task late0 arrived ") and "raise the control plane's --heartbeat-timeout" in line
    assert worker.ran == []


async def test_a_task_the_control_plane_counts_as_prefetched_waits_for_a_grant_even_with_a_free_slot(
    worker: Any,
) -> None:
    # We finished a task the control plane has not heard of yet: it dispatched the next one as held
    worker._link = SilentLink(time.monotonic())
    spec = task_pb2.TaskSpec(task_id="next", name="job", attempt=1, arguments=encode_arguments(("next",), {}))

    worker._start(spec, "instance", prefetched=True)
    await asyncio.sleep(0.05)
    assert worker.ran == [] and "next" in worker._backlog and "next" not in worker._granted

    worker._take_grants(["next"], ["next"])
    worker._start_waiting(claim=False)
    await asyncio.sleep(0.05)
    assert worker.ran == ["next"]


async def test_a_worker_claims_only_for_its_free_slots_never_ahead(worker: Any) -> None:
    # A granted task counts as running: granted before a slot could start it, it might start here after
    # a cut (before the fence) while the control plane, having lost this worker, runs it elsewhere too.
    worker._link = SilentLink(time.monotonic())
    worker._run_time = 0.001  # short tasks: the worker prefetches
    for n in range(3):
        hold(worker, f"t{n}", granted=False)

    assert worker._claims() == ["t0"]
    worker._granted.add("t0")  # granted, about to start in the free slot
    assert worker._claims() == []


async def test_a_claim_waits_briefly_for_more_slots_while_most_are_busy_then_claims_them_in_one_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "CLAIM_GATHER", 0.2)
    worker, link = busy_worker(concurrency=4, busy=3)
    for n in range(3):
        hold(worker, f"p{n}", granted=False)

    claimer = asyncio.ensure_future(worker._claim())
    await asyncio.sleep(0.05)
    assert link.claims == []  # three of four slots busy: more free any moment, so it waits
    del worker._running["busy0"]  # another slot frees meanwhile

    async with asyncio.timeout(5):
        await claimer
    assert link.claims == [["p0", "p1"]]  # one request for both free slots, never ahead of them


async def test_a_claim_goes_at_once_when_half_the_slots_or_more_are_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "CLAIM_GATHER", 30.0)  # a wait would outlast the test's bound
    worker, link = busy_worker(concurrency=4, busy=2)
    for n in range(3):
        hold(worker, f"p{n}", granted=False)

    async with asyncio.timeout(5):
        await worker._claim()
    assert link.claims == [["p0", "p1"]]


def prefetched_at(worker: Worker, task_id: str, priority: int) -> None:
    """Dispatch a task as prefetched, at a priority (0: none of its own, normal)."""
    spec = task_pb2.TaskSpec(task_id=task_id, name="job", attempt=1, arguments=encode_arguments((task_id,), {}))
    spec.priority = priority  # type: ignore[assignment]
    worker._start(spec, "instance", prefetched=True)


async def test_a_critical_task_prefetched_behind_normal_ones_is_claimed_and_started_first(worker: Any) -> None:
    worker._link = SilentLink(time.monotonic())
    worker._run_time = 0.001
    prefetched_at(worker, "normal-1", 0)
    prefetched_at(worker, "low", task_pb2.PRIORITY_LOW)
    prefetched_at(worker, "critical", task_pb2.PRIORITY_CRITICAL)
    prefetched_at(worker, "normal-2", task_pb2.PRIORITY_NORMAL)

    # The one free slot claims the critical task, not the oldest one
    assert worker._claims() == ["critical"]
    # and with every one granted, they start critical first, then normal in dispatch order, low last
    worker._granted.update(worker._backlog)
    order = worker._by_priority([task_id for task_id in worker._backlog if task_id in worker._granted])
    assert order == ["critical", "normal-1", "normal-2", "low"]
    worker._start_waiting(claim=False)
    await asyncio.sleep(0.05)
    assert worker.ran[0] == "critical"


async def test_a_fresh_registration_stops_the_tasks_running_here_that_the_control_plane_took_back() -> None:
    # A worker paused past its heartbeat timeout comes back: the control plane dropped it, re-ran or
    # failed its running task, and registers it anew (not resumed). The old run must not go on.
    registry = TaskRegistry()
    started, stopped = asyncio.Event(), asyncio.Event()

    @task(name="long_job")
    async def long_job() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise

    registry.register(long_job)
    worker = Worker(WorkerSettings(task_modules=(), concurrency=2), registry)
    worker.heartbeat_timeout = HEARTBEAT_TIMEOUT
    worker._registered.set()
    worker.state = WorkerState.RUNNING

    class RegisteringLink(ClaimingLink):
        async def register(self, request: Any) -> Any:
            return worker_pb2.RegisterReply(accepted=True, resumed=False, instance_id="instance")

    worker._link = RegisteringLink()  # type: ignore[assignment]
    spec = task_pb2.TaskSpec(task_id="t-long", name="long_job", attempt=1, arguments=encode_arguments((), {}))
    worker._start(spec, "instance")
    await asyncio.wait_for(started.wait(), 5)

    assert await worker._register() is True
    await asyncio.wait_for(stopped.wait(), 5)
    await asyncio.sleep(0.05)
    assert "t-long" not in worker._running


async def test_a_restarted_control_plane_adopts_what_runs_here_and_what_waits_for_a_slot_and_the_rest_is_dropped() -> (
    None
):
    # One task runs, one dispatched as running waits here for a slot (granted), one prefetched was
    # never granted, one finished with its outcome undelivered: the new instance adopts all but the
    # prefetched one; that one is dropped, the others report to the new instance
    registry = TaskRegistry()
    release = asyncio.Event()

    @task(name="slow")
    async def slow(key: str) -> str:
        await release.wait()
        return key

    registry.register(slow)
    worker = Worker(WorkerSettings(task_modules=(), concurrency=1), registry)
    worker.heartbeat_timeout = HEARTBEAT_TIMEOUT
    worker._registered.set()
    worker.state = WorkerState.RUNNING
    sent: list[Any] = []

    class RestartedLink(ClaimingLink):
        async def register(self, request: Any) -> Any:
            sent.append(request)
            adopted = [held.task_id for held in request.held]
            return worker_pb2.RegisterReply(accepted=True, resumed=False, instance_id="new", adopted_task_ids=adopted)

    worker._link = RestartedLink()  # type: ignore[assignment]
    spec = lambda task_id: task_pb2.TaskSpec(  # noqa: E731
        task_id=task_id, name="slow", attempt=1, arguments=encode_arguments((task_id,), {})
    )
    worker._start(spec("running"), "old")
    worker._start(spec("granted"), "old")  # the slot is taken: it waits, counted as running there
    worker._start(spec("prefetched"), "old", prefetched=True)
    worker._results.append(("old", worker_pb2.TaskOutcome(task_id="done", attempt=1)))
    worker._unacked["done"] = 1
    await asyncio.sleep(0.05)
    assert set(worker._running) == {"running"} and set(worker._backlog) == {"granted", "prefetched"}

    assert await worker._register() is True

    assert sorted((held.task_id, held.attempt) for held in sent[0].held) == [
        ("done", 1),
        ("granted", 1),
        ("running", 1),
    ]
    assert set(worker._backlog) == {"granted"} and worker._granted == {"granted"}
    assert worker._running["running"].instance == "new" and worker._backlog["granted"][1] == "new"
    assert worker._take_results("new") == [worker_pb2.TaskOutcome(task_id="done", attempt=1)]
    release.set()
    await asyncio.sleep(0.1)
    assert not worker._running and not worker._backlog  # the granted one ran once the slot freed
    assert sorted(report.task_id for _, report in worker._results) == ["granted", "running"]
    assert {given_by for given_by, _ in worker._results} == {"new"}


async def test_a_drain_notice_nobody_answers_does_not_push_the_drain_timeout_back() -> None:
    # The drain notice waited up to 5 s for an answer before the drain timeout (2 s) started to
    # count: running tasks were stopped 5 s after SIGTERM
    registry = TaskRegistry()

    @task(name="forever")
    async def forever() -> None:
        await asyncio.sleep(60)

    registry.register(forever)
    worker = Worker(WorkerSettings(task_modules=(), concurrency=1, drain_timeout=0.3), registry)
    worker.heartbeat_timeout = HEARTBEAT_TIMEOUT
    worker._registered.set()
    worker.state = WorkerState.RUNNING

    class UnansweringLink(ClaimingLink):
        def farewell_timeout(self, heartbeat_timeout: float) -> float:
            return 5.0

        def farewell_unanswered(self) -> None:
            pass

        async def heartbeat(self, beat: Any, *, timeout: float) -> None:
            await asyncio.sleep(timeout)
            raise runtime.ControlPlaneUnavailable("no answer")

        async def deregister(self, worker_id: str, returned: Any, *, timeout: float) -> None:
            return None

    worker._link = UnansweringLink()  # type: ignore[assignment]
    worker._start(task_pb2.TaskSpec(task_id="f", name="forever", attempt=1), "instance")
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await asyncio.wait_for(worker._drain(), 10)
    assert time.monotonic() - started < 2.0
    assert not worker._running


def worker_back_from_old_instance(reply: worker_pb2.RegisterReply, finished: tuple[str, ...]) -> Worker:
    """A running worker holding outcomes of ``finished`` tasks for instance "old", whose next registration gets ``reply``."""
    worker = Worker(WorkerSettings(task_modules=(), concurrency=1), TaskRegistry())
    worker.heartbeat_timeout = HEARTBEAT_TIMEOUT
    worker._registered.set()
    worker.state = WorkerState.RUNNING

    class ReplyingLink(ClaimingLink):
        async def register(self, request: Any) -> Any:
            return reply

    worker._link = ReplyingLink()  # type: ignore[assignment]
    for task_id in finished:
        worker._results.append(("old", worker_pb2.TaskOutcome(task_id=task_id, attempt=1)))
        worker._unacked[task_id] = 1
    return worker


async def test_outcomes_a_restarted_control_plane_did_not_adopt_are_dropped_and_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A worker that came back after the adoption window: the new instance settled its finished
    # tasks already (re-run or failed), so their outcomes are moot; dropping them is logged
    worker = worker_back_from_old_instance(
        worker_pb2.RegisterReply(accepted=True, resumed=False, instance_id="new", adopted_task_ids=["kept"]),
        ("kept", "late-1", "late-2"),
    )

    with caplog.at_level(logging.WARNING, logger="fastworker.worker.runtime"):
        assert await worker._register() is True

    said = [r.getMessage() for r in caplog.records if "dropping the outcomes" in r.getMessage()]
    assert len(said) == 1 and "of 2 finished tasks" in said[0] and "late-1, late-2" in said[0]
    assert [report.task_id for report in worker._take_results("new")] == ["kept"]
    assert "late-1" not in worker._unacked and "late-2" not in worker._unacked


async def test_outcomes_the_restarted_control_plane_had_recorded_already_are_not_called_undeliverable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A rollout with a journal: the old instance took two outcomes, then stopped before it acknowledged
    # them; the new one names them as settled by this worker. Only the third is undeliverable
    worker = worker_back_from_old_instance(
        worker_pb2.RegisterReply(
            accepted=True, resumed=False, instance_id="new", settled_task_ids=["done-1", "done-2"]
        ),
        ("done-1", "done-2", "late"),
    )

    with caplog.at_level(logging.INFO, logger="fastworker.worker.runtime"):
        assert await worker._register() is True

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "dropping the outcomes of 1 finished tasks" in warnings[0] and "late" in warnings[0]
    assert any(
        "2 finished tasks reached control plane new before its restart" in r.getMessage() for r in caplog.records
    )
    assert worker._take_results("new") == [] and not worker._unacked


def test_outcomes_are_taken_as_many_as_fit_one_frame_and_one_too_large_alone_fails_its_task() -> None:
    worker = Worker(WorkerSettings(task_modules=(), concurrency=1), TaskRegistry())
    worker._registered_instance = "cp"
    worker._frame_limit = runtime.FRAME_SLACK + 200_000  # room for 200 kB of outcomes per request
    spawned: list[object] = []
    worker._spawn = lambda coroutine: spawned.append(coroutine.close())  # type: ignore[assignment, method-assign, func-returns-value]

    def outcome(task_id: str, size: int) -> worker_pb2.TaskOutcome:
        report = worker_pb2.TaskOutcome(task_id=task_id, attempt=1, state=task_pb2.TASK_STATE_SUCCESS)
        report.result.data = b"r" * size
        return report

    worker._results = [("cp", outcome(name, 80_000)) for name in ("a", "b", "c")] + [("cp", outcome("huge", 300_000))]

    # A third 80 kB one would not fit: it waits (a report of it is scheduled); the 300 kB one fits no
    # frame at all, so its task fails saying so, and that small failure fits
    first = worker._take_results("cp")
    assert [r.task_id for r in first] == ["a", "b", "huge"]
    assert len(spawned) == 1 and worker._flush_scheduled
    assert [r.task_id for r in worker._take_results("cp", besides=150_000)] == []  # no room beside 150 kB
    assert [r.task_id for r in worker._take_results("cp")] == ["c"]

    huge = first[2]
    assert huge.state == task_pb2.TASK_STATE_FAILURE and not huge.HasField("result")
    assert huge.error.type == "PayloadError" and "does not fit in a frame" in huge.error.message
    assert worker._results == []
