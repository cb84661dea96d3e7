"""Flow control on the control plane's own slots: exact concurrency, a smooth rate, changes at run time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from fastworker.client.limits import Rate
from fastworker.controlplane.flow import GatedQueue, Limits
from fastworker.controlplane.journal import ACCEPT, LIMITS, RUN, JournalState, recover
from fastworker.controlplane.records import FAILURE, PENDING, RUNNING, SUCCESS, TaskRecord
from fastworker.protocol.v1 import task_pb2


async def _until(condition: Callable[[], bool], bound: float = 5.0) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Tracker:
    """Counts how many runs overlap, as the tasks themselves see it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.starts: list[float] = []

    def run(self, seconds: float) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.starts.append(time.monotonic())
        try:
            time.sleep(seconds)
        finally:  # also when a cancel's TaskCancelled is raised as the sleep returns
            with self.lock:
                self.now -= 1


async def test_max_concurrency_holds_on_local_slots_while_another_name_runs(harness: Any) -> None:
    tracker = Tracker()
    harness.task(tracker.run, name="limited", max_concurrency=2)
    harness.task(lambda: "free", name="free")
    coordinator = harness.coordinator(local_concurrency=6)
    limited = [coordinator.submit(harness.spec("limited", 0.05))[0] for _ in range(10)]
    free = [coordinator.submit(harness.spec("free"))[0] for _ in range(20)]

    for record in free:
        assert (await harness.final(coordinator, record.task_id)).state == SUCCESS
    assert any(not r.is_final for r in limited)  # the free name did not wait for the limited one
    for record in limited:
        assert (await harness.final(coordinator, record.task_id)).state == SUCCESS
    assert tracker.most == 2
    assert coordinator.queue.gates["limited"].running == 0


async def test_a_rate_limit_spreads_starts_after_the_burst(harness: Any) -> None:
    tracker = Tracker()
    harness.task(tracker.run, name="paced", rate_limit="20/s")
    coordinator = harness.coordinator(local_concurrency=4)
    records = [coordinator.submit(harness.spec("paced", 0.0))[0] for _ in range(12)]
    for record in records:
        assert (await harness.final(coordinator, record.task_id)).state == SUCCESS
    burst = Rate.parse("20/s").burst
    assert burst == 2
    # The token bucket's promise: at most burst + rate * W starts in any window of W seconds (one more
    # allowed for a start that a busy machine delayed between its token and its first line).
    starts = tracker.starts
    for index, first in enumerate(starts):
        within = sum(1 for later in starts[index:] if later - first <= 0.25)
        assert within <= burst + 20 * 0.25 + 1, starts
    assert starts[-1] - starts[0] >= (12 - burst) * 0.05 * 0.9


async def test_changing_a_limit_at_run_time_releases_the_waiting_tasks(harness: Any) -> None:
    release = threading.Event()
    harness.task(lambda: release.wait(5), name="slow", max_concurrency=1)
    coordinator = harness.coordinator(local_concurrency=4)
    records = [coordinator.submit(harness.spec("slow"))[0] for _ in range(3)]
    await _until(lambda: coordinator.queue.gates["slow"].running == 1)
    assert len(coordinator.queue.gates["slow"].waiting) == 2

    coordinator.set_limits("slow", max_concurrency=None)

    await _until(lambda: coordinator.running == 3)
    release.set()
    for record in records:
        assert (await harness.final(coordinator, record.task_id)).state == SUCCESS


def _record(name: str, priority: int, queued_at: float) -> TaskRecord:
    return TaskRecord(task_pb2.TaskSpec(task_id=f"{name}-{queued_at}", name=name), priority, queued_at)


def test_a_gated_name_keeps_its_priority_order_and_does_not_block_others() -> None:
    clock = [100.0]
    queue = GatedQueue(clock=lambda: clock[0])
    queue.set_limits("report", Limits(max_concurrency=1), iter(()))
    low = _record("report", task_pb2.PRIORITY_LOW, 1.0)
    high = _record("report", task_pb2.PRIORITY_HIGH, 2.0)
    other = _record("email", task_pb2.PRIORITY_LOW, 3.0)
    for record in (low, high, other):
        queue.push(record)
    assert len(queue) == 3 and queue.depth(task_pb2.PRIORITY_LOW) == 2

    assert queue.pop() is high  # the gate's best, ahead of a lower level in the main queue
    assert queue.pop() is other  # the gate is full: the other name is not blocked
    assert queue.pop() is None
    assert queue.release(high)  # tasks wait at that gate
    assert queue.pop() is low
    assert low.state == PENDING and low.gate is queue.gates["report"]


