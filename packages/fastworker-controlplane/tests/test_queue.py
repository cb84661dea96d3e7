"""The priority queue and the schedule: strict priority, FIFO, lazy cancellation and no double release."""

from __future__ import annotations

import itertools

import pytest

from fastworker.controlplane.queue import LEVELS, PriorityQueue, Schedule
from fastworker.controlplane.records import CANCELLED, PENDING, RUNNING, SCHEDULED, TaskRecord
from fastworker.protocol.v1 import task_pb2

CRITICAL = task_pb2.PRIORITY_CRITICAL
HIGH = task_pb2.PRIORITY_HIGH
NORMAL = task_pb2.PRIORITY_NORMAL
LOW = task_pb2.PRIORITY_LOW

_ids = itertools.count(1)


def record(priority: int = NORMAL, *, queued_at: float = 0.0, state: int = PENDING, name: str = "t") -> TaskRecord:
    spec = task_pb2.TaskSpec(task_id=f"task-{next(_ids)}", name=name)
    rec = TaskRecord(spec, priority, queued_at)
    rec.state = state
    return rec


def pop_all(queue: PriorityQueue) -> list[TaskRecord]:
    popped = []
    while (rec := queue.pop()) is not None:
        popped.append(rec)
    return popped


def cancel_queued(queue: PriorityQueue, rec: TaskRecord) -> None:
    """What the coordinator does to a PENDING record it cancels."""
    queue.discard(rec)
    rec.state = CANCELLED


def requeue(queue: PriorityQueue, rec: TaskRecord) -> None:
    """What the coordinator does to a record it retries."""
    rec.state = PENDING
    queue.push(rec)


# -------------------------------------------------------------------------------------- PriorityQueue


def test_levels_are_in_dispatch_order_critical_high_normal_low() -> None:
    assert LEVELS == (CRITICAL, HIGH, NORMAL, LOW)


def test_an_empty_queue_pops_none_and_has_zero_depth() -> None:
    queue = PriorityQueue()

    assert queue.pop() is None
    assert len(queue) == 0
    assert all(queue.depth(level) == 0 for level in LEVELS)


def test_pop_serves_levels_in_strict_priority_order_whatever_the_push_order() -> None:
    # Given one task per level pushed lowest level first
    queue = PriorityQueue()
    low, normal, high, critical = record(LOW), record(NORMAL), record(HIGH), record(CRITICAL)
    for rec in (low, normal, high, critical):
        queue.push(rec)

    # Then they come out highest level first
    assert pop_all(queue) == [critical, high, normal, low]


def test_a_critical_task_pushed_after_many_low_ones_is_popped_first() -> None:
    queue = PriorityQueue()
    lows = [record(LOW) for _ in range(100)]
    for rec in lows:
        queue.push(rec)
    critical = record(CRITICAL)
    queue.push(critical)

    assert queue.pop() is critical
    assert pop_all(queue) == lows


def test_tasks_of_one_level_are_popped_first_in_first_out() -> None:
    queue = PriorityQueue()
    records = [record(NORMAL) for _ in range(10)]
    for rec in records:
        queue.push(rec)

    assert pop_all(queue) == records


def test_depth_counts_waiting_tasks_per_level_and_len_counts_them_all() -> None:
    queue = PriorityQueue()
    for priority in (HIGH, HIGH, LOW):
        queue.push(record(priority))

    assert queue.depth(HIGH) == 2
    assert queue.depth(LOW) == 1
    assert queue.depth(CRITICAL) == queue.depth(NORMAL) == 0
    assert len(queue) == 3

    queue.pop()

    assert queue.depth(HIGH) == 1
    assert len(queue) == 2


def test_a_paused_level_is_skipped_and_served_again_once_resumed() -> None:
    # Given a high and a normal task, with the high level paused
    queue = PriorityQueue()
    high, normal = record(HIGH), record(NORMAL)
    queue.push(high)
    queue.push(normal)
    queue.paused.add(HIGH)

    # When popping, the normal task comes out and the high one stays
    assert queue.pop() is normal
    assert queue.pop() is None
    assert queue.depth(HIGH) == 1

    # When the level is resumed, the high task comes out
    queue.paused.discard(HIGH)
    assert queue.pop() is high


