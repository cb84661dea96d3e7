"""The event bus numbers events, keeps the newest in a ring, answers reads and long polls, and feeds listeners."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from fastworker.controlplane.events import MAX_EVENT_RESULT_BYTES, EventBus
from fastworker.controlplane.records import RUNNING, SUCCESS, TaskRecord
from fastworker.protocol.v1 import events_pb2, task_pb2

TASK = events_pb2.EVENT_KIND_TASK_STATE
ONLINE = events_pb2.EVENT_KIND_WORKER_ONLINE
OFFLINE = events_pb2.EVENT_KIND_WORKER_OFFLINE
QUEUE = events_pb2.EVENT_KIND_QUEUE_CHANGED
BOUND = 5.0


class Clock:
    """A clock that advances by one second per reading."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def record(task_id: str, state: int = RUNNING, result: bytes | None = None) -> TaskRecord:
    spec = task_pb2.TaskSpec(
        task_id=task_id, name="t", arguments=task_pb2.Payload(codec=task_pb2.CODEC_MSGPACK, data=b"args")
    )
    rec = TaskRecord(spec, task_pb2.PRIORITY_NORMAL, 1.0)
    rec.state = state
    if result is not None:
        rec.result = task_pb2.Payload(codec=task_pb2.CODEC_MSGPACK, data=result)
    return rec


def seqs(events: list[events_pb2.Event]) -> list[int]:
    return [event.sequence for event in events]


def publish_tasks(bus: EventBus, *task_ids: str) -> None:
    for task_id in task_ids:
        bus.publish_task(record(task_id))


