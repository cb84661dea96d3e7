"""Flow control on the dispatch path: limited tasks go only to free slots, and every way out of RUNNING frees a place.

Each test drives a real Coordinator (no local slots), Fleet, Dispatcher and WorkerApi through fake
dispatch-channel requests (the ``dispatch_rig`` fixture). The limits come from the workers'
registered definitions, as they do from real subworkers; the gates' token buckets run on the real
monotonic clock, the coordinator's clock is moved by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from fastworker.controlplane.api import ClientApi
from fastworker.controlplane.dispatcher import WORKER_LOST
from fastworker.controlplane.flow import Gate
from fastworker.controlplane.records import CANCELLED, FAILURE, PENDING, RETRYING, RUNNING, SUCCESS
from fastworker.protocol.framing import decode_frame, encode_frame, new_envelope
from fastworker.protocol.v1 import task_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

BOUND = 5.0
#: One at a time; two at a time; one start per 100 ms (a bucket of one); no limit.
SOLO, PAIR, PACED, FREE = "solo", "pair", "paced", "free"
DEFINITIONS = (
    task_pb2.TaskDefinition(name=SOLO, retries=1, max_concurrency=1),
    task_pb2.TaskDefinition(name=PAIR, retries=1, max_concurrency=2),
    task_pb2.TaskDefinition(name=PACED, retries=1, rate_limit="10/s"),
    task_pb2.TaskDefinition(name=FREE, retries=1),
)


async def settle(turns: int = 5) -> None:
    """Let callbacks scheduled with call_soon (dispatch rounds) run."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], bound: float = BOUND) -> None:
    """Yield to the loop until predicate() holds (bounded)."""
    async with asyncio.timeout(bound):
        while not predicate():
            await asyncio.sleep(0.002)


def register(rig: Any, worker_id: str, capacity: int) -> None:
    """Register a worker defining every test task with its limits (like a real subworker's registration)."""
    pipe_id = rig.pipes.get(worker_id, 1000 + len(rig.pipes))
    rig.pipes[worker_id] = pipe_id
    envelope = rig.envelope()
    body = envelope.register
    body.worker_id = worker_id
    body.host = "host-" + worker_id
    body.pid = 4242
    body.capacity = capacity
    body.version = "0.1.0"
    body.tasks.extend(DEFINITIONS)
    assert rig.send(envelope, pipe_id).envelope.register_reply.accepted


async def pulled(rig: Any, worker_id: str, **kwargs: Any) -> Any:
    """A work request, after the dispatch round it triggers has run."""
    pull = rig.pull(worker_id, **kwargs)
    await settle()
    return pull


def gate(rig: Any, name: str) -> Gate:
    return rig.coordinator.queue.gates[name]


def ids(pull: Any) -> list[str]:
    return [spec.task_id for spec in pull.tasks]


def ask(rig: Any, build: Callable[[Envelope], None]) -> Envelope:
    """One client-channel request to the rig's coordinator, answered at once."""
    replies: list[bytes] = []
    envelope = new_envelope(9)
    build(envelope)
    ClientApi(rig.coordinator).handle(encode_frame(envelope), replies.append)
    assert len(replies) == 1
    return decode_frame(replies[0])


# ---------------------------------------------------------------------------------------- prefetch


async def test_a_limited_task_goes_only_to_a_free_slot_never_into_a_workers_prefetch_room(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=1)
    limited = [rig.submit(PAIR, n) for n in range(3)]
    free = [rig.submit(FREE, n) for n in range(3)]

    # One free slot and room for 4 prefetched: the first limited task takes the slot; the other
    # two may start (the limit is 2) but not here and now, so they stay at the gate, while the
    # unlimited tasks fill the prefetch room
    pull = rig.pull("w1", prefetch=4)
    await settle()
    assert ids(pull) == [limited[0].task_id] + [r.task_id for r in free]
    assert list(pull.envelope.dispatch.prefetched_task_ids) == [r.task_id for r in free]
    assert not limited[0].held and all(r.held for r in free)
    assert [r.state for r in limited[1:]] == [PENDING, PENDING]
    assert (gate(rig, PAIR).running, len(gate(rig, PAIR).waiting)) == (1, 2)

    # Its slot free again but prefetched tasks still held: still nothing limited is sent to it
    rig.report("w1", rig.success(pull.tasks[0], None))
    again = rig.pull("w1", hold=0.1, prefetch=4)
    await until(lambda: again.answered)
    assert again.tasks == []
    assert gate(rig, PAIR).running == 0

    # A worker with a free slot takes the next one at once
    register(rig, "w2", capacity=1)
    other = rig.pull("w2", prefetch=4)
    await settle()
    assert ids(other) == [limited[1].task_id]
    assert list(other.envelope.dispatch.prefetched_task_ids) == []
    assert (gate(rig, PAIR).running, len(gate(rig, PAIR).waiting)) == (1, 1)


