"""Named queues: each task waits in one, workers and the control plane's slots serve a list of them.

A task runs only where its queue is served, priorities order tasks within a queue, a deep queue
nobody serves never starves the others, and a queue nobody serves shows its waiting tasks.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from fastworker.controlplane.coordinator import UNSERVABLE_AFTER, RequestRefused
from fastworker.controlplane.queue import SCAN_LIMIT, PriorityQueue
from fastworker.controlplane.records import PENDING, RUNNING, SUCCESS, TaskRecord
from fastworker.protocol.v1 import error_pb2, task_pb2

NORMAL = task_pb2.PRIORITY_NORMAL
HIGH = task_pb2.PRIORITY_HIGH
BOUND = 10.0
_ids = itertools.count(1)


def record(queue: str = "", priority: int = NORMAL, name: str = "t") -> TaskRecord:
    spec = task_pb2.TaskSpec(task_id=f"task-{next(_ids)}", name=name, queue=queue)
    return TaskRecord(spec, priority, 0.0, queue=queue) if queue else TaskRecord(spec, priority, 0.0)


async def settle(turns: int = 5) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], bound: float = BOUND) -> None:
    async with asyncio.timeout(bound):
        while not predicate():
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------ the queue itself


def test_a_task_without_a_queue_waits_in_default() -> None:
    assert record().queue == "default"
    assert record("reports").queue == "reports"


def test_a_consumer_takes_only_from_the_queues_it_serves_by_priority_then_age() -> None:
    queue = PriorityQueue()
    a1, r1, a2 = record("default"), record("reports"), record("default")
    urgent_report = record("reports", HIGH)
    for rec in (a1, r1, a2, urgent_report):
        queue.push(rec)

    assert queue.pop(queues={"default"}) is a1
    assert queue.pop(queues={"default"}) is a2
    assert queue.pop(queues={"default"}) is None
    # Serving both: the higher level first, then the oldest across queues
    queue.push(a3 := record("default"))
    assert queue.pop(queues={"default", "reports"}) is urgent_report
    assert queue.pop(queues={"default", "reports"}) is r1
    assert queue.pop() is a3


def test_a_deep_queue_nobody_serves_does_not_starve_the_others() -> None:
    queue = PriorityQueue()
    for _ in range(SCAN_LIMIT * 3):
        queue.push(record("unserved"))
    served = record("default")
    queue.push(served)

    # A selective pop (as dispatch does) finds it behind 3 x SCAN_LIMIT tasks of another queue
    assert queue.pop(accept=lambda r: r.queue == "default", queues={"default"}) is served
    assert queue.depth(NORMAL) == SCAN_LIMIT * 3


def test_depth_and_oldest_age_are_kept_per_queue_and_names_leave_once_empty() -> None:
    queue = PriorityQueue()
    first = record("reports")
    first.queued_at = 100.0
    queue.push(first)
    queue.push(record("reports"))
    queue.push(record("default", HIGH))

    assert queue.queue_depth("reports", NORMAL) == 2
    assert queue.queue_depth("default", HIGH) == 1
    assert queue.queue_depth("default", NORMAL) == 0
    assert queue.queue_names() == {"reports", "default"}
    assert queue.oldest_age(NORMAL, 160.0, "reports") == 60.0
    assert queue.oldest_age(NORMAL, 160.0, "default") == 0.0

    # A cancelled one leaves the counts at once; popping the rest forgets the name
    queue.discard(first)
    first.state = 99
    assert queue.queue_depth("reports", NORMAL) == 1
    assert queue.pop(queues={"reports"}) is not None
    assert queue.queue_names() == {"default"}
    assert len(queue) == 1


def test_drain_and_take_where_reach_every_queue() -> None:
    queue = PriorityQueue()
    records = [record(name) for name in ("a", "b", "a", "c")]
    for rec in records:
        queue.push(rec)

    taken = queue.take_where(lambda r: r.queue == "a")
    assert taken == [records[0], records[2]]
    assert queue.drain(NORMAL) == [records[1], records[3]]
    assert len(queue) == 0
    assert queue.queue_names() == set()


# ----------------------------------------------------------------------------------- the coordinator


async def test_a_submission_names_its_queue_else_the_task_s_own_else_default(harness: Any) -> None:
    gate = harness.gate()
    harness.task(lambda: gate.wait(BOUND), name="plain")
    harness.task(lambda: gate.wait(BOUND), name="report", queue="reports")
    coordinator = harness.coordinator(local_concurrency=0)

    plain, _ = coordinator.submit(harness.spec("plain"))
    report, _ = coordinator.submit(harness.spec("report"))
    moved = harness.spec("report")
    moved.queue = "urgent"
    urgent, _ = coordinator.submit(moved)

    assert (plain.queue, report.queue, urgent.queue) == ("default", "reports", "urgent")
    # The task's own queue is written into its spec: a journal replay and the task's info keep it
    assert report.spec.queue == "reports"
    info = task_pb2.TaskInfo()
    report.fill_info(info)
    assert info.queue == "reports"


@pytest.mark.parametrize("name", ["", " ", "has space", "-dash-first", "x" * 65, "new\nline"])
async def test_a_bad_queue_name_is_refused_as_an_invalid_request_naming_it(harness: Any, name: str) -> None:
    harness.task(lambda: None, name="plain")
    coordinator = harness.coordinator(local_concurrency=0)
    spec = harness.spec("plain")
    spec.queue = name
    if not name:
        coordinator.submit(spec)  # empty on the wire: the task's own queue
        return
    with pytest.raises(RequestRefused) as refused:
        coordinator.submit(spec)
    assert refused.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    assert "queue name" in str(refused.value)


async def test_the_control_plane_s_slots_run_only_their_queues_and_the_rest_waits_visibly(harness: Any) -> None:
    harness.task(lambda x: x, name="echo")
    coordinator = harness.coordinator(local_concurrency=2, local_queues=("default", "fast"))

    served = [coordinator.submit(harness.spec("echo", n))[0] for n in range(3)]
    fast = harness.spec("echo", "fast")
    fast.queue = "fast"
    fast_record, _ = coordinator.submit(fast)
    waiting = harness.spec("echo", "slow")
    waiting.queue = "reports"
    waiting_record, _ = coordinator.submit(waiting)

    for rec in [*served, fast_record]:
        assert (await harness.final(coordinator, rec.task_id)).state == SUCCESS
    await asyncio.sleep(0.05)
    assert waiting_record.state == PENDING

    levels = {(level.queue, level.level): level for level in coordinator.named_queues(coordinator.clock())}
    assert levels[("reports", NORMAL)].depth == 1
    assert levels[("reports", NORMAL)].servers == 0
    assert levels[("default", NORMAL)].servers == 1
    assert levels[("fast", NORMAL)].depth == 0
    assert [name for name, _level in levels][:4] == ["default"] * 4  # "default" is listed first


# ------------------------------------------------------------------------------------------- dispatch


async def test_each_task_goes_only_to_a_worker_serving_its_queue(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w-default", ["job"], capacity=8)
    rig.register("w-reports", ["job"], capacity=8, queues=("reports",))
    plain = [rig.submit("job", n) for n in range(3)]
    reports = [rig.submit("job", n, queue="reports") for n in range(3)]

    to_default = rig.pull("w-default")
    to_reports = rig.pull("w-reports")
    await settle()

    assert {spec.task_id for spec in to_default.tasks} == {r.task_id for r in plain}
    assert {spec.task_id for spec in to_reports.tasks} == {r.task_id for r in reports}
    assert all(spec.queue == "reports" for spec in to_reports.tasks)
    assert all(r.state == RUNNING for r in plain + reports)


async def test_a_task_of_a_queue_no_worker_serves_waits_until_one_that_serves_it_registers(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    waiting = rig.submit("job", queue="reports")
    idle = rig.pull("w1", hold=0.05)
    await until(lambda: idle.answered)
    assert idle.tasks == []
    assert waiting.state == PENDING
    levels = {(lv.queue, lv.level): lv for lv in rig.coordinator.named_queues(rig.clock())}
    assert (levels[("reports", NORMAL)].depth, levels[("reports", NORMAL)].servers) == (1, 0)

    rig.register("w2", ["job"], queues=("reports", "default"))
    pull = rig.pull("w2")
    await settle()
    assert [spec.task_id for spec in pull.tasks] == [waiting.task_id]


async def test_a_registration_with_a_bad_queue_name_is_refused_naming_it(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    reply = rig.register("w1", ["job"], queues=("good", "bad name")).envelope.register_reply
    assert not reply.accepted
    assert "bad name" in reply.reason
    assert "w1" not in rig.fleet


async def test_the_listing_shows_served_queues_first_and_at_most_a_thousand_queues(harness: Any) -> None:
    harness.task(lambda: None, name="plain")
    coordinator = harness.coordinator(local_concurrency=1, local_queues=("default", "zz-served"))
    for n in range(1005):
        spec = harness.spec("plain")
        spec.queue = f"q{n:04d}"
        coordinator.submit(spec)

    names = list(dict.fromkeys(level.queue for level in coordinator.named_queues(coordinator.clock())))

    assert len(names) == 1000
    assert names[:3] == ["default", "zz-served", "q0000"]  # served ones first, then waiting ones by name
    assert names[-1] == "q0997"


async def test_the_eager_client_records_each_task_s_queue(harness: Any) -> None:
    from fastworker.controlplane.eager import EagerClient

    harness.task(lambda: 1, name="plain")
    harness.task(lambda: 2, name="report", queue="reports")
    eager = EagerClient(registry=harness.registry)

    ids = [
        await eager.delay("plain"),
        await eager.delay("report"),
        await eager.delay("report", queue="urgent"),
    ]

    assert [(await eager.status(tid)).queue for tid in ids] == ["default", "reports", "urgent"]


async def test_a_task_waiting_in_a_served_queue_that_no_server_defines_is_logged_once(
    dispatch_rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker serving "reports" that does not define "job" (another worker does, for "default")
    rig = dispatch_rig()
    rig.register("w-jobs", ["job"])
    rig.register("w-reports", ["report"], queues=("reports",))
    stuck = rig.submit("job", queue="reports")
    served = rig.submit("report", queue="reports")
    coordinator = rig.coordinator

    # When the check runs before and after the task waited its grace
    coordinator.warn_unservable(rig.clock())
    assert "wait in queue" not in caplog.text  # not yet: it has only just been queued
    rig.clock.advance(UNSERVABLE_AFTER + 1)
    coordinator.warn_unservable(rig.clock())
    coordinator.warn_unservable(rig.clock())

    # Then it is logged once, naming the task, the queue and who serves it; the servable one is not
    lines = [r.getMessage() for r in caplog.records if "wait in queue" in r.getMessage()]
    assert lines == [
        "tasks 'job' wait in queue 'reports', which w-reports serve(s), but none of them defines 'job': they wait "
        "until a process that defines it serves that queue (start a worker with its module and --queues reports)"
    ]
    assert (stuck.state, served.state) == (PENDING, PENDING)