def test_pausing_every_level_stops_all_pops() -> None:
    queue = PriorityQueue()
    queue.push(record(CRITICAL))
    queue.paused.update(LEVELS)

    assert queue.pop() is None
    assert len(queue) == 1


def test_a_cancelled_entry_is_skipped_by_pop_and_no_longer_counted() -> None:
    # Given three queued tasks
    queue = PriorityQueue()
    first, second, third = record(), record(), record()
    for rec in (first, second, third):
        queue.push(rec)

    # When the second is cancelled
    cancel_queued(queue, second)

    # Then depth drops at once and pop never returns it
    assert queue.depth(NORMAL) == 2
    assert len(queue) == 2
    assert pop_all(queue) == [first, third]
    assert len(queue) == 0


def test_a_record_that_left_pending_some_other_way_is_not_popped() -> None:
    queue = PriorityQueue()
    rec = record()
    queue.push(rec)
    rec.state = RUNNING

    assert queue.pop() is None


def test_a_record_cancelled_then_requeued_is_popped_exactly_once() -> None:
    # Given a queued task that is cancelled, then re-queued (retry): its old entry is still in the deque
    queue = PriorityQueue()
    rec, other = record(), record()
    queue.push(rec)
    queue.push(other)
    cancel_queued(queue, rec)
    requeue(queue, rec)

    # Then it is popped once (from its new place, behind `other`), never twice: no double execution
    assert queue.depth(NORMAL) == 2
    assert pop_all(queue) == [other, rec]
    assert len(queue) == 0


def test_a_record_cancelled_and_requeued_many_times_is_still_popped_once() -> None:
    queue = PriorityQueue()
    rec = record()
    queue.push(rec)
    for _ in range(5):
        cancel_queued(queue, rec)
        requeue(queue, rec)

    assert pop_all(queue) == [rec]
    assert len(queue) == 0


def test_push_front_puts_a_record_ahead_of_its_level_but_not_ahead_of_higher_levels() -> None:
    queue = PriorityQueue()
    high, normal_1, normal_2 = record(HIGH), record(NORMAL), record(NORMAL)
    for rec in (high, normal_1, normal_2):
        queue.push(rec)
    back = record(NORMAL)

    queue.push_front(back)

    assert queue.depth(NORMAL) == 3
    assert pop_all(queue) == [high, back, normal_1, normal_2]


def test_a_popped_record_pushed_back_to_the_front_is_popped_again_once() -> None:
    # Given a record that was popped for dispatch but could not start
    queue = PriorityQueue()
    rec, other = record(), record()
    queue.push(rec)
    queue.push(other)
    assert queue.pop() is rec

    # When it is put back at the front
    queue.push_front(rec)

    # Then it runs next, and only once
    assert pop_all(queue) == [rec, other]


def test_drain_removes_and_returns_the_live_records_of_one_level_only() -> None:
    # Given two normal tasks (one cancelled, one cancelled and requeued) and a high one
    queue = PriorityQueue()
    keep, cancelled, requeued = record(), record(), record()
    high = record(HIGH)
    for rec in (keep, cancelled, requeued, high):
        queue.push(rec)
    cancel_queued(queue, cancelled)
    cancel_queued(queue, requeued)
    requeue(queue, requeued)

    # When the normal level is purged
    taken = queue.drain(NORMAL)

    # Then the live normal records come back once each, and the high level is untouched
    assert taken == [keep, requeued]
    assert queue.depth(NORMAL) == 0
    assert queue.depth(HIGH) == 1
    assert pop_all(queue) == [high]


def test_drain_of_an_empty_level_returns_nothing() -> None:
    assert PriorityQueue().drain(LOW) == []


def test_oldest_age_is_the_wait_of_the_oldest_live_record_at_the_given_now() -> None:
    queue = PriorityQueue()
    old, young = record(LOW, queued_at=100.0), record(LOW, queued_at=104.0)
    queue.push(old)
    queue.push(young)

    assert queue.oldest_age(LOW, now=110.0) == pytest.approx(10.0)

    # A cancelled head is skipped
    cancel_queued(queue, old)
    assert queue.oldest_age(LOW, now=110.0) == pytest.approx(6.0)