async def test_only_free_slots_take_limited_tasks_even_when_the_limit_allows_more(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=2)
    rig.coordinator.set_limits(PAIR, max_concurrency=10)
    records = [rig.submit(PAIR, n) for n in range(5)]

    pull = rig.pull("w1", prefetch=8)
    await settle()
    assert ids(pull) == [r.task_id for r in records[:2]]
    assert list(pull.envelope.dispatch.prefetched_task_ids) == []
    assert (gate(rig, PAIR).running, len(gate(rig, PAIR).waiting)) == (2, 3)


async def test_tasks_prefetched_before_their_name_gained_limits_take_no_place_until_they_start_within_them(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=1)
    records = [rig.submit(FREE, n) for n in range(3)]
    pull = await pulled(rig, "w1", prefetch=4)
    first, *prefetched = pull.tasks
    assert list(pull.envelope.dispatch.prefetched_task_ids) == [spec.task_id for spec in prefetched]

    # Limited while two wait in the worker's prefetch queue: only the one that started counts
    rig.coordinator.set_limits(FREE, max_concurrency=1)
    assert (gate(rig, FREE).running, len(gate(rig, FREE).waiting)) == (1, 0)

    # Asked to start while the limit leaves no room: refused, and it waits at the gate, never started
    claim = rig.pull("w1", hold=0.1, claims=[prefetched[0].task_id])
    await until(lambda: claim.answered)
    assert list(claim.envelope.dispatch.granted_task_ids) == []
    assert (records[1].state, records[1].held, records[1].attempts) == (PENDING, False, 0)
    assert prefetched[0].task_id not in rig.fleet.get("w1").leases
    assert (gate(rig, FREE).running, len(gate(rig, FREE).waiting)) == (1, 1)

    # Once the running one ended there is room: the other prefetched one is granted, and takes it
    rig.report("w1", rig.success(first, None))
    assert gate(rig, FREE).running == 0
    claim = rig.pull("w1", hold=0.1, claims=[prefetched[1].task_id])
    await until(lambda: claim.answered)
    assert list(claim.envelope.dispatch.granted_task_ids) == [prefetched[1].task_id]
    assert (records[2].state, records[2].held) == (RUNNING, False)
    assert (gate(rig, FREE).running, len(gate(rig, FREE).waiting)) == (1, 1)
    assert records[1].state == PENDING  # behind the limit, with the place taken


# -------------------------------------------------------------------------------- places given back


@pytest.mark.parametrize("how", ["lose", "pipe_closed"])
@pytest.mark.parametrize("retries", [1, 0])
async def test_a_worker_lost_while_running_a_limited_task_gives_its_place_back(
    dispatch_rig: Any, how: str, retries: int
) -> None:
    rig = dispatch_rig(heartbeat_interval=0.05, heartbeat_timeout=15.0)  # (the reaper looks every 50 ms)
    register(rig, "w1", capacity=2)
    register(rig, "w2", capacity=2)
    first, second = rig.submit(SOLO, 1, retries=retries), rig.submit(SOLO, 2, retries=retries)
    assert ids(await pulled(rig, "w1")) == [first.task_id]
    waiting = rig.pull("w2")  # the limit is taken: w2 gets nothing, its pull is held
    await settle()
    assert not waiting.answered

    if how == "lose":
        rig.dispatcher.lose(rig.fleet.get("w1"), "test says so")
    else:
        rig.dispatcher.pipe_closed(rig.pipes["w1"])  # and w1 does not come back within the heartbeat timeout
        rig.clock.advance(rig.dispatcher.heartbeat_timeout + 1)
        rig.heartbeat("w2")
        await asyncio.sleep(0.2)
        if waiting.answered and not waiting.tasks:
            waiting = rig.pull("w2")  # (its hold, capped at the 50-ms heartbeat interval, ran out first)
    await settle()

    # Re-queued (retries left) and started again on w2, or failed and its place taken by the next
    if retries:
        assert ids(waiting) == [first.task_id]
        assert (first.state, first.worker, first.attempts) == (RUNNING, "w2", 2)
        assert second.state == PENDING
    else:
        assert first.state == FAILURE and first.error is not None and first.error.type == WORKER_LOST
        assert ids(waiting) == [second.task_id]
    assert (gate(rig, SOLO).running, len(gate(rig, SOLO).waiting)) == (1, 1 if retries else 0)