def test_a_rate_gate_says_when_its_next_token_comes() -> None:
    clock = [0.0]
    queue = GatedQueue(clock=lambda: clock[0])
    queue.set_limits("paced", Limits(rate=Rate.parse("10/s")), iter(()))
    for n in range(3):
        queue.push(_record("paced", task_pb2.PRIORITY_NORMAL, float(n)))
    assert queue.pop() is not None  # the burst: one token
    assert queue.pop() is None
    wait = queue.retry_after()
    assert wait is not None and abs(wait - 0.1) < 1e-9
    clock[0] += 0.1
    assert queue.pop() is not None


def test_removing_the_limits_moves_waiting_tasks_back_to_the_main_queue() -> None:
    queue = GatedQueue(clock=lambda: 0.0)
    queue.set_limits("report", Limits(max_concurrency=1), iter(()))
    records = [_record("report", task_pb2.PRIORITY_NORMAL, float(n)) for n in range(3)]
    for record in records:
        queue.push(record)
    assert queue.pop() is records[0]

    queue.set_limits("report", Limits(), iter([records[0]]))

    assert "report" not in queue.gates and records[0].gate is None
    assert [queue.pop(), queue.pop()] == records[1:]


def test_run_time_limits_survive_a_journal_replay_and_a_snapshot() -> None:
    state = JournalState()
    state.apply((LIMITS, "report", "10/s", 0, False))
    state.apply((LIMITS, "email", "", 3, False))
    state.apply((LIMITS, "email", "", 0, True))  # cleared: the definition applies again
    assert state.limits == {"report": ("10/s", 0)}

    again = JournalState()
    for record in state.snapshot_records():
        again.apply(record)

    assert again.limits == {"report": ("10/s", 0)}
    assert recover(again, 0.0, lambda name: None).limits == {"report": ("10/s", 0)}


async def test_a_cancelled_run_still_inside_a_call_keeps_its_place_under_max_concurrency_until_it_returns(
    harness: Any,
) -> None:
    # Given a name limited to one at a time, whose first run sleeps in one long call into C
    tracker = Tracker()
    harness.task(tracker.run, name="limited", max_concurrency=1)
    coordinator = harness.coordinator(local_concurrency=2)
    first, _ = coordinator.submit(harness.spec("limited", 1.5))
    second, _ = coordinator.submit(harness.spec("limited", 0.0))
    await _until(lambda: tracker.now == 1)

    # When it is cancelled, and ended CANCELLED while its thread is still inside that call
    coordinator.cancel(first.task_id)
    assert coordinator.abandon_local_run(first.task_id)
    assert coordinator.find(first.task_id).is_final

    # Then the second starts only once that call returned: never two at once
    assert (await harness.final(coordinator, second.task_id)).state == SUCCESS
    assert tracker.most == 1
    await _until(lambda: coordinator.queue.gates["limited"].running == 0)


async def test_a_task_replayed_running_on_a_subworker_holds_its_place_under_max_concurrency(harness: Any) -> None:
    # Given a journal where one task of a name limited to 1 ran on subworker "wa" and another waited,
    # and a control plane whose own definition of the name makes its gate before the replay
    tracker = Tracker()
    harness.task(tracker.run, name="limited", max_concurrency=1)
    now = time.time()
    running, waiting = harness.spec("limited", 0.01), harness.spec("limited", 0.01)
    state = JournalState()
    for spec in (running, waiting):
        state.apply((ACCEPT, spec.task_id, spec.SerializeToString(), task_pb2.PRIORITY_NORMAL, now - 2, PENDING, 0.0))
    state.apply((RUN, running.task_id, 1, "wa", now - 1, False, -1, "wa-incarnation"))
    coordinator = harness.coordinator(local_concurrency=2)
    assert coordinator.queue.gates["limited"].running == 0

    # When it restores the journal (before wa comes back to adopt its task)
    coordinator.restore(recover(state, now=now, retries_for=lambda name: None))

    # Then the waiting one does not start beside it on the control plane's slots ...
    assert coordinator.queue.gates["limited"].running == 1
    await asyncio.sleep(0.3)
    held = coordinator.find(waiting.task_id)
    assert tracker.starts == [] and held is not None and held.state == PENDING
    # ... until the replayed run ends
    replayed = coordinator.find(running.task_id)
    assert replayed is not None and replayed.state == RUNNING
    coordinator.end(replayed, FAILURE, "WorkerLost", "its worker did not come back")
    assert (await harness.final(coordinator, waiting.task_id)).state == SUCCESS
    assert len(tracker.starts) == 1 and coordinator.queue.gates["limited"].running == 0
