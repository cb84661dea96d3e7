"""The journal records every state change durably, replays it after a stop, and stays proportional to live state.

Most tests drive a real Coordinator (the ``harness`` fixture) with a real Journal in a temporary
directory, close the journal (everything appended is then on disk, as after a crash once the last
batch was synced), open it again and check what comes back. A stop with tasks running is the same
as a crash to the journal: they are still RUNNING in it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastworker.client.envflags import apply_env_defaults
from fastworker.controlplane import cli
from fastworker.controlplane import journal as journal_module
from fastworker.controlplane.adoption import OrphanRun
from fastworker.controlplane.api import ClientApi
from fastworker.controlplane.coordinator import Coordinator, RequestRefused
from fastworker.controlplane.journal import (
    ACCEPT,
    CONTROL_PLANE_LOST,
    FINISH,
    MAGIC,
    RUN,
    Journal,
    JournalCorrupted,
    JournalError,
    JournalState,
    compact,
    fold,
    inspect,
    recover,
)
from fastworker.controlplane.records import (
    CANCELLED,
    FAILURE,
    LOCAL_WORKER_ID,
    PENDING,
    RETRYING,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    TaskRecord,
)
from fastworker.protocol.framing import decode_frame, encode_frame, new_envelope
from fastworker.protocol.payload import decode_value, encode_arguments, encode_value
from fastworker.protocol.v1 import error_pb2, task_pb2

BOUND = 10.0
LOW = task_pb2.PRIORITY_LOW
NORMAL = task_pb2.PRIORITY_NORMAL


async def until(predicate: Callable[[], bool], bound: float = BOUND) -> None:
    """Yield to the loop until predicate() holds (bounded)."""
    async with asyncio.timeout(bound):
        while not predicate():
            await asyncio.sleep(0.002)


@pytest.fixture
def journals(tmp_path: Path) -> Iterator[Callable[..., Journal]]:
    """Open journals on one file (``tmp_path/tasks.journal`` unless ``path=``); all are closed after the test."""
    opened: list[Journal] = []

    def open_journal(path: Path | None = None, *, start: bool = True, **settings: Any) -> Journal:
        journal = Journal(path or tmp_path / "tasks.journal", **settings)
        opened.append(journal)
        if start:
            journal.start(asyncio.get_running_loop())
        return journal

    yield open_journal
    for journal in opened:
        journal.close()


def spec(name: str = "add", *args: Any, **fields: Any) -> task_pb2.TaskSpec:
    return task_pb2.TaskSpec(
        task_id=fields.pop("task_id", str(uuid.uuid4())), name=name, arguments=encode_arguments(args, {}), **fields
    )


def by_id(journal: Journal) -> dict[str, TaskRecord]:
    return {record.task_id: record for record in journal.recovered.records}


def blocking_task(harness: Any, name: str = "block", **options: Any) -> threading.Event:
    """Register a sync task that blocks until the returned gate (released at teardown) is set."""
    release = harness.gate()

    def block() -> str:
        assert release.wait(BOUND), "test never released the blocking task"
        return "released"

    harness.task(block, name=name, **options)
    return release


# ------------------------------------------------------------------------------------- replay


async def test_queued_scheduled_running_and_finished_tasks_come_back_after_a_stop(harness: Any, journals: Any) -> None:
    # Given a coordinator with one slot, a journal, and tasks in every state
    harness.task(lambda x, y: x + y, name="add")
    blocking_task(harness, "block_retry", retries=1)
    blocking_task(harness, "block_once")
    journal = journals()
    coordinator = harness.coordinator(local_concurrency=2, journal=journal)
    done, _ = coordinator.submit(spec("add", 2, 3))
    await harness.final(coordinator, done.task_id)
    retried, _ = coordinator.submit(spec("block_retry"))
    once, _ = coordinator.submit(spec("block_once"))
    await until(lambda: retried.state == RUNNING and once.state == RUNNING)
    queued = [coordinator.submit(spec("add", i, i))[0] for i in range(5)]
    later, _ = coordinator.submit(spec("add", 1, 1, eta=time.time() + 3600))
    coordinator.set_paused(LOW, True)
    cancelled, _ = coordinator.submit(spec("add", 9, 9))
    coordinator.cancel(cancelled.task_id)
    assert [r.state for r in queued] == [PENDING] * 5 and later.state == SCHEDULED

    # When the journal stops with all of that on disk and is opened again
    journal.close()
    reopened = journals(retries_for=lambda name: harness.registry.get(name).options.retries)
    records = by_id(reopened)

    # Then the finished task is back with its result
    assert records[done.task_id].state == SUCCESS
    assert decode_value(records[done.task_id].result) == 5
    assert records[done.task_id].worker == LOCAL_WORKER_ID
    # the running task with a retry left is queued again first, its attempt counted
    assert records[retried.task_id].state == PENDING
    assert records[retried.task_id].attempts == 1
    assert reopened.recovered.records[0].task_id == retried.task_id
    # the running task without retries failed with a clear reason
    lost = records[once.task_id]
    assert lost.state == FAILURE and lost.error is not None
    assert lost.error.type == CONTROL_PLANE_LOST
    assert "no retries left" in lost.error.message and "in the control plane" in lost.error.message
    # queued tasks are queued in their order, the scheduled one keeps its eta, the cancelled one stays cancelled
    order = [r.task_id for r in reopened.recovered.records if r.state == PENDING]
    assert order == [retried.task_id] + [r.task_id for r in queued]
    assert records[later.task_id].state == SCHEDULED and records[later.task_id].eta == later.eta
    assert records[cancelled.task_id].state == CANCELLED
    assert reopened.recovered.paused == {LOW}
    assert (reopened.recovered.requeued, reopened.recovered.lost) == (1, [once.task_id])


async def test_a_restored_coordinator_runs_the_queue_again_and_answers_for_finished_tasks(
    harness: Any, journals: Any
) -> None:
    # Given a journal holding queued tasks, a scheduled one and a result, written by a coordinator with no slots
    harness.task(lambda x, y: x + y, name="add")
    journal = journals()
    first = harness.coordinator(local_concurrency=0, journal=journal)
    queued = [first.submit(spec("add", i, 1))[0] for i in range(20)]
    soon, _ = first.submit(spec("add", 100, 1, eta=time.time() + 0.2))
    first.cancel(queued[0].task_id)
    journal.close()

    # When a coordinator with slots restores it
    reopened = journals()
    second = harness.coordinator(local_concurrency=2, journal=reopened)
    second.restore(reopened.recovered)

    # Then every queued task and the scheduled one run once, and the cancelled one is readable
    for record in [*queued[1:], soon]:
        done = await harness.final(second, record.task_id)
        assert done.state == SUCCESS
        assert done.attempts == 1
    assert second.find(queued[0].task_id).state == CANCELLED
    assert decode_value(second.find(soon.task_id).result) == 101
    # its counters add up: the 20 it took over count as submitted, as their 20 ends count as succeeded
    assert (second.counters.submitted, second.counters.succeeded) == (20, 20)
    # and a resubmission of a known id is a duplicate, not a second run
    _, duplicate = second.submit(spec("add", 5, 1, task_id=queued[5].task_id))
    assert duplicate


async def test_a_restored_coordinator_counts_the_tasks_the_replay_failed_as_its_own_failures(
    harness: Any, journals: Any
) -> None:
    # Given a journal that stopped while a task without retries ran, and one task queued
    harness.task(lambda x, y: x + y, name="add")
    blocking_task(harness, "block_once")
    journal = journals()
    first = harness.coordinator(local_concurrency=1, journal=journal)
    running, _ = first.submit(spec("block_once"))
    await until(lambda: running.state == RUNNING)
    queued, _ = first.submit(spec("add", 1, 1))
    journal.close()

    # When a coordinator restores it and runs the queue
    reopened = journals()
    second = harness.coordinator(local_concurrency=1, journal=reopened)
    second.restore(reopened.recovered)
    await harness.final(second, queued.task_id)

    # Then the lost task is one of its failures, in stats and in /metrics, beside the one it ran
    assert second.find(running.task_id).error.type == CONTROL_PLANE_LOST
    counters = second.counters
    assert (counters.submitted, counters.succeeded, counters.failed) == (2, 1, 1)
    snapshot = second.metrics.snapshot()
    assert snapshot["block_once"].failed == {CONTROL_PLANE_LOST: 1}
    # and /metrics counts both as submitted, as stats does (a failure ratio saw a task never submitted)
    assert (snapshot["block_once"].submitted, snapshot["add"].submitted) == (1, 1)
    assert sum(counts.submitted for counts in snapshot.values()) == counters.submitted


async def test_a_restored_coordinator_counts_the_runs_the_replay_requeued_as_retries(
    harness: Any, journals: Any
) -> None:
    # A task with retries left that ran when the control plane died runs again as attempt 2: a retry
    # in stats and /metrics, as after a lost worker (it counted 0).
    release = blocking_task(harness, "block_retry", retries=1)
    journal = journals()
    first = harness.coordinator(local_concurrency=1, journal=journal)
    running, _ = first.submit(spec("block_retry"))
    await until(lambda: running.state == RUNNING)
    journal.close()

    reopened = journals(retries_for=lambda name: harness.registry.get(name).options.retries)
    second = harness.coordinator(local_concurrency=1, journal=reopened)
    second.restore(reopened.recovered)
    assert reopened.recovered.rerun == [running.task_id]
    release.set()
    final = await harness.final(second, running.task_id)

    assert (final.state, final.attempts) == (SUCCESS, 2)
    assert second.counters.retried == 1
    assert second.metrics.snapshot()["block_retry"].retried == 1


async def test_the_restored_queue_keeps_running_and_its_runs_are_journaled_too(harness: Any, journals: Any) -> None:
    # Given a restored coordinator that ran the recovered tasks
    harness.task(lambda x, y: x + y, name="add")
    journal = journals()
    first = harness.coordinator(local_concurrency=0, journal=journal)
    ids = [first.submit(spec("add", i, 1))[0].task_id for i in range(3)]
    journal.close()
    second_journal = journals()
    second = harness.coordinator(local_concurrency=1, journal=second_journal)
    second.restore(second_journal.recovered)
    for task_id in ids:
        await harness.final(second, task_id)
    second_journal.close()

    # When opened a third time, the results are there and nothing is queued
    third = by_id(journals())
    assert [third[task_id].state for task_id in ids] == [SUCCESS] * 3
    assert [decode_value(third[task_id].result) for task_id in ids] == [1, 2, 3]


async def test_a_task_held_in_a_worker_prefetch_queue_goes_back_without_counting_the_attempt(journals: Any) -> None:
    state = JournalState()
    held = spec("remote")
    state.apply((ACCEPT, held.task_id, held.SerializeToString(), NORMAL, 1.0, PENDING, 0.0))
    state.apply((RUN, held.task_id, 1, "w1", 0.0, True, 0))

    recovered = recover(state, now=10.0, retries_for=lambda name: None)

    (record,) = recovered.records
    assert (record.state, record.attempts, record.worker) == (PENDING, 0, "")
    assert recovered.requeued == 1


@pytest.mark.parametrize(
    ("spec_retries", "journaled", "registered", "attempts", "expected"),
    [
        (None, -1, None, 1, FAILURE),  # unknown default: no retries
        (None, -1, 1, 1, PENDING),  # the registry says one retry
        (None, 2, None, 2, PENDING),  # the worker's definition (journaled at dispatch) allows two
        (None, 2, None, 3, FAILURE),  # ... and both were used
        (1, 0, 0, 1, PENDING),  # the submission's own retries win
        (0, 5, 5, 1, FAILURE),
    ],
)
def test_a_running_task_is_requeued_only_with_retries_left(
    spec_retries: int | None, journaled: int, registered: int | None, attempts: int, expected: int
) -> None:
    task = spec("remote") if spec_retries is None else spec("remote", retries=spec_retries)
    state = JournalState()
    state.apply((ACCEPT, task.task_id, task.SerializeToString(), NORMAL, 1.0, PENDING, 0.0))
    state.apply((RUN, task.task_id, attempts, LOCAL_WORKER_ID, 2.0, False, journaled))

    (record,) = recover(state, now=10.0, retries_for=lambda name: registered).records

    assert record.state == expected
    assert record.attempts == attempts
    if expected == FAILURE:
        assert record.error is not None and record.error.type == CONTROL_PLANE_LOST
        assert "in the control plane" in record.error.message
        assert record.finished_at == 10.0

    # On a subworker, the same task stays RUNNING there for its worker to adopt; the retries it is
    # allowed if nobody does are decided by the same rule.
    other = spec("remote") if spec_retries is None else spec("remote", retries=spec_retries)
    state = JournalState()
    state.apply((ACCEPT, other.task_id, other.SerializeToString(), NORMAL, 1.0, PENDING, 0.0))
    state.apply((RUN, other.task_id, attempts, "w1", 2.0, False, journaled))
    recovered = recover(state, now=10.0, retries_for=lambda name: registered)
    (orphan,) = recovered.records
    assert (orphan.state, orphan.attempts, orphan.worker) == (RUNNING, attempts, "w1")
    allowed = recovered.orphans[other.task_id].retries
    assert (attempts < 1 + allowed) == (expected == PENDING)
    assert state.tasks[other.task_id].state == RUNNING  # the next snapshot keeps it running there


async def test_results_past_the_ttl_or_beyond_the_cache_size_are_dropped_at_open(harness: Any, journals: Any) -> None:
    harness.task(lambda x: x, name="echo")
    now = [1_000_000.0]
    journal = journals(clock=lambda: now[0])
    coordinator = harness.coordinator(local_concurrency=1, journal=journal, clock=lambda: now[0])
    old, _ = coordinator.submit(spec("echo", "old"))
    await harness.final(coordinator, old.task_id)
    now[0] += 100
    recent = []
    for i in range(4):
        record, _ = coordinator.submit(spec("echo", i))
        await harness.final(coordinator, record.task_id)
        recent.append(record.task_id)
        now[0] += 1
    journal.close()

    records = by_id(journals(clock=lambda: now[0], result_ttl=50.0, result_cache_size=3))

    assert set(records) == set(recent[1:])


async def test_periodic_last_runs_and_paused_levels_survive_replay_and_compaction(
    harness: Any, journals: Any, tmp_path: Path
) -> None:
    harness.task(lambda: None, name="tick")
    journal = journals()
    coordinator = harness.coordinator(local_concurrency=1, journal=journal)
    task_id = coordinator.submit_periodic("tick", 1234.5)
    assert task_id is not None
    await harness.final(coordinator, task_id)
    coordinator.set_paused(LOW, True)
    coordinator.set_paused(NORMAL, True)
    coordinator.set_paused(NORMAL, False)
    journal.close()

    # Even after the finished run itself is dropped (TTL), the last run is remembered
    reopened = journals(result_ttl=1e-9)
    assert task_id not in by_id(reopened)
    assert reopened.recovered.last_runs == {"tick": 1234.5}
    assert reopened.recovered.paused == {LOW}
    reopened.close()
    assert inspect(tmp_path / "tasks.journal")["periodic_last_runs"] == {"tick": 1234.5}


def test_a_periodic_run_accepted_but_not_yet_marked_still_counts_as_the_last_run() -> None:
    run = spec("tick")
    run.headers["periodic"] = "2000.000"
    state = JournalState()
    state.apply((ACCEPT, run.task_id, run.SerializeToString(), NORMAL, 1.0, PENDING, 0.0))

    assert recover(state, now=3.0, retries_for=lambda name: None).last_runs == {"tick": 2000.0}


async def test_a_retried_task_comes_back_queued_with_its_attempts(harness: Any, journals: Any) -> None:
    def boom() -> None:
        raise ValueError("nope")

    harness.task(boom, name="boom")
    journal = journals()
    coordinator = harness.coordinator(local_concurrency=1, journal=journal)
    record, _ = coordinator.submit(spec("boom"))
    await harness.final(coordinator, record.task_id)
    coordinator.set_paused(NORMAL, True)  # so that the retry stays queued
    coordinator.retry(record.task_id)
    journal.close()

    again = by_id(journals())[record.task_id]
    assert (again.state, again.attempts, again.result, again.error) == (PENDING, 1, None, None)


async def test_a_failed_attempt_waiting_for_its_retry_comes_back_retrying_with_its_eta(
    harness: Any, journals: Any
) -> None:
    def flaky() -> None:
        raise ConnectionError("down")

    harness.task(flaky, name="flaky", retries=3, retry_backoff=3600.0)
    journal = journals()
    coordinator = harness.coordinator(local_concurrency=1, journal=journal)
    record, _ = coordinator.submit(spec("flaky"))
    await until(lambda: record.state == RETRYING)
    journal.close()

    again = by_id(journals())[record.task_id]
    assert (again.state, again.attempts, again.eta) == (RETRYING, 1, record.eta)
    assert again.error is not None and again.error.type == "ConnectionError"


async def test_the_uniqueness_keys_of_a_waiting_workflow_step_and_a_plain_task_both_come_back_apart(
    harness: Any, journals: Any
) -> None:
    # Given a workflow step waiting with a unique key, and a plain submission of the key (journaled after it)
    harness.task(lambda n: n, name="build", unique=True)
    harness.task(lambda: 7, name="seven")
    journal = journals()
    coordinator = harness.coordinator(local_concurrency=0, journal=journal)
    first, build = spec("seven"), spec("build", 7)
    build.dependencies.task_ids.append(first.task_id)
    (_, step_id), _ = coordinator.submit_workflow("wf", [first, build])
    mine, _ = coordinator.submit(spec("build", 7))
    assert mine.task_id != step_id
    journal.close()

    # When a coordinator restores the journal
    reopened = journals()
    restored = harness.coordinator(local_concurrency=0, journal=reopened)
    restored.restore(reopened.recovered)

    # Then a plain submission of the key is still answered by the plain task, not by the step
    assert restored.submit(spec("build", 7))[0].task_id == mine.task_id
    # and the step holds it too: a workflow step with the key is refused, even once the plain task ended
    restored.cancel(mine.task_id)
    with pytest.raises(RequestRefused, match="a live task holds its uniqueness key"):
        restored.submit_workflow("wf-late", [spec("build", 7)])


async def test_dispatch_to_a_worker_is_journaled_with_the_worker_definition_retries(
    dispatch_rig: Any, journals: Any
) -> None:
    # Given a control plane that knows the task only from a worker (2 retries by its definition)
    rig = dispatch_rig()
    journal = journals()
    rig.coordinator.journal = journal
    rig.register("w1", {"remote": 2}, capacity=1, incarnation="w1-process")
    record = rig.submit("remote")
    prefetched = rig.submit("remote")
    pull = rig.pull("w1")
    await until(lambda: pull.answered)
    assert record.state == RUNNING and record.worker == "w1"
    journal.close()

    # When it comes back, with no worker registered and no local definition, the retry is still
    # known: the running task waits for w1 to adopt it, with the 2 retries its definition gives,
    # and the worker process it went to
    reopened = journals()
    records = by_id(reopened)
    assert (records[record.task_id].state, records[record.task_id].attempts) == (RUNNING, 1)
    assert reopened.recovered.orphans == {record.task_id: OrphanRun(2, "w1-process")}
    assert records[prefetched.task_id].state == PENDING


async def test_a_worker_outcome_is_acknowledged_only_once_the_journal_wrote_it(
    dispatch_rig: Any, journals: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    # Given a task running on w1, its start journaled
    rig = dispatch_rig()
    journal = journals()
    rig.coordinator.journal = journal
    monkeypatch.setattr(journal_module, "WRITE_RETRY_DELAY", 0.01)
    rig.register("w1", ["remote"], capacity=1, incarnation="w1-process")
    record = rig.submit("remote")
    pull = rig.pull("w1")
    await until(lambda: pull.answered)
    (task,) = pull.tasks

    # When it reports the outcome while the disk refuses writes
    real_write = os.write
    monkeypatch.setattr(journal_module.os, "write", no_space)
    ack = rig.report("w1", rig.success(task, 42))
    await asyncio.sleep(0.05)

    # Then the task is done, but the worker is not told so: a crash now would lose the outcome, and
    # it forgets what is acknowledged
    assert record.state == SUCCESS
    assert not ack.answered
    # (while a heartbeat, which acts on nothing journaled, is answered: held, the fleet would fence itself)
    assert rig.heartbeat("w1").answered
    # and it is once the disk took the outcome
    monkeypatch.setattr(journal_module.os, "write", real_write)
    await until(lambda: ack.answered)
    assert ack.envelope.WhichOneof("body") == "ack"
    journal.close()
    finished = fold(tmp_path / "tasks.journal")[0].tasks[record.task_id]  # (the rig's clock is years back)
    assert (finished.state, finished.result) == (SUCCESS, encode_value(42).SerializeToString())


# ------------------------------------------------------------------------------ group commit


async def test_replies_wait_for_the_disk_and_are_released_in_order(journals: Any, monkeypatch: Any) -> None:
    # Given a journal whose fdatasync is slow, counted
    syncs: list[int] = []
    real = os.fdatasync

    def slow_sync(fd: int) -> None:
        time.sleep(0.02)
        syncs.append(fd)
        real(fd)

    journal = journals()
    monkeypatch.setattr(journal_module.os, "fdatasync", slow_sync)
    released: list[int] = []

    # When many records are appended from the loop, each followed by a durability wait
    for i in range(200):
        record = TaskRecord(spec("add", i), NORMAL, 1.0)
        journal.accepted(record)
        journal.after_durable(lambda i=i: released.append(i))
    await until(lambda: len(released) == 200)

    # Then all were released, in order, after fewer syncs than records (group commit)
    assert released == list(range(200))
    assert 1 <= len(syncs) < 200
    assert journal.batches == len(syncs)


async def test_a_reply_waiting_while_a_write_through_is_on_its_way_is_released_by_it(
    journals: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reply held for the disk stayed held for seconds (until the next record): the writer looked
    # while the loop's write-through was writing (an empty buffer, nothing written yet) and slept.
    journal = journals()
    real_write = journal._write_once
    written_through: list[bool] = []

    def write_once_after_the_writer_looked(data: bytes) -> None:
        if threading.current_thread() is threading.main_thread():
            with journal._mutex:
                journal._notify()  # have it look now, as it would when woken by the append meanwhile
            deadline = time.monotonic() + BOUND
            while not journal._idle:  # it found nothing to write and went back to sleep
                assert time.monotonic() < deadline, "the writer never went back to sleep"
                time.sleep(0.001)
            written_through.append(True)
        real_write(data)

    monkeypatch.setattr(journal, "_write_once", write_once_after_the_writer_looked)
    released: list[bool] = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # the three calls below run before the writer thread gets a turn
    try:
        journal.accepted(TaskRecord(spec("add", 1), NORMAL, 1.0))  # a submission, on the loop
        journal.after_durable(lambda: released.append(True))  # its reply waits for the disk
        assert journal.write_through(block=False)  # a dispatch writes the start of a task through
    finally:
        sys.setswitchinterval(switch)

    assert written_through == [True]
    await until(lambda: released == [True])  # with no further record to wake the writer


async def test_a_durability_wait_with_nothing_pending_is_answered_at_once(journals: Any) -> None:
    journal = journals()
    called: list[bool] = []
    journal.after_durable(lambda: called.append(True))
    assert called == [True]


async def test_records_appended_from_many_threads_all_reach_the_disk(journals: Any, tmp_path: Path) -> None:
    journal = journals()
    records = [TaskRecord(spec("add", i), NORMAL, 1.0) for i in range(2000)]

    def append(part: list[TaskRecord]) -> None:
        for record in part:
            journal.accepted(record)

    threads = [threading.Thread(target=append, args=(records[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    journal.close()

    state, info = fold(tmp_path / "tasks.journal")
    assert set(state.tasks) == {r.task_id for r in records}
    assert info.torn_bytes == 0


# ---------------------------------------------------------------------------- file handling


async def test_a_write_cut_short_by_a_crash_is_ignored_and_cut_off(journals: Any, tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "tasks.journal"
    journal = journals()
    record = TaskRecord(spec("add", 1), NORMAL, 1.0)
    journal.accepted(record)
    journal.close()
    with open(path, "ab") as file:
        file.write(b"\x40\x00\x00\x00\x01\x02\x03\x04partial")  # a batch header and part of its payload

    reopened = journals()

    assert list(by_id(reopened)) == [record.task_id]
    assert "unfinished last write" in caplog.text
    reopened.close()
    assert inspect(path)["torn_bytes"] == 0


async def test_a_bad_batch_before_the_end_is_corruption_and_refused(journals: Any, tmp_path: Path) -> None:
    path = tmp_path / "tasks.journal"
    journal = journals()
    for i in range(3):
        journal.accepted(TaskRecord(spec("add", i), NORMAL, 1.0))
        assert await journal.flush()
    journal.close()
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 12] ^= 0xFF  # inside the first batch's payload
    path.write_bytes(bytes(data))

    with pytest.raises(JournalError, match="corrupt batch at offset"):
        Journal(path)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(JournalError, match="not a FastWorker journal"):
        Journal(path)
    assert path.read_text() == "hello\n"


async def test_a_journal_in_use_is_refused_to_a_second_opener(journals: Any, tmp_path: Path) -> None:
    journal = journals()
    with pytest.raises(JournalError, match="in use by another process"):
        Journal(tmp_path / "tasks.journal")
    assert inspect(tmp_path / "tasks.journal")["in_use"]
    journal.close()
    assert not inspect(tmp_path / "tasks.journal")["in_use"]
    journals()  # free again


async def test_an_empty_journal_is_created_with_its_header_readable_by_its_owner_only(
    journals: Any, tmp_path: Path
) -> None:
    journal = journals()
    assert journal.recovered.records == []
    path = tmp_path / "tasks.journal"
    assert path.read_bytes() == MAGIC
    assert path.stat().st_mode & 0o777 == 0o600  # it holds arguments and results


# ------------------------------------------------------------------------------- compaction


async def _finish_many(journal: Journal, count: int) -> tuple[list[str], list[str]]:
    """Accept ``count`` tasks and finish all but every 500th, letting the writer and compactor run; (unfinished, finished) ids."""
    live: list[str] = []
    finished: list[str] = []
    result = encode_value("x" * 100)
    for i in range(count):
        record = TaskRecord(spec("add", i), NORMAL, float(i))
        journal.accepted(record)
        if i % 500 == 0:
            live.append(record.task_id)
            continue
        record.state, record.result, record.finished_at = SUCCESS, result, time.time()
        journal.finished(record)
        finished.append(record.task_id)
        if i % 100 == 0:
            await asyncio.sleep(0.001)  # let the writer and the compactor run
    return live, finished


async def test_online_compaction_keeps_the_file_proportional_to_live_state_and_loses_nothing(
    journals: Any, tmp_path: Path
) -> None:
    # Given a journal that compacts beyond 64 KiB, keeping at most 50 results
    path = tmp_path / "tasks.journal"
    journal = journals(compact_min_bytes=64 * 1024, compact_ratio=2.0, result_cache_size=50)

    # When thousands of tasks are accepted and finished, a few left unfinished, while the file is compacted
    live, finished = await _finish_many(journal, 6000)
    assert await journal.flush()
    # A compaction that lagged behind the writes (a busy machine) leaves a long tail, and the next one
    # waits for more writes: a few tiny ones, until both happened (bounded)
    deadline = time.monotonic() + 20
    while (journal.compactions < 2 or journal.size >= 1_000_000) and time.monotonic() < deadline:
        journal.paused(NORMAL, False)
        await asyncio.sleep(0.05)
    assert journal.compactions >= 2
    size = journal.size
    journal.close()

    # Then the file is a small fraction of what was written, and replay finds every live task and the newest results
    assert size < 1_000_000
    assert path.stat().st_size < 1_000_000
    records = by_id(journals(result_cache_size=50))
    assert [task_id for task_id in records if records[task_id].state == PENDING] == live
    kept = [task_id for task_id in records if records[task_id].state == SUCCESS]
    assert kept == finished[-50:]


@pytest.mark.parametrize("stale_after", [0.5, 3600.0], ids=["stale snapshot", "fresh snapshot"])
async def test_a_journal_left_at_its_peak_by_load_that_stopped_is_compacted_once_its_snapshot_is_stale(
    journals: Any, tmp_path: Path, stale_after: float
) -> None:
    # Given a journal that starts with a backlog of 2,000 queued tasks in its snapshot, whose growth
    # rule cannot fire here (1,000 times that snapshot), keeping at most 20 results
    path = tmp_path / "tasks.journal"
    first = journals()
    backlog = [TaskRecord(spec("add", i, "y" * 200), NORMAL, float(i)) for i in range(2000)]
    for record in backlog:
        first.accepted(record)
    first.close()
    journal = journals(
        compact_min_bytes=64 * 1024, compact_ratio=1000.0, compact_stale_after=stale_after, result_cache_size=20
    )
    start = journal.size
    assert start > 64 * 1024

    # When that backlog and a burst of new tasks finish, then nothing more is written (an idle control plane)
    result = encode_value("x" * 100)
    for record in backlog:
        record.state, record.result, record.finished_at = SUCCESS, result, time.time()
        journal.finished(record)
    live, finished = await _finish_many(journal, 3000)
    assert await journal.flush()
    peak = journal.size
    assert peak > 2 * start
    await asyncio.sleep(1.5)

    if stale_after > 10:
        # Then with a fresh snapshot nothing is compacted: the age rule decided, not the growth
        assert journal.compactions == 0 and journal.size == peak
        return
    # Then once the snapshot is stale, the idle file shrinks to its live state, and replay loses nothing
    await until(lambda: journal.compactions >= 1)
    assert journal.size < start / 4
    journal.close()
    assert path.stat().st_size < start / 4
    records = by_id(journals(result_cache_size=20))
    assert [task_id for task_id in records if records[task_id].state == PENDING] == live
    assert [task_id for task_id in records if records[task_id].state == SUCCESS] == finished[-20:]


async def test_offline_compact_keeps_running_tasks_running_and_drops_expired_results(
    harness: Any, journals: Any, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.journal"
    journal = journals()
    running = TaskRecord(spec("remote"), NORMAL, 1.0)
    journal.accepted(running)
    running.state, running.attempts, running.worker, running.started_at = RUNNING, 1, "w1", 2.0
    journal.running(running)
    for i in range(50):
        old = TaskRecord(spec("add", i), NORMAL, 1.0)
        journal.accepted(old)
        old.state, old.finished_at, old.result = SUCCESS, 5.0, encode_value(i)
        journal.finished(old)
    journal.close()
    before = inspect(path)
    assert before["tasks_by_state"] == {"RUNNING": 1, "SUCCESS": 50}
    assert before["records_by_kind"] == {"accept": 51, "run": 1, "finish": 50}

    size_before, size_after = compact(path, result_ttl=60.0)

    after = inspect(path)
    assert size_after < size_before == before["size_bytes"]
    assert after["tasks_by_state"] == {"RUNNING": 1}
    assert after["records_by_kind"] == {"task": 1}


async def test_compact_refuses_a_journal_in_use(journals: Any, tmp_path: Path) -> None:
    journals()
    with pytest.raises(JournalError, match="in use"):
        compact(tmp_path / "tasks.journal")


# --------------------------------------------------------------------------------- no journal


async def test_without_a_journal_the_coordinator_records_nothing(harness: Any, tmp_path: Path) -> None:
    harness.task(lambda x, y: x + y, name="add")
    coordinator: Coordinator = harness.coordinator(local_concurrency=1)
    record, _ = coordinator.submit(spec("add", 1, 2))
    await harness.final(coordinator, record.task_id)
    assert coordinator.journal is None
    assert list(tmp_path.iterdir()) == []


async def test_a_finish_record_for_a_task_the_journal_dropped_is_skipped(tmp_path: Path) -> None:
    state = JournalState()
    state.apply((FINISH, "gone", SUCCESS, 1, "w1", 1.0, 2.0, None, None))
    assert state.tasks == {} and state.orphans == 1


# ------------------------------------------------------------------------------ replies wait


class Replies:
    """Captures the frames a ClientApi sends back, decoded."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    def __call__(self, frame: bytes) -> None:
        self.envelopes.append(decode_frame(frame))