async def test_a_limited_task_a_worker_never_received_gives_its_place_back_and_is_counted_once(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=2)
    first, second = rig.submit(SOLO, 1), rig.submit(SOLO, 2)
    assert ids(await pulled(rig, "w1")) == [first.task_id]

    # The reply was lost: the next pull does not list it, so it is re-queued and sent again
    again = rig.pull("w1", held=[])
    await settle()
    assert ids(again) == [first.task_id]
    assert (first.attempts, gate(rig, SOLO).running) == (1, 1)
    assert second.state == PENDING


async def test_a_draining_worker_handing_back_a_limited_task_gives_its_place_back(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=2)
    register(rig, "w2", capacity=2)
    first, second = rig.submit(SOLO, 1), rig.submit(SOLO, 2)
    assert ids(await pulled(rig, "w1")) == [first.task_id]
    waiting = rig.pull("w2")

    rig.deregister("w1", [first.task_id])
    await settle()
    assert ids(waiting) == [first.task_id]
    assert (first.attempts, first.worker, gate(rig, SOLO).running) == (1, "w2", 1)
    assert second.state == PENDING


async def test_a_limited_task_that_fails_with_retries_left_frees_its_place_while_it_waits_to_retry(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=2)
    first, second = rig.submit(SOLO, 1), rig.submit(SOLO, 2)
    (spec,) = (await pulled(rig, "w1")).tasks

    rig.report("w1", rig.failure(spec, "ValueError", "flaky"))
    next_pull = rig.pull("w1")
    await settle()
    assert first.state in (RETRYING, PENDING)  # waiting for its retry delay, or back in the queue
    assert ids(next_pull) == [second.task_id]
    assert gate(rig, SOLO).running == 1


async def test_lowering_max_concurrency_below_the_running_count_starts_nothing_until_below(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=8)
    rig.coordinator.set_limits(PAIR, max_concurrency=4)
    records = [rig.submit(PAIR, n) for n in range(6)]
    specs = (await pulled(rig, "w1")).tasks
    assert len(specs) == 4

    rig.coordinator.set_limits(PAIR, max_concurrency=2)
    rig.report("w1", rig.success(specs[0], None))
    held = rig.pull("w1", hold=0.1)
    await until(lambda: held.answered)
    assert held.tasks == []  # 3 still run: above the new limit
    assert gate(rig, PAIR).running == 3

    rig.report("w1", rig.success(specs[1], None), rig.success(specs[2], None))
    after = rig.pull("w1")
    await settle()
    assert ids(after) == [records[4].task_id]
    assert (gate(rig, PAIR).running, len(gate(rig, PAIR).waiting)) == (2, 1)


# ---------------------------------------------------------------------------------------------- rate


async def test_a_pull_held_while_a_rate_limited_task_waits_for_a_token_is_answered_when_it_comes(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=4)
    records = [rig.submit(PACED, n) for n in range(3)]
    assert ids(await pulled(rig, "w1")) == [records[0].task_id]  # the bucket's one token

    loop = asyncio.get_running_loop()
    asked = loop.time()
    held = rig.pull("w1", hold=5.0)
    await settle()
    assert not held.answered  # the next token is 100 ms away
    await until(lambda: held.answered)
    assert ids(held) == [records[1].task_id]
    assert loop.time() - asked < 2.5, "answered by the gate's timer, not by the end of the hold"


# ------------------------------------------------------------------------------------------ operators