class Calls:
    """Records wait callbacks as (sequences, last sequence, gap)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], int, bool]] = []
        self.events: list[list[events_pb2.Event]] = []

    def __call__(self, events: list[events_pb2.Event], last: int, gap: bool) -> None:
        self.calls.append((seqs(events), last, gap))
        self.events.append(events)

    async def until_called(self, times: int = 1) -> None:
        async with asyncio.timeout(BOUND):
            while len(self.calls) < times:
                await asyncio.sleep(0.001)


def registered(bus: EventBus) -> tuple[Any, ...]:
    """Every place a waiter can be registered (all empty when nothing waits)."""
    return bus._any_waiters, bus._task_waiters, bus._woken, bus._wake_any, bus._flush_handle


# ------------------------------------------------------------------------------------------- publish


def test_sequences_start_at_one_and_grow_by_one_with_the_clock_time_on_each_event() -> None:
    # Given a bus with a clock that ticks once per reading
    bus = EventBus(clock=Clock(1000.0))
    assert bus.last_sequence == 0

    # When tasks, workers and queues publish
    bus.publish_task(record("a"))
    bus.publish(ONLINE, worker_id="w1", detail="4 slots")
    bus.publish(QUEUE, detail="high paused")
    bus.publish(OFFLINE, worker_id="w1")

    # Then the events are numbered 1.. in order, stamped by the clock and carry their fields
    events, gap = bus.read(0)
    assert not gap
    assert bus.last_sequence == 4
    assert seqs(events) == [1, 2, 3, 4]
    assert [e.at for e in events] == [1001.0, 1002.0, 1003.0, 1004.0]
    assert [e.kind for e in events] == [TASK, ONLINE, QUEUE, OFFLINE]
    assert (events[1].worker_id, events[1].detail) == ("w1", "4 slots")
    assert events[2].detail == "high paused"
    assert not events[1].HasField("task")


def test_a_task_event_carries_the_records_info_without_its_arguments() -> None:
    bus = EventBus()
    rec = record("a", state=SUCCESS, result=b"\x2a")
    rec.worker = "w1"
    rec.attempts = 2

    bus.publish_task(rec)

    [event] = bus.read(0)[0]
    assert event.kind == TASK
    assert (event.task.task_id, event.task.name, event.task.state) == ("a", "t", SUCCESS)
    assert (event.task.worker, event.task.attempts, event.task.queued_at) == ("w1", 2, 1.0)
    assert event.task.result.data == b"\x2a"
    assert not event.task.HasField("arguments")


def test_each_publish_snapshots_the_record_so_later_changes_do_not_alter_earlier_events() -> None:
    bus = EventBus()
    rec = record("a", state=RUNNING)
    bus.publish_task(rec)
    rec.state = SUCCESS
    bus.publish_task(rec)

    assert [e.task.state for e in bus.read(0)[0]] == [RUNNING, SUCCESS]


@pytest.mark.parametrize("kind", [events_pb2.EVENT_KIND_TASK_STATE, events_pb2.EVENT_KIND_UNSPECIFIED])
def test_publish_refuses_the_task_kind_and_the_unspecified_kind(kind: int) -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="publish"):
        bus.publish(kind)
    assert bus.last_sequence == 0


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        EventBus(capacity=0)


def test_a_result_over_the_limit_is_left_out_of_the_event_and_one_at_the_limit_is_kept() -> None:
    # Given a task whose result is exactly at the limit, and one a byte over it (and failed one with an error)
    bus = EventBus()
    at_limit = record("small", state=SUCCESS, result=b"x" * MAX_EVENT_RESULT_BYTES)
    over_limit = record("big", state=SUCCESS, result=b"x" * (MAX_EVENT_RESULT_BYTES + 1))
    over_limit.error = task_pb2.TaskError(type="E", message="kept")

    # When both are published
    bus.publish_task(at_limit)
    bus.publish_task(over_limit)

    # Then only the small result travels; everything else about the big task does, and its record is untouched
    small, big = bus.read(0)[0]
    assert len(small.task.result.data) == MAX_EVENT_RESULT_BYTES
    assert not big.task.HasField("result")
    assert (big.task.task_id, big.task.state, big.task.error.message) == ("big", SUCCESS, "kept")
    assert over_limit.result is not None and len(over_limit.result.data) == MAX_EVENT_RESULT_BYTES + 1
    assert MAX_EVENT_RESULT_BYTES == 64 * 1024


def test_the_event_ring_keeps_neither_the_records_nor_their_large_results_alive() -> None:
    # Given tasks with 1 MiB results (and their arguments) published, then dropped everywhere else
    bus = EventBus(capacity=100)
    big = [record(f"t{i}", state=SUCCESS, result=b"x" * (1 << 20)) for i in range(5)]
    for each in big:
        bus.publish_task(each)
    results = {id(each.result) for each in big}
    ids = {id(each) for each in big}

    # Then nothing the ring holds refers to a record or to one of those results (the result cache
    # bounds those; the ring would hold 10,000 of them), and the events still read
    referred = {id(obj) for entry in bus._ring for obj in gc.get_referents(entry)}
    assert not referred & ids and not referred & results
    assert [event.task.task_id for event in bus.read(0)[0]] == [f"t{i}" for i in range(5)]


# ---------------------------------------------------------------------------------------------- read


def test_read_returns_events_after_a_position_oldest_first_up_to_the_limit() -> None:
    bus = EventBus()
    publish_tasks(bus, *"abcdef")

    assert seqs(bus.read(0)[0]) == [1, 2, 3, 4, 5, 6]  # 0: from the oldest retained
    assert seqs(bus.read(2)[0]) == [3, 4, 5, 6]
    assert seqs(bus.read(2, limit=3)[0]) == [3, 4, 5]
    assert bus.read(6) == ([], False)  # last_sequence: only what comes next


def test_read_filters_to_the_given_task_ids_and_skips_worker_and_queue_events() -> None:
    bus = EventBus()
    publish_tasks(bus, "a", "b")
    bus.publish(ONLINE, worker_id="a")  # a worker named like a task is still no task event
    publish_tasks(bus, "a", "c", "b", "a")

    assert seqs(bus.read(0, task_ids=["a"])[0]) == [1, 4, 7]
    assert seqs(bus.read(0, task_ids={"b", "c"})[0]) == [2, 5, 6]
    assert seqs(bus.read(1, task_ids=("a", "b"), limit=2)[0]) == [2, 4]
    assert bus.read(0, task_ids=["zzz"]) == ([], False)


@pytest.mark.parametrize(("after", "limit"), [(-1, 10), (0, 0), (0, -3)])
def test_read_refuses_a_negative_position_or_a_limit_below_one(after: int, limit: int) -> None:
    with pytest.raises(ValueError, match="after|limit"):
        EventBus().read(after, limit=limit)


def test_the_ring_keeps_the_newest_events_and_reports_a_gap_to_readers_behind_it() -> None:
    # Given a ring of 4 that has seen 10 events (1..6 dropped)
    bus = EventBus(capacity=4)
    publish_tasks(bus, *"abcdefghij")
    assert bus.last_sequence == 10
    assert bus.oldest_sequence == 7

    # Then readers behind the oldest retained event get what is left and a gap
    assert bus.read(0) == (bus.read(6)[0], True)
    assert (seqs(bus.read(0)[0]), bus.read(0)[1]) == ([7, 8, 9, 10], True)
    assert (seqs(bus.read(3)[0]), bus.read(3)[1]) == ([7, 8, 9, 10], True)
    # And a reader right before it, or further on, has no gap
    assert (seqs(bus.read(6)[0]), bus.read(6)[1]) == ([7, 8, 9, 10], False)
    assert (seqs(bus.read(8)[0]), bus.read(8)[1]) == ([9, 10], False)
    assert seqs(bus.read(7, limit=2)[0]) == [8, 9]


def test_reads_across_the_wrap_point_of_the_ring_stay_in_order_with_and_without_a_filter() -> None:
    bus = EventBus(capacity=5)
    publish_tasks(bus, "a", "b", "a", "b", "a", "b", "a", "b")  # 1..8; slots wrapped at 6

    events, gap = bus.read(3)
    assert (seqs(events), gap) == ([4, 5, 6, 7, 8], False)
    assert [e.task.task_id for e in events] == ["b", "a", "b", "a", "b"]
    assert seqs(bus.read(3, task_ids=["a"])[0]) == [5, 7]
    assert seqs(bus.read(3, task_ids=["b"], limit=2)[0]) == [4, 6]
    assert seqs(bus.read(4, limit=3)[0]) == [5, 6, 7]


def test_a_position_beyond_the_last_sequence_reads_from_the_oldest_as_a_gap() -> None:
    # Given a reader holding a position from an earlier control-plane instance
    bus = EventBus()
    publish_tasks(bus, "a", "b")

    # Then it gets everything retained and is told it missed events
    events, gap = bus.read(500)
    assert (seqs(events), gap) == ([1, 2], True)
    assert EventBus().read(7) == ([], True)


# ---------------------------------------------------------------------------------------------- wait


async def test_wait_answers_at_once_when_matching_events_exist() -> None:
    bus = EventBus()
    publish_tasks(bus, "a", "b", "c")
    calls = Calls()

    bus.wait(1, 10.0, calls, limit=1)

    assert calls.calls == [([2], 3, False)]  # inside the call, with the limit applied
    assert registered(bus) == ({}, {}, {}, False, None)


async def test_wait_answers_once_at_the_end_of_the_turn_in_which_events_are_published() -> None:
    # Given a reader waiting for what comes after the newest event
    bus = EventBus()
    publish_tasks(bus, "a")
    calls = Calls()
    bus.wait(bus.last_sequence, 10.0, calls)
    assert calls.calls == []
    assert bus.waiting == 1

    # When three events are published in one loop turn
    publish_tasks(bus, "b")
    bus.publish(ONLINE, worker_id="w")
    publish_tasks(bus, "c")
    assert calls.calls == []  # deferred, not called from inside publish

    # Then one callback carries all three, and the waiter is gone (its timer too)
    await calls.until_called()
    await asyncio.sleep(0.01)
    assert calls.calls == [([2, 3, 4], 4, False)]
    assert bus.waiting == 0
    assert registered(bus) == ({}, {}, {}, False, None)


async def test_wait_answers_at_timeout_with_no_events() -> None:
    bus = EventBus()
    publish_tasks(bus, "a")
    calls = Calls()
    loop = asyncio.get_running_loop()
    started = loop.time()

    bus.wait(1, 0.05, calls)
    await calls.until_called()

    assert loop.time() - started >= 0.04
    assert calls.calls == [([], 1, False)]
    assert registered(bus) == ({}, {}, {}, False, None)


@pytest.mark.parametrize("timeout", [0.0, -1.0])
async def test_a_wait_without_time_to_wait_answers_at_once(timeout: float) -> None:
    bus = EventBus()
    calls = Calls()
    bus.wait(0, timeout, calls)
    assert calls.calls == [([], 0, False)]
    assert bus.waiting == 0


async def test_wait_answers_at_once_with_a_gap_even_when_no_event_matches() -> None:
    # Given a ring that dropped events the reader had not seen
    bus = EventBus(capacity=2)
    publish_tasks(bus, "a", "b", "c")
    calls = Calls()

    # When it waits for a task that has no retained events
    bus.wait(0, 10.0, calls, task_ids=["zzz"])

    # Then it learns at once that it missed events (and can resume from last_sequence)
    assert calls.calls == [([], 3, True)]
    assert bus.waiting == 0


async def test_a_wait_filtered_to_tasks_ignores_other_tasks_and_worker_events() -> None:
    # Given a reader waiting for task "a" only
    bus = EventBus()
    publish_tasks(bus, "a", "b")
    calls = Calls()
    bus.wait(2, 10.0, calls, task_ids=["a"])

    # When other tasks and workers change
    publish_tasks(bus, "b", "c")
    bus.publish(ONLINE, worker_id="a")
    await asyncio.sleep(0.01)
    assert calls.calls == []

    # Then the next event of task "a" answers it with only a's events
    publish_tasks(bus, "a", "b")
    await calls.until_called()
    await asyncio.sleep(0.01)
    assert calls.calls == [([6], 7, False)]
    assert calls.events[0][0].task.task_id == "a"
    assert registered(bus) == ({}, {}, {}, False, None)


async def test_a_wait_on_several_tasks_is_answered_once_when_several_of_them_change_in_one_turn() -> None:
    bus = EventBus()
    calls = Calls()
    bus.wait(0, 10.0, calls, task_ids=["a", "b"])

    publish_tasks(bus, "a", "c", "b")
    await calls.until_called()
    await asyncio.sleep(0.01)

    assert calls.calls == [([1, 3], 3, False)]
    assert registered(bus) == ({}, {}, {}, False, None)


async def test_a_filtered_waiter_sees_no_gap_when_only_events_it_did_not_want_were_dropped() -> None:
    # Given a small ring and a reader waiting for task "a" from the start
    bus = EventBus(capacity=3)
    calls = Calls()
    bus.wait(0, 10.0, calls, task_ids=["a"])

    # When more unrelated events than the ring holds come before a's (all in one turn)
    publish_tasks(bus, "b", "b", "b", "b", "a")

    # Then it gets a's event without a gap: nothing it wanted was lost
    await calls.until_called()
    assert calls.calls == [([5], 5, False)]


async def test_a_filtered_waiter_that_times_out_in_busy_traffic_gets_nothing_and_no_gap() -> None:
    # Given a reader waiting for task "a" on a small ring
    bus = EventBus(capacity=3)
    publish_tasks(bus, "b")
    calls = Calls()
    bus.wait(1, 0.03, calls, task_ids=["a"])

    # When many unrelated events overflow the ring before its timeout
    for _ in range(4):
        publish_tasks(bus, "b", "c")
        await asyncio.sleep(0)

    # Then it is answered at timeout with nothing and no gap (it may resume from last_sequence)
    await calls.until_called()
    assert calls.calls == [([], 9, False)]


async def test_a_filtered_waiter_whose_wanted_event_was_dropped_before_it_was_answered_gets_a_gap() -> None:
    bus = EventBus(capacity=2)
    calls = Calls()
    bus.wait(0, 10.0, calls, task_ids=["a"])

    publish_tasks(bus, "a", "b", "b", "a")  # one turn: the first "a" (1) is gone by the flush

    await calls.until_called()
    assert calls.calls == [([4], 4, True)]


async def test_waiters_for_different_readers_are_each_answered_with_their_own_events() -> None:
    bus = EventBus()
    every, only_a, only_b = Calls(), Calls(), Calls()
    bus.wait(0, 10.0, every)
    bus.wait(0, 10.0, only_a, task_ids=["a"])
    bus.wait(0, 10.0, only_b, task_ids=["b"])
    assert bus.waiting == 3

    publish_tasks(bus, "a")
    await every.until_called()
    await only_a.until_called()
    await asyncio.sleep(0.01)

    assert every.calls == [([1], 1, False)]
    assert only_a.calls == [([1], 1, False)]
    assert only_b.calls == []
    assert bus.waiting == 1
    bus.close()
    assert only_b.calls == [([], 1, False)]


async def test_many_timed_out_waiters_leave_nothing_registered() -> None:
    # Given many waiters, filtered and not, that all time out
    bus = EventBus()
    calls = Calls()
    for n in range(500):
        bus.wait(0, 0.01, calls, task_ids=[f"t{n}", "shared"] if n % 2 else ())
    assert bus.waiting == 500

    # When they expire
    await calls.until_called(500)

    # Then each was answered once with nothing, and no registration or timer is left
    assert calls.calls == [([], 0, False)] * 500
    assert bus.waiting == 0
    assert registered(bus) == ({}, {}, {}, False, None)
    # And a publish afterwards wakes no one and schedules nothing
    publish_tasks(bus, "shared")
    assert bus._flush_handle is None
    await asyncio.sleep(0.02)
    assert len(calls.calls) == 500


async def test_a_waiter_answered_by_an_event_is_not_answered_again_at_its_timeout() -> None:
    bus = EventBus()
    calls = Calls()
    bus.wait(0, 0.03, calls)
    publish_tasks(bus, "a")
    await calls.until_called()

    await asyncio.sleep(0.06)

    assert calls.calls == [([1], 1, False)]


async def test_a_waiter_whose_timeout_falls_in_the_turn_of_a_publish_is_answered_once_with_the_event() -> None:
    # Given a waiter whose timer is already due when an event is published (the loop was blocked)
    bus = EventBus()
    calls = Calls()
    bus.wait(0, 0.02, calls)
    time.sleep(0.03)
    publish_tasks(bus, "a")

    # When the loop runs both the flush and the timer
    await calls.until_called()
    await asyncio.sleep(0.01)

    # Then it is answered once, with the event
    assert calls.calls == [([1], 1, False)]
    assert registered(bus) == ({}, {}, {}, False, None)


async def test_a_callback_that_raises_is_logged_and_other_waiters_are_still_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    calls = Calls()

    def broken(events: list[events_pb2.Event], last: int, gap: bool) -> None:
        raise RuntimeError("reader went away")

    bus.wait(0, 10.0, broken)
    bus.wait(0, 10.0, calls)
    with caplog.at_level(logging.ERROR, logger="fastworker.controlplane.events"):
        publish_tasks(bus, "a")
        await calls.until_called()

    assert calls.calls == [([1], 1, False)]
    assert "event wait callback failed" in caplog.text
    assert bus.waiting == 0


def test_wait_needs_a_running_event_loop() -> None:
    bus = EventBus()
    calls = Calls()
    with pytest.raises(RuntimeError):
        bus.wait(0, 1.0, calls)
    assert calls.calls == []
    assert bus.waiting == 0


async def test_close_answers_pending_waiters_with_what_they_have_and_later_waits_at_once() -> None:
    # Given waiters pending, one of them woken by a publish in this very turn
    bus = EventBus()
    woken, idle, filtered = Calls(), Calls(), Calls()
    bus.wait(0, 10.0, woken)
    bus.wait(0, 10.0, filtered, task_ids=["zzz"])
    publish_tasks(bus, "a")
    assert bus._flush_handle is not None
    bus.wait(1, 10.0, idle)

    # When the bus closes
    bus.close()

    # Then every waiter is answered at once with what it can read, and nothing is left scheduled
    assert woken.calls == [([1], 1, False)]
    assert idle.calls == [([], 1, False)]
    assert filtered.calls == [([], 1, False)]
    assert registered(bus) == ({}, {}, {}, False, None)
    await asyncio.sleep(0.01)
    assert len(woken.calls) == len(idle.calls) == len(filtered.calls) == 1

    # And a later wait does not wait; publishing and reading still work
    later = Calls()
    bus.wait(1, 10.0, later)
    assert later.calls == [([], 1, False)]
    publish_tasks(bus, "b")
    assert seqs(bus.read(1)[0]) == [2]
    bus.close()  # twice is harmless


# ------------------------------------------------------------------------------------------ listeners


def test_listeners_get_every_event_as_it_is_published_until_they_unsubscribe() -> None:
    bus = EventBus()
    first: list[int] = []
    second: list[int] = []
    unsubscribe_first = bus.subscribe(lambda e: first.append(e.sequence))
    bus.subscribe(lambda e: second.append(e.sequence))

    publish_tasks(bus, "a")
    bus.publish(ONLINE, worker_id="w")
    unsubscribe_first()
    unsubscribe_first()  # twice is harmless
    publish_tasks(bus, "b")

    assert first == [1, 2]
    assert second == [1, 2, 3]


def test_the_same_listener_subscribed_twice_is_called_twice_and_unsubscribed_one_at_a_time() -> None:
    bus = EventBus()
    seen: list[int] = []
    listener: Callable[[events_pb2.Event], None] = lambda e: seen.append(e.sequence)  # noqa: E731
    one = bus.subscribe(listener)
    bus.subscribe(listener)

    publish_tasks(bus, "a")
    one()
    one()
    publish_tasks(bus, "b")

    assert seen == [1, 1, 2]


def test_a_listener_may_unsubscribe_itself_while_being_called() -> None:
    bus = EventBus()
    seen: list[int] = []
    others: list[int] = []

    def once(event: events_pb2.Event) -> None:
        seen.append(event.sequence)
        unsubscribe()

    unsubscribe = bus.subscribe(once)
    bus.subscribe(lambda e: others.append(e.sequence))
    publish_tasks(bus, "a", "b")

    assert seen == [1]
    assert others == [1, 2]


def test_a_listener_that_raises_is_logged_and_does_not_break_publishing(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[int] = []

    def broken(event: events_pb2.Event) -> None:
        raise ValueError("dashboard bug")

    bus.subscribe(broken)
    bus.subscribe(lambda e: seen.append(e.sequence))
    with caplog.at_level(logging.ERROR, logger="fastworker.controlplane.events"):
        publish_tasks(bus, "a")
        bus.publish(QUEUE, detail="purged")

    assert seen == [1, 2]
    assert bus.last_sequence == 2
    assert seqs(bus.read(0)[0]) == [1, 2]
    assert caplog.text.count("event listener") == 2
    assert "dashboard bug" in caplog.text


async def test_events_published_by_a_listener_reach_waiters_in_order() -> None:
    bus = EventBus()
    calls = Calls()

    def echo(event: events_pb2.Event) -> None:
        if event.kind == TASK:
            bus.publish(QUEUE, detail=f"after {event.sequence}")

    bus.subscribe(echo)
    bus.wait(0, 10.0, calls)
    publish_tasks(bus, "a")
    await calls.until_called()

    assert calls.calls == [([1, 2], 2, False)]
    assert calls.events[0][1].detail == "after 1"