def frame(correlation_id: int, build: Callable[[Any], None]) -> bytes:
    envelope = new_envelope(correlation_id)
    build(envelope)
    return encode_frame(envelope)


async def test_submissions_and_results_are_acknowledged_only_once_on_disk(harness: Any, journals: Any) -> None:
    # Given a client API over a coordinator whose journal writer has not started yet (nothing reaches the disk)
    harness.task(lambda x, y: x + y, name="add")
    journal = journals(start=False)
    api = ClientApi(harness.coordinator(local_concurrency=1, journal=journal))
    one, batch, waited, cancel = Replies(), Replies(), Replies(), Replies()
    queued = spec("add", 1, 2)

    # When a submit, a batch, a submit-and-wait and a cancel arrive
    api.handle(frame(1, lambda e: e.submit.task.CopyFrom(queued)), one)
    api.handle(frame(2, lambda e: e.submit_batch.tasks.extend([spec("add", 2, 2), spec("add", 3, 3)])), batch)
    api.handle(frame(3, lambda e: (e.submit.task.CopyFrom(spec("add", 4, 4)), setattr(e.submit, "wait", 5.0))), waited)
    api.handle(frame(4, lambda e: setattr(e.cancel, "task_id", "no-such-task")), cancel)  # refused: answered at once
    await until(lambda: api.coordinator.counters.succeeded == 4)
    await asyncio.sleep(0.05)

    # Then none of the accepted ones is answered, though the tasks ran (each slot wrote the start of
    # its task to the file first; the replies wait for the writer's flush)
    assert (one.envelopes, batch.envelopes, waited.envelopes) == ([], [], [])
    assert cancel.envelopes[0].error.code == error_pb2.ERROR_CODE_TASK_NOT_FOUND
    assert journal.size > len(MAGIC)

    # When the journal writes
    journal.start(asyncio.get_running_loop())

    # Then every reply goes out, the submit-and-wait with its result
    await until(lambda: len(one.envelopes) == len(batch.envelopes) == len(waited.envelopes) == 1)
    assert one.envelopes[0].submit_reply.task_id == queued.task_id
    assert len(batch.envelopes[0].submit_batch_reply.outcomes) == 2
    assert decode_value(waited.envelopes[0].submit_reply.task.result) == 8