def test_oldest_age_is_zero_for_an_empty_level_and_never_negative() -> None:
    queue = PriorityQueue()
    assert queue.oldest_age(HIGH, now=50.0) == 0.0

    queue.push(record(HIGH, queued_at=60.0))  # clock skew: queued "after" now
    assert queue.oldest_age(HIGH, now=50.0) == 0.0


# -------------------------------------------------------------------------------------------- Schedule


def scheduled() -> TaskRecord:
    return record(state=SCHEDULED)


def cancel_scheduled(schedule: Schedule, rec: TaskRecord) -> None:
    schedule.discard(rec)
    rec.state = CANCELLED


def test_an_empty_schedule_has_nothing_due() -> None:
    schedule = Schedule()

    assert schedule.next_due() is None
    assert schedule.pop_due(1e12) == []
    assert len(schedule) == 0


def test_records_are_released_in_due_order_and_only_when_due() -> None:
    # Given three records added out of due order
    schedule = Schedule()
    late, early, middle = scheduled(), scheduled(), scheduled()
    schedule.add(late, 30.0)
    schedule.add(early, 10.0)
    schedule.add(middle, 20.0)

    # Then the earliest due time is reported
    assert schedule.next_due() == 10.0
    assert len(schedule) == 3

    # And nothing is released before it is due
    assert schedule.pop_due(9.99) == []

    # And popping at 20 releases the first two in due order (due == now counts as due)
    assert schedule.pop_due(20.0) == [early, middle]
    assert len(schedule) == 1
    assert schedule.next_due() == 30.0
    assert schedule.pop_due(100.0) == [late]
    assert len(schedule) == 0


def test_records_with_equal_due_times_are_released_first_in_first_out() -> None:
    schedule = Schedule()
    records = [scheduled() for _ in range(10)]
    for rec in records:
        schedule.add(rec, 5.0)

    assert schedule.pop_due(5.0) == records


def test_a_discarded_record_is_not_released_and_no_longer_counted() -> None:
    schedule = Schedule()
    keep, cancelled = scheduled(), scheduled()
    schedule.add(cancelled, 1.0)
    schedule.add(keep, 2.0)

    cancel_scheduled(schedule, cancelled)

    assert len(schedule) == 1
    assert schedule.pop_due(10.0) == [keep]
    assert len(schedule) == 0


def test_next_due_skips_dead_entries() -> None:
    # Given the earliest entry is cancelled
    schedule = Schedule()
    cancelled, live = scheduled(), scheduled()
    schedule.add(cancelled, 1.0)
    schedule.add(live, 2.0)
    cancel_scheduled(schedule, cancelled)

    # Then next_due reports the live one
    assert schedule.next_due() == 2.0

    # And with every entry dead, nothing is due
    cancel_scheduled(schedule, live)
    assert schedule.next_due() is None
    assert len(schedule) == 0


def test_a_record_cancelled_then_rescheduled_is_released_once_at_its_new_time() -> None:
    # Given a record scheduled for 10, cancelled, then scheduled again for 20
    schedule = Schedule()
    rec = scheduled()
    schedule.add(rec, 10.0)
    cancel_scheduled(schedule, rec)
    rec.state = SCHEDULED
    schedule.add(rec, 20.0)

    # Then its old entry does not release it at 10
    assert schedule.next_due() == 20.0
    assert schedule.pop_due(15.0) == []

    # And it is released exactly once at 20
    assert schedule.pop_due(100.0) == [rec]
    assert schedule.pop_due(1000.0) == []
    assert len(schedule) == 0


def test_a_record_rescheduled_earlier_is_released_once_at_its_new_time() -> None:
    schedule = Schedule()
    rec = scheduled()
    schedule.add(rec, 50.0)
    cancel_scheduled(schedule, rec)
    rec.state = SCHEDULED
    schedule.add(rec, 5.0)

    assert schedule.pop_due(5.0) == [rec]
    assert schedule.pop_due(100.0) == []
    assert schedule.next_due() is None


def test_a_released_record_that_left_scheduled_is_not_released_by_a_stale_entry() -> None:
    # Given a record released from the schedule and then queued (state PENDING)
    schedule = Schedule()
    rec = scheduled()
    schedule.add(rec, 1.0)
    assert schedule.pop_due(1.0) == [rec]
    rec.state = PENDING

    # Then the schedule has nothing more to release
    assert schedule.pop_due(100.0) == []
    assert len(schedule) == 0