@pytest.mark.parametrize("name", [SOLO, PACED])
async def test_a_limited_task_waiting_at_its_gate_can_be_cancelled_and_never_starts(
    dispatch_rig: Any, name: str
) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=4)
    first, second, third = (rig.submit(name, n) for n in range(3))
    (spec,) = (await pulled(rig, "w1")).tasks
    assert spec.task_id == first.task_id

    assert rig.coordinator.cancel(second.task_id) == (True, PENDING)
    assert second.state == CANCELLED and second.error is not None
    assert len(gate(rig, name).waiting) == 1 and len(rig.coordinator.queue) == 1

    rig.report("w1", rig.success(spec, None))
    started: list[str] = []
    async with asyncio.timeout(BOUND):
        while third.state == PENDING:
            pull = rig.pull("w1", hold=0.05)
            await until(lambda pull=pull: pull.answered)  # type: ignore[misc]
            started += ids(pull)
    assert started == [third.task_id]
    assert second.state == CANCELLED and first.state == SUCCESS


async def test_purge_cancels_and_counts_the_tasks_waiting_at_a_gate_and_leaves_running_ones(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=1)
    running = rig.submit(SOLO, 0)
    gated = [rig.submit(SOLO, n) for n in range(1, 4)]
    free = [rig.submit(FREE, n) for n in range(2)]
    assert ids(await pulled(rig, "w1")) == [running.task_id]

    reply = ask(rig, lambda envelope: setattr(envelope.purge, "priority", task_pb2.PRIORITY_NORMAL))
    assert reply.purge_reply.purged == 5
    assert all(r.state == CANCELLED for r in gated + free)
    assert running.state == RUNNING
    assert (gate(rig, SOLO).running, len(gate(rig, SOLO).waiting), len(rig.coordinator.queue)) == (1, 0, 0)


async def test_queue_depths_and_ages_count_the_tasks_waiting_at_gates(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=1)
    for n in range(3):
        rig.submit(SOLO, n)
    rig.submit(SOLO, 9, priority=task_pb2.PRIORITY_HIGH)
    rig.submit(FREE, 1)
    rig.submit(FREE, 2)
    rig.clock.advance(5.0)

    body = ask(rig, lambda envelope: envelope.queues.SetInParent()).queues_reply
    depths = {q.priority: q.depth for q in body.queues}
    ages = {q.priority: q.oldest_age for q in body.queues}
    assert depths == {
        task_pb2.PRIORITY_CRITICAL: 0,
        task_pb2.PRIORITY_HIGH: 1,
        task_pb2.PRIORITY_NORMAL: 5,
        task_pb2.PRIORITY_LOW: 0,
    }
    assert ages[task_pb2.PRIORITY_HIGH] >= 5.0 and ages[task_pb2.PRIORITY_NORMAL] >= 5.0
    assert len(gate(rig, SOLO).waiting) == 4 and len(rig.coordinator.queue) == 6


async def test_a_name_whose_last_worker_leaves_drops_its_gate_and_its_tasks_wait_in_the_main_queue(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=1)
    running, waiting = rig.submit(SOLO, 1, retries=0), rig.submit(SOLO, 2)
    assert ids(await pulled(rig, "w1")) == [running.task_id]

    rig.dispatcher.lose(rig.fleet.get("w1"), "gone")
    assert running.state == FAILURE
    assert SOLO not in rig.coordinator.queue.gates
    assert waiting.state == PENDING and len(rig.coordinator.queue) == 1

    register(rig, "w2", capacity=1)  # defines it again: the gate is back, with the task behind it
    assert (gate(rig, SOLO).running, len(gate(rig, SOLO).waiting)) == (0, 1)
    assert ids(await pulled(rig, "w2")) == [waiting.task_id]
    assert gate(rig, SOLO).running == 1
    assert waiting.state == RUNNING and running.state != SUCCESS


async def test_a_paused_level_holds_its_gated_tasks_too(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    register(rig, "w1", capacity=2)
    rig.coordinator.set_paused(task_pb2.PRIORITY_NORMAL, True)
    gated, free = rig.submit(SOLO, 1), rig.submit(FREE, 1)
    held = rig.pull("w1", hold=0.1)
    await until(lambda: held.answered)
    assert held.tasks == []
    assert (gated.state, free.state, gate(rig, SOLO).running) == (PENDING, PENDING, 0)

    rig.coordinator.set_paused(task_pb2.PRIORITY_NORMAL, False)
    assert sorted(ids(await pulled(rig, "w1"))) == sorted([gated.task_id, free.task_id])
    assert gate(rig, SOLO).running == 1