# ------------------------------------------------------------------------------------- command


def test_the_journal_flag_and_its_env_var_reach_the_settings() -> None:
    parser = cli.make_parser()
    assert parser.parse_args(["--task-modules", "m", "--journal", "/var/tmp/j"]).journal == "/var/tmp/j"
    assert parser.parse_args(["--task-modules", "m"]).journal is None
    apply_env_defaults(parser, {"FASTWORKER_JOURNAL": "/srv/j"})
    assert parser.parse_args([]).journal == "/srv/j"


async def test_journal_inspect_and_compact_commands(journals: Any, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "tasks.journal"
    journal = journals()
    kept = TaskRecord(spec("add", 1), NORMAL, 1.0)
    journal.accepted(kept)
    journal.paused(LOW, True)
    journal.periodic_fired("tick", 0.0)
    for i in range(20):
        done = TaskRecord(spec("add", i), NORMAL, 1.0)
        journal.accepted(done)
        done.state, done.finished_at = SUCCESS, 10.0
        journal.finished(done)
    journal.close()

    assert cli.main(["journal", "inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "tasks: 21 (PENDING 1, SUCCESS 20)" in text
    assert "paused levels: low" in text
    assert "tick at 1970-01-01T00:00:00+00:00" in text

    assert cli.main(["journal", "compact", str(path), "--result-ttl", "60"]) == 0
    assert "compacted" in capsys.readouterr().out
    assert cli.main(["journal", "inspect", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tasks_by_state"] == {"PENDING": 1}
    assert report["paused"] == ["low"]
    assert report["in_use"] is False


def test_journal_commands_fail_clearly_on_a_missing_or_foreign_file(tmp_path: Path, capsys: Any) -> None:
    assert cli.main(["journal", "inspect", str(tmp_path / "missing")]) == 1
    assert "No such file" in capsys.readouterr().err
    (tmp_path / "foreign").write_bytes(b"PK\x03\x04")
    assert cli.main(["journal", "compact", str(tmp_path / "foreign")]) == 1
    assert "not a FastWorker journal" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["journal", "rewind", "x"])
    assert usage.value.code == 2


# ------------------------------------------------------------- corruption, links and a full disk


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def batch_offsets(path: Path) -> list[int]:
    """Where each batch of a sound journal file starts."""
    data = path.read_bytes()
    offsets, offset = [], len(MAGIC)
    while offset < len(data):
        offsets.append(offset)
        offset += 8 + struct.unpack_from("<I", data, offset)[0]
    return offsets


async def journal_of_single_task_batches(journals: Any, path: Path, count: int) -> list[str]:
    """A closed journal at ``path`` with ``count`` batches after its (empty) snapshot, one accepted task each."""
    journal = journals(path)
    task_ids = []
    for i in range(count):
        record = TaskRecord(spec("add", i), NORMAL, 1.0)
        journal.accepted(record)
        assert await journal.flush()
        task_ids.append(record.task_id)
    journal.close()
    assert len(batch_offsets(path)) == count
    return task_ids


def flip_bit(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def directory_listing(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.iterdir())


@pytest.mark.parametrize("bit", [31, 20], ids=["length-beyond-max", "length-beyond-eof"])
async def test_a_bit_flip_in_a_mid_file_batch_length_refuses_start_and_leaves_the_file_byte_identical(
    journals: Any, tmp_path: Path, bit: int
) -> None:
    # Given 20 acknowledged tasks, one per batch, and one flipped bit in the 3rd batch's length field
    path = tmp_path / "tasks.journal"
    await journal_of_single_task_batches(journals, path, 20)
    bad = batch_offsets(path)[2]
    flip_bit(path, bad, bit)
    digest = sha256(path)

    # When a control plane opens it, Then it refuses, naming the file and the offset, and writes nothing
    with pytest.raises(JournalCorrupted, match=rf"{path}: corrupt batch at offset {bad} ") as refused:
        Journal(path)
    assert refused.value.offset == bad
    assert "journal salvage" in str(refused.value)
    assert sha256(path) == digest
    assert directory_listing(tmp_path) == ["tasks.journal", "tasks.journal.lock"]
    with pytest.raises(JournalCorrupted):
        inspect(path)


async def test_zeros_after_the_last_batch_are_a_torn_tail_and_are_cut_off(journals: Any, tmp_path: Path) -> None:
    # Given a journal whose end a crash left zero-filled (as some file systems do after a power loss)
    path = tmp_path / "tasks.journal"
    task_ids = await journal_of_single_task_batches(journals, path, 3)
    with open(path, "ab") as file:
        file.write(bytes(64))

    # When it is opened, Then the tasks are all there and the zeros are gone
    assert list(by_id(journals(path))) == task_ids
    assert inspect(path)["torn_bytes"] == 0


async def test_salvage_copies_every_readable_batch_to_a_new_file_and_reports_what_it_skipped(
    journals: Any, tmp_path: Path, capsys: Any
) -> None:
    # Given a journal refused for a corrupt 3rd batch
    path = tmp_path / "tasks.journal"
    task_ids = await journal_of_single_task_batches(journals, path, 20)
    bad, after_bad = batch_offsets(path)[2:4]
    flip_bit(path, bad, 20)
    digest = sha256(path)
    salvaged = tmp_path / "salvaged.journal"

    # When it is salvaged into a new file
    assert cli.main(["journal", "salvage", str(path), str(salvaged)]) == 0

    # Then the report names what was kept and skipped, the original is unchanged, and the copy starts
    # with every task but the one of the bad batch
    report = capsys.readouterr().out
    assert "kept: 19 batches, 19 records, 19 tasks" in report
    assert f"offset {bad}: {after_bad - bad} bytes (its length field" in report
    assert sha256(path) == digest
    assert salvaged.stat().st_mode & 0o777 == 0o600
    assert list(by_id(journals(salvaged))) == task_ids[:2] + task_ids[3:]

    # and salvage never overwrites a file
    existing = tmp_path / "existing"
    existing.write_text("keep me")
    assert cli.main(["journal", "salvage", str(path), str(existing)]) == 1
    assert "never overwrites" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("when", ["start", "online compaction", "offline compact"])
async def test_a_symlink_planted_at_the_journal_temporary_path_is_not_followed(
    journals: Any, tmp_path: Path, when: str
) -> None:
    # Given a journal with tasks, and a link to a victim file planted where its snapshot is written
    path = tmp_path / "tasks.journal"
    task_ids = await journal_of_single_task_batches(journals, path, 5)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "tasks.journal.compact").symlink_to(victim)

    # When the journal is compacted (at start, online, or offline)
    if when == "start":
        journals(path).close()
    elif when == "online compaction":
        journal = journals(path, compact_min_bytes=1, compact_ratio=1.0)
        assert not os.path.lexists(tmp_path / "tasks.journal.compact")  # the start removed it: plant it again
        (tmp_path / "tasks.journal.compact").symlink_to(victim)
        journal.accepted(TaskRecord(spec("add", 99), NORMAL, 1.0))
        assert await journal.flush()
        await until(lambda: journal.compactions >= 1)
        journal.close()
    else:
        compact(path)

    # Then the victim is untouched, the journal is a regular file with its tasks, no temporary file is left
    assert victim.read_bytes() == b"precious"
    assert not path.is_symlink()
    assert set(task_ids) <= set(fold(path)[0].tasks)
    assert "tasks.journal.compact" not in directory_listing(tmp_path)


def test_a_journal_with_another_hard_link_is_refused(tmp_path: Path) -> None:
    # A second name for the file would take a lock of its own: two control planes on one journal.
    path = tmp_path / "tasks.journal"
    path.write_bytes(MAGIC)
    os.link(path, tmp_path / "other-name.journal")
    with pytest.raises(JournalError, match="has 2 hard links: another name for it could run a second control plane"):
        Journal(path)
    with pytest.raises(JournalError, match="has 2 hard links"):
        Journal(tmp_path / "other-name.journal")
    assert path.read_bytes() == MAGIC


def test_a_journal_path_that_is_a_directory_is_refused_as_one(tmp_path: Path) -> None:
    # It was refused for its "2 hard links" (a directory has them): the operator went the wrong way
    (tmp_path / "data").mkdir()
    with pytest.raises(JournalError, match=f"journal {tmp_path / 'data'} is a directory: give the path of a file"):
        Journal(tmp_path / "data")


def test_a_journal_in_a_missing_directory_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=f"its directory {tmp_path / 'nowhere'} does not exist"):
        Journal(tmp_path / "nowhere" / "tasks.journal")


def test_a_symlinked_journal_path_is_refused_and_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.journal"
    target.write_bytes(MAGIC)
    link = tmp_path / "tasks.journal"
    link.symlink_to(target)
    with pytest.raises(JournalError, match="is a symbolic link"):
        Journal(link)
    assert link.is_symlink() and target.read_bytes() == MAGIC


def no_space(*args: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def test_a_full_disk_at_start_names_the_journal_and_leaves_no_stray_files(
    journals: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    path = tmp_path / "tasks.journal"
    await journal_of_single_task_batches(journals, path, 3)
    digest = sha256(path)
    monkeypatch.setattr(journal_module.os, "fdatasync", no_space)

    with pytest.raises(JournalError, match=rf"journal {path}: cannot write its snapshot .*No space left on device"):
        Journal(path)
    assert sha256(path) == digest
    assert directory_listing(tmp_path) == ["tasks.journal", "tasks.journal.lock"]


async def test_offline_compact_on_a_full_disk_names_the_journal_and_leaves_no_stray_files(
    journals: Any, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    path = tmp_path / "tasks.journal"
    await journal_of_single_task_batches(journals, path, 3)
    digest = sha256(path)
    monkeypatch.setattr(journal_module.os, "fdatasync", no_space)

    assert cli.main(["journal", "compact", str(path)]) == 1
    assert f"journal {path}: cannot write its snapshot" in capsys.readouterr().err
    assert sha256(path) == digest
    assert directory_listing(tmp_path) == ["tasks.journal", "tasks.journal.lock"]


async def test_a_write_cut_short_by_a_full_disk_is_cut_off_before_the_batch_is_written_again(
    journals: Any, tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    # Given a disk that takes half a batch and is then full, refuses to cut it off once, then recovers
    path = tmp_path / "tasks.journal"
    journal = journals(path)
    monkeypatch.setattr(journal_module, "WRITE_RETRY_DELAY", 0.01)
    real_write, real_truncate = os.write, os.ftruncate
    writes, truncates = [0], [0]

    def half_write(fd: int, data: Any) -> int:
        writes[0] += 1
        if writes[0] == 2:
            no_space()  # what writing on after a short write says: the cause, not "short write"
        return real_write(fd, bytes(data)[: len(data) // 2] if writes[0] == 1 else data)

    def stuck_truncate(fd: int, length: int) -> None:
        truncates[0] += 1
        if truncates[0] == 1:
            no_space()
        real_truncate(fd, length)

    monkeypatch.setattr(journal_module.os, "write", half_write)
    monkeypatch.setattr(journal_module.os, "ftruncate", stuck_truncate)
    acknowledged: list[bool] = []

    # When a task is accepted and its reply waits for the disk
    record = TaskRecord(spec("add", 1), NORMAL, 1.0)
    journal.accepted(record)
    journal.after_durable(lambda: acknowledged.append(True))
    await until(lambda: acknowledged == [True])
    journal.close()

    # Then the failure named the journal and its cause, and the file holds the batch once, whole
    assert f"journal {path}: write failed ([Errno 28] No space left on device)" in caplog.text
    assert list(fold(path)[0].tasks) == [record.task_id]
    assert fold(path)[1].torn_bytes == 0


async def test_closing_while_the_disk_refuses_never_acknowledges_what_was_not_written(
    journals: Any, tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    path = tmp_path / "tasks.journal"
    journal = journals(path)
    monkeypatch.setattr(journal_module, "WRITE_RETRY_DELAY", 0.01)
    monkeypatch.setattr(journal_module.os, "write", no_space)
    acknowledged: list[bool] = []
    journal.accepted(TaskRecord(spec("add", 1), NORMAL, 1.0))
    journal.after_durable(lambda: acknowledged.append(True))
    assert not await journal.flush(timeout=0.2)

    journal.close()
    await asyncio.sleep(0.05)  # a callback scheduled on the loop would have run by now

    assert acknowledged == []
    assert f"journal {path}: write failed" in caplog.text and "No space left on device" in caplog.text
    assert path.read_bytes() == MAGIC


async def test_a_task_s_named_queue_comes_back_after_a_stop(harness: Any, journals: Any) -> None:
    # Given tasks in the queue their definition names and the one their submission names, that nothing serves
    harness.task(lambda: None, name="report", queue="reports")
    journal = journals()
    coordinator = harness.coordinator(local_concurrency=1, journal=journal)
    own, _ = coordinator.submit(spec("report"))
    named, _ = coordinator.submit(spec("report", queue="urgent"))
    assert (own.queue, named.queue, own.state, named.state) == ("reports", "urgent", PENDING, PENDING)

    # When the journal is opened again, even where the definition says another queue now
    journal.close()
    records = by_id(journals())

    # Then each waits in the queue it was accepted into
    assert (records[own.task_id].queue, records[named.task_id].queue) == ("reports", "urgent")


async def test_a_start_written_through_reaches_the_file_after_the_acceptance_before_any_flush(
    journals: Any, tmp_path: Path
) -> None:
    # Given a journal whose writer has not flushed anything, holding a task's acceptance and its start
    path = tmp_path / "tasks.journal"
    journal = journals(path, start=False)
    record = TaskRecord(spec("add", 1), NORMAL, 1.0)
    journal.accepted(record)
    record.state, record.attempts, record.worker, record.started_at = RUNNING, 1, "controlplane", 2.0
    journal.running(record)

    # When a slot writes them through, as it does before it starts the task
    assert journal.write_through()

    # Then the file has both, in that order: a crash now replays the task as started, never as queued
    state, _ = fold(path)
    assert state.tasks[record.task_id].state == RUNNING
    assert state.tasks[record.task_id].attempts == 1
    assert journal.write_through()  # nothing more to write


async def test_a_start_is_not_written_through_while_the_disk_refuses_and_waits_for_the_writer(
    journals: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    path = tmp_path / "tasks.journal"
    journal = journals(path)
    monkeypatch.setattr(journal_module, "WRITE_RETRY_DELAY", 0.01)
    real_write = os.write
    monkeypatch.setattr(journal_module.os, "write", no_space)
    journal.accepted(TaskRecord(spec("add", 1), NORMAL, 1.0))
    assert not await journal.flush(timeout=0.2)  # the writer failed and retries
    journal.accepted(TaskRecord(spec("add", 2), NORMAL, 1.0))

    assert not journal.write_through()  # no write beside a writer that the disk refuses
    waiting = asyncio.ensure_future(asyncio.to_thread(journal.ensure_written))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # a slot waits rather than start a task whose start is not written

    monkeypatch.setattr(journal_module.os, "write", real_write)  # the disk recovers
    async with asyncio.timeout(10):
        await waiting
    journal.close()
    assert len(fold(path)[0].tasks) == 2


async def test_a_header_cut_short_starts_as_an_empty_journal(journals: Any, tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "tasks.journal"
    path.write_bytes(MAGIC[:5])  # a creation cut short: nothing was ever written after it
    journal = journals(path)
    assert journal.recovered.summary()  # opened, with nothing to recover
    assert "ignored 5 bytes of an unfinished last write" in caplog.text
    journal.close()
    assert path.read_bytes().startswith(MAGIC)


def test_a_journal_of_another_format_version_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "tasks.journal"
    path.write_bytes(b"fastworker-journal 2\n")
    with pytest.raises(JournalError, match="unsupported journal format version 2"):
        Journal(path)
    assert path.read_bytes() == b"fastworker-journal 2\n"


@pytest.mark.parametrize("size", ["0", "-5", "many"])
def test_compact_refuses_a_result_cache_size_below_one_as_a_usage_error(size: str, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "tasks.journal"
    path.write_bytes(MAGIC)
    with pytest.raises(SystemExit) as usage:
        cli.main(["journal", "compact", str(path), "--result-cache-size", size])
    assert usage.value.code == 2
    assert "--result-cache-size: expected a whole number, 1 or more" in capsys.readouterr().err
    assert path.read_bytes() == MAGIC  # nothing was dropped
