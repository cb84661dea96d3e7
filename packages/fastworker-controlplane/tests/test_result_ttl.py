"""Per-task result expiry: ``@task(result_ttl=...)`` beside the global ``--result-ttl`` and the cache's bounds.

A final task's result is kept for its task's own TTL when the definition in force gives one (the
control plane's own, else the earliest subworker's), else for ``--result-ttl``; the count and byte
bounds (LRU) hold whatever the TTLs; the journal keeps each result's TTL across a restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastworker.controlplane import browse
from fastworker.controlplane.coordinator import Coordinator
from fastworker.controlplane.journal import FINISH, Journal, JournalState
from fastworker.controlplane.records import SUCCESS, ResultCache, TaskRecord
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import task_pb2

GLOBAL = 100.0
#: Bound on every real-time wait, in seconds.
BOUND = 10.0


def finished(task_id: str, finished_at: float = 0.0) -> TaskRecord:
    record = TaskRecord(task_pb2.TaskSpec(task_id=task_id, name="t"), task_pb2.PRIORITY_NORMAL, 0.0)
    record.state = SUCCESS
    record.finished_at = finished_at
    return record


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def listed(coordinator: Coordinator) -> set[str]:
    """The finished task ids an operator's listing shows now (the admin API's ``tasks`` query)."""
    now = coordinator.clock()
    records = browse.known_records(coordinator.active.values(), coordinator.cache, now - coordinator.cache.ttl)
    return {record.task_id for record in records if record.is_final}


# ---------------------------------------------------------------------------------------- the cache


def test_a_record_with_a_shorter_ttl_than_the_global_one_expires_first() -> None:
    cache = ResultCache(max_size=10, ttl=GLOBAL)
    cache.add(finished("plain"), 0.0)
    cache.add(finished("short"), 0.0, 10.0)

    assert cache.get("short", 10.0) is not None  # a TTL is inclusive, as the global one is
    assert cache.peek("short", 10.5) is None
    assert [r.task_id for r in cache.unexpired(10.5)] == ["plain"]
    assert cache.expire(10.5) == 1  # the sweep drops it, and only it
    assert [r.task_id for r in cache] == ["plain"]
    assert cache.get("plain", GLOBAL) is not None
    assert cache.get("plain", GLOBAL + 0.5) is None


def test_a_record_with_a_longer_ttl_than_the_global_one_outlives_it() -> None:
    cache = ResultCache(max_size=10, ttl=GLOBAL)
    cache.add(finished("plain"), 0.0)
    cache.add(finished("long"), 0.0, 10 * GLOBAL)

    assert cache.expire(GLOBAL + 1) == 1  # "plain" only
    assert cache.get("long", GLOBAL + 1) is not None
    assert cache.peek("long", 10 * GLOBAL) is not None
    assert [r.task_id for r in cache.unexpired(5 * GLOBAL)] == ["long"]
    assert cache.get("long", 10 * GLOBAL + 1) is None
    assert len(cache) == 0 and cache.evicted == 2


def test_the_count_bound_evicts_the_least_recently_used_whatever_their_ttls() -> None:
    cache = ResultCache(max_size=3, ttl=GLOBAL)
    for i in range(6):
        cache.add(finished(f"t{i}"), 0.0, 1_000_000.0 if i % 2 else 0.0)

    assert [r.task_id for r in cache] == ["t3", "t4", "t5"]
    assert cache.evicted == 3
    assert cache.ttl_of("t3") == 1_000_000.0 and cache.ttl_of("t4") == GLOBAL
    assert cache.ttl_of("t1") == GLOBAL  # an evicted record's own TTL went with it


def test_the_byte_bound_holds_with_long_ttls_too() -> None:
    cache = ResultCache(100, GLOBAL, max_bytes=2_000)
    for i in range(10):
        cache.add(finished(f"t{i}"), 0.0, 1_000_000.0)
    assert cache.bytes <= 2_000
    assert [r.task_id for r in cache][-1] == "t9"
    assert cache.bytes == sum(len(r.encoded_spec()) + 500 for r in cache)


def test_a_record_kept_again_without_a_ttl_of_its_own_takes_the_global_one() -> None:
    cache = ResultCache(max_size=10, ttl=GLOBAL)
    record = finished("again")
    cache.add(record, 0.0, 5.0)
    cache.remove("again")  # retried by an operator ...
    cache.add(record, 0.0)  # ... and final again under a definition without result_ttl
    assert cache.ttl_of("again") == GLOBAL
    cache.add(record, 0.0, 5.0)
    cache.add(record, 0.0)  # kept again without a remove in between: the same
    assert cache.get("again", 50.0) is record


@pytest.mark.parametrize(
    ("global_ttl", "task_ttls", "interval"),
    [
        (3600.0, (), 60.0),
        (30.0, (), 30.0),
        (3600.0, (5.0, 20.0), 5.0),
        (3600.0, (0.01,), 1.0),  # a tiny TTL of a task does not make the sweep spin
        (0.5, (0.01,), 0.5),  # the global TTL is honoured as before
        (30.0, (7200.0,), 30.0),
    ],
)
def test_the_sweep_runs_as_often_as_the_shortest_ttl_in_use_within_bounds(
    global_ttl: float, task_ttls: tuple[float, ...], interval: float
) -> None:
    cache = ResultCache(max_size=10, ttl=global_ttl)
    for i, ttl in enumerate(task_ttls):
        cache.add(finished(f"t{i}"), 0.0, ttl)
    assert cache.sweep_interval == interval


# ------------------------------------------------------------------------------- the coordinator


async def test_a_local_task_result_ttl_beats_the_global_one_both_ways(harness: Any) -> None:
    harness.task(lambda: "s", name="short", result_ttl=5.0)
    harness.task(lambda: "l", name="long", result_ttl=1_000.0)
    harness.task(lambda: "p", name="plain")
    clock = Clock()
    coordinator = harness.coordinator(local_concurrency=1, result_ttl=GLOBAL, clock=clock)
    ids = {}
    for name in ("short", "long", "plain"):
        record, _ = coordinator.submit(harness.spec(name))
        await harness.final(coordinator, record.task_id)
        ids[name] = record.task_id

    clock.now += 6.0
    assert coordinator.find(ids["short"]) is None  # what a client reads as TaskNotFound
    assert listed(coordinator) == {ids["long"], ids["plain"]}

    clock.now += GLOBAL
    coordinator.cache.expire(clock())  # the periodic sweep
    assert coordinator.find(ids["plain"]) is None
    long = coordinator.find(ids["long"])
    assert long is not None and long.state == SUCCESS
    assert listed(coordinator) == {ids["long"]}

    clock.now += 1_000.0
    assert coordinator.find(ids["long"]) is None


async def test_a_result_ttl_defined_by_a_subworker_applies_to_its_tasks(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    envelope = rig.envelope()
    body = envelope.register
    body.worker_id, body.host, body.pid, body.capacity, body.version = "w1", "h", 1, 2, "0.1.0"
    body.tasks.append(task_pb2.TaskDefinition(name="remote.short", result_ttl=5.0))
    body.tasks.append(task_pb2.TaskDefinition(name="remote.plain"))
    assert rig.send(envelope, 1000).envelope.register_reply.accepted
    rig.pipes["w1"] = 1000
    short, plain = rig.submit("remote.short"), rig.submit("remote.plain")
    pull = rig.pull("w1")
    async with asyncio.timeout(BOUND):
        while not pull.answered:
            await asyncio.sleep(0.002)
    dispatched = pull.tasks
    assert {spec.task_id for spec in dispatched} == {short.task_id, plain.task_id}
    rig.report("w1", *(rig.success(spec, "done") for spec in dispatched))
    assert short.state == plain.state == SUCCESS

    rig.clock.now += 6.0
    assert rig.coordinator.find(short.task_id) is None
    assert rig.coordinator.find(plain.task_id) is plain  # the harness's --result-ttl is an hour


# ----------------------------------------------------------------------------------- the journal


@pytest.fixture
def journals(tmp_path: Path) -> Iterator[Callable[..., Journal]]:
    """Open journals on ``tmp_path/tasks.journal`` (started); all are closed after the test."""
    opened: list[Journal] = []

    def open_journal(**settings: Any) -> Journal:
        journal = Journal(tmp_path / "tasks.journal", **settings)
        opened.append(journal)
        journal.start(asyncio.get_running_loop())
        return journal

    yield open_journal
    for journal in opened:
        journal.close()


async def test_replay_keeps_each_result_for_the_ttl_it_finished_with(harness: Any, journals: Any) -> None:
    harness.task(lambda: "s", name="short", result_ttl=5.0)
    harness.task(lambda: "l", name="long", result_ttl=1_000.0)
    harness.task(lambda: "p", name="plain")
    clock = Clock()
    journal = journals(clock=clock, result_ttl=GLOBAL)
    coordinator = harness.coordinator(local_concurrency=1, result_ttl=GLOBAL, journal=journal, clock=clock)
    ids = {}
    for name in ("short", "long", "plain"):
        record, _ = coordinator.submit(harness.spec(name))
        await harness.final(coordinator, record.task_id)
        ids[name] = record.task_id
    coordinator.close()
    journal.close()

    clock.now += 6.0  # "short" is past its TTL: dropped when the journal is read
    reopened = journals(clock=clock, result_ttl=GLOBAL)
    assert {r.task_id for r in reopened.recovered.records} == {ids["long"], ids["plain"]}
    assert reopened.recovered.result_ttls == {ids["long"]: 1_000.0}

    restored = harness.coordinator(local_concurrency=0, result_ttl=GLOBAL, journal=reopened, clock=clock)
    restored.restore(reopened.recovered)
    clock.now += GLOBAL
    assert restored.find(ids["plain"]) is None
    assert restored.find(ids["long"]) is not None  # beyond the global TTL, as before the restart
    clock.now += 1_000.0
    assert restored.find(ids["long"]) is None


async def test_a_subworker_task_ttl_survives_a_restart_before_any_worker_is_back(harness: Any, journals: Any) -> None:
    clock = Clock()
    journal = journals(clock=clock, result_ttl=GLOBAL)
    spec = task_pb2.TaskSpec(task_id=str(uuid.uuid4()), name="remote.long", arguments=encode_arguments((), {}))
    record = TaskRecord(spec, task_pb2.PRIORITY_NORMAL, clock())
    journal.accepted(record)
    record.state, record.finished_at, record.worker = SUCCESS, clock(), "w1"
    journal.finished(record, 10 * GLOBAL)
    journal.close()

    clock.now += 2 * GLOBAL  # past the global TTL, within the task's
    reopened = journals(clock=clock, result_ttl=GLOBAL)
    restored = harness.coordinator(local_concurrency=0, result_ttl=GLOBAL, journal=reopened, clock=clock)
    restored.restore(reopened.recovered)  # no worker defines "remote.long" yet: the journal knows its TTL
    assert restored.find(spec.task_id) is not None
    assert restored.cache.ttl_of(spec.task_id) == 10 * GLOBAL


def test_finish_records_written_before_per_task_ttls_fold_with_the_global_ttl() -> None:
    state = JournalState()
    state.apply((1, "old", b"", task_pb2.PRIORITY_NORMAL, 0.0, task_pb2.TASK_STATE_PENDING, 0.0))
    state.apply((FINISH, "old", SUCCESS, 1, "controlplane", 1.0, 2.0, None, None))  # nine fields
    assert state.tasks["old"].result_ttl == 0.0
    assert state.prune(2.0 + GLOBAL, GLOBAL, 10) == 0
    assert state.prune(2.0 + GLOBAL + 1, GLOBAL, 10) == 1


def test_a_snapshot_keeps_a_finished_task_ttl() -> None:
    state = JournalState()
    state.apply((1, "t", b"", task_pb2.PRIORITY_NORMAL, 0.0, task_pb2.TASK_STATE_PENDING, 0.0))
    state.apply((FINISH, "t", SUCCESS, 1, "w1", 1.0, 2.0, None, None, 7.5))
    copy = JournalState()
    for record in state.snapshot_records():
        copy.apply(record)
    assert copy.tasks["t"].result_ttl == 7.5
    assert copy.prune(2.0 + 7.5, GLOBAL, 10) == 0
    assert copy.prune(2.0 + 8.0, GLOBAL, 10) == 1
