"""The worker API turns dispatch-channel frames into dispatcher calls and answers every frame, bad ones with a typed error.

Each test drives a real Coordinator (no local slots), Fleet, Dispatcher and WorkerApi on the test's
event loop through fake requests (see the ``dispatch_rig`` fixture); replies are decoded envelopes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from fastworker.controlplane.api import ClientApi
from fastworker.controlplane.records import CANCELLED, FAILURE, PENDING, RETRYING, RUNNING, SUCCESS, TaskRecord
from fastworker.protocol.framing import FRAME_PREFIX, MAGIC, decode_frame, encode_frame, new_envelope
from fastworker.protocol.payload import decode_value
from fastworker.protocol.v1 import error_pb2, task_pb2, worker_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

BOUND = 5.0


async def settle(turns: int = 5) -> None:
    """Let callbacks scheduled with call_soon (dispatch rounds) run."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], bound: float = BOUND) -> None:
    """Yield to the loop until predicate() holds (bounded)."""
    async with asyncio.timeout(bound):
        while not predicate():
            await asyncio.sleep(0.002)


def error_of(envelope: Envelope) -> tuple[int, str]:
    assert envelope.WhichOneof("body") == "error", f"expected an error, got {envelope.WhichOneof('body')}"
    return envelope.error.code, envelope.error.message


# ------------------------------------------------------------------------------------------- register


async def test_a_registration_is_accepted_with_the_heartbeat_settings_and_the_instance_id(dispatch_rig: Any) -> None:
    rig = dispatch_rig(heartbeat_interval=2.5, heartbeat_timeout=9.0)

    reply = rig.register("w1", {"resize": 2, "crop": 0}, capacity=3, pipe_id=17, correlation_id=41).envelope

    assert reply.WhichOneof("body") == "register_reply"
    assert reply.correlation_id == 41
    answer = reply.register_reply
    assert answer.accepted
    assert answer.reason == ""
    assert (answer.heartbeat_interval, answer.heartbeat_timeout) == (2.5, 9.0)
    assert answer.instance_id == rig.INSTANCE_ID
    worker = rig.fleet.get("w1")
    assert worker is not None
    assert (worker.host, worker.pid, worker.capacity, worker.version) == ("host-w1", 4242, 3, "0.1.0")
    assert worker.pipe_id == 17
    assert worker.task_names == {"resize", "crop"}
    assert worker.definitions["resize"].retries == 2
    assert worker.last_seen == rig.clock.now
    assert rig.coordinator.remote_task_names == {"resize", "crop"}


async def test_a_worker_registering_no_capacity_gets_one_slot(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    assert rig.register("w1", ["job"], capacity=0).envelope.register_reply.accepted
    assert rig.fleet.get("w1").capacity == 1


async def test_a_registration_without_tasks_is_refused(dispatch_rig: Any) -> None:
    rig = dispatch_rig()

    reply = rig.register("w1", [], correlation_id=5).envelope

    assert reply.correlation_id == 5
    answer = reply.register_reply
    assert not answer.accepted
    assert "at least one task" in answer.reason
    assert answer.instance_id == rig.INSTANCE_ID
    assert "w1" not in rig.fleet
    assert rig.coordinator.remote_task_names == frozenset()


async def test_a_registration_refused_for_its_own_definitions_is_final_so_that_the_worker_exits(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()

    answer = rig.register("w1", ["job"], queues=("no spaces",)).envelope.register_reply

    assert not answer.accepted and answer.final_refusal
    assert "no spaces" in answer.reason
    assert "w1" not in rig.fleet
    # Refused because another live process holds the id: not final (that process may go away).
    assert rig.register("w2", ["job"], pipe_id=1, incarnation="process-a").envelope.register_reply.accepted
    taken = rig.register("w2", ["job"], pipe_id=2, incarnation="process-b").envelope.register_reply
    assert not taken.accepted and taken.id_in_use and not taken.final_refusal


@pytest.mark.parametrize(
    "worker_id",
    ["", "w" * 201, "../workers/victim", "..", "nl\n2026-12-07 CRITICAL forged", "rtl\u202eevil", "controlplane"],
    ids=["empty", "too-long", "slash", "dot-dot", "newline", "bidi", "reserved"],
)
async def test_a_registration_with_a_bad_worker_id_is_refused_for_good(dispatch_rig: Any, worker_id: str) -> None:
    # A worker id is a path segment of the dashboard's URLs (/workers/ID/drain: "../" would drain
    # another worker) and is printed in logs and terminals.
    rig = dispatch_rig()

    answer = rig.register(worker_id, ["job"]).envelope.register_reply

    assert not answer.accepted and answer.final_refusal
    assert "worker_id" in answer.reason
    assert len(rig.fleet) == 0
    assert rig.coordinator.remote_task_names == frozenset()


# ----------------------------------------------------------------------------------------- bad frames


@pytest.mark.parametrize(
    "frame",
    [
        b"garbage",
        b"",
        MAGIC + bytes([9]) + new_envelope(1).SerializeToString(),
        FRAME_PREFIX + b"\xff\xff\xff\xff",
        FRAME_PREFIX,
    ],
    ids=["not-a-frame", "empty", "unknown-wire-format", "malformed-protobuf", "no-body"],
)
async def test_a_garbage_frame_gets_a_protocol_error_and_is_counted_as_rejected(
    dispatch_rig: Any, frame: bytes
) -> None:
    rig = dispatch_rig()

    reply = rig.send_frame(frame).envelope

    code, _ = error_of(reply)
    assert code == error_pb2.ERROR_CODE_PROTOCOL
    assert rig.coordinator.counters.rejected_frames == 1
    assert len(rig.fleet) == 0


async def test_a_frame_over_the_size_limit_gets_frame_too_large(dispatch_rig: Any) -> None:
    rig = dispatch_rig(max_frame_size=256)
    envelope = rig.envelope()
    envelope.register.worker_id = "w1"
    envelope.register.tasks.append(task_pb2.TaskDefinition(name="x" * 400))

    code, _ = error_of(rig.send(envelope).envelope)

    assert code == error_pb2.ERROR_CODE_FRAME_TOO_LARGE
    assert rig.coordinator.counters.rejected_frames == 1
    assert "w1" not in rig.fleet


async def test_a_frame_of_an_unsupported_protocol_version_gets_incompatible_version(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    envelope = rig.envelope()
    envelope.protocol_version = 99
    envelope.heartbeat.sender_id = "w1"

    code, _ = error_of(rig.send(envelope).envelope)

    assert code == error_pb2.ERROR_CODE_INCOMPATIBLE_VERSION
    assert rig.coordinator.counters.rejected_frames == 1


@pytest.mark.parametrize("kind", ["submit", "dispatch", "register_reply"])
async def test_a_message_this_channel_does_not_serve_gets_a_protocol_error(dispatch_rig: Any, kind: str) -> None:
    rig = dispatch_rig()
    envelope = rig.envelope()
    getattr(envelope, kind).SetInParent()

    code, message = error_of(rig.send(envelope).envelope)

    assert code == error_pb2.ERROR_CODE_PROTOCOL
    assert kind in message
    assert rig.coordinator.counters.rejected_frames == 1


@pytest.mark.parametrize("kind", ["work_request", "results", "heartbeat", "deregister"])
async def test_a_request_from_an_unregistered_worker_gets_not_registered(dispatch_rig: Any, kind: str) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    record = rig.submit("job")
    send: dict[str, Callable[[], Any]] = {
        "work_request": lambda: rig.pull("stranger", correlation_id=9),
        "results": lambda: rig.report(
            "stranger", rig.success(task_pb2.TaskSpec(task_id=record.task_id, attempt=1), 1), correlation_id=9
        ),
        "heartbeat": lambda: rig.heartbeat("stranger", correlation_id=9, draining=True),
        "deregister": lambda: rig.deregister("stranger", [record.task_id], correlation_id=9),
    }

    request = send[kind]()
    await settle()

    reply = request.envelope
    code, message = error_of(reply)
    assert code == error_pb2.ERROR_CODE_NOT_REGISTERED
    assert "stranger" in message and rig.INSTANCE_ID in message
    assert reply.correlation_id == 9
    assert [w.worker_id for w in rig.fleet] == ["w1"]
    assert record.state == PENDING
    assert rig.coordinator.counters.rejected_frames == 0


async def test_an_internal_error_while_serving_a_worker_is_answered_with_an_internal_error(
    dispatch_rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])

    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(rig.dispatcher, "results", broken)
    reply = rig.report("w1", correlation_id=12).envelope

    code, message = error_of(reply)
    assert code == error_pb2.ERROR_CODE_INTERNAL
    assert "boom" not in message  # internals stay in the log
    assert reply.correlation_id == 12


# ------------------------------------------------------------------------------------------ heartbeat


async def test_a_heartbeat_updates_rss_in_flight_and_draining_and_is_answered_with_a_heartbeat(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    worker = rig.fleet.get("w1")
    rig.clock.advance(3.0)

    reply = rig.heartbeat("w1", correlation_id=21, rss_bytes=123_456_789, in_flight=2, draining=True).envelope

    assert reply.WhichOneof("body") == "heartbeat"
    assert reply.correlation_id == 21
    assert reply.heartbeat.sender_id == rig.INSTANCE_ID
    assert reply.heartbeat.sent_at == rig.clock.now
    assert worker.rss_bytes == 123_456_789
    assert worker.draining
    assert worker.last_seen == rig.clock.now


async def test_a_draining_worker_gets_no_more_tasks(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    rig.register("w2", ["job"])
    held = rig.pull("w1", hold=30.0)
    await settle()
    assert not held.answered

    # w1 drains while its pull is held: the pull is answered at once, with nothing (the worker waits
    # for that answer before it hands back what it holds), and tasks that arrive then are not given to it
    rig.heartbeat("w1", draining=True)
    record = rig.submit("job")
    await settle()
    assert held.answered and held.tasks == []
    assert record.state == PENDING

    # Nor on a later pull
    later = rig.pull("w1", hold=0.1)
    await until(lambda: later.answered)
    assert later.tasks == []
    assert record.state == PENDING

    # A worker that is not draining takes it
    taker = rig.pull("w2")
    await settle()
    assert [s.task_id for s in taker.tasks] == [record.task_id]
    assert record.worker == "w2"


async def test_a_draining_worker_still_reports_the_results_of_its_running_tasks(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    record = rig.submit("job")
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks

    rig.heartbeat("w1", draining=True)
    rig.report("w1", rig.success(spec, "finished while draining"))

    assert record.state == SUCCESS
    assert rig.fleet.get("w1").processed == 1


async def running_on_w1(dispatch_rig: Any, retries: int | None = None) -> tuple[Any, TaskRecord, task_pb2.TaskSpec]:
    """A rig with worker w1 running one ``job``: (rig, its record, the spec w1 got)."""
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    record = rig.submit("job", retries=retries)
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks
    assert record.state == RUNNING
    return rig, record, spec


@pytest.mark.parametrize(
    ("change", "error_type", "named"),
    [
        (lambda o: setattr(o.result, "codec", task_pb2.CODEC_PICKLE), "PayloadError", "pickle"),
        (lambda o: setattr(o.result, "codec", 99), "PayloadError", "unknown payload codec 99"),
        (lambda o: setattr(o.result, "data", b"x" * (8 * 1024 * 1024 + 1)), "PayloadError", "exceeds the limit"),
        (lambda o: setattr(o, "state", task_pb2.TASK_STATE_UNSPECIFIED), "ProtocolError", "reported state 0"),
        (lambda o: setattr(o, "state", task_pb2.TASK_STATE_RUNNING), "ProtocolError", "an outcome is SUCCESS"),
        (lambda o: setattr(o.result, "data", b"\xc1\xc1\xc1"), "PayloadError", "its result is a corrupt payload"),
        (lambda o: setattr(o.result, "data", b"\x92\x01"), "PayloadError", "its result is a corrupt payload"),
        (
            lambda o: (setattr(o, "state", task_pb2.TASK_STATE_FAILURE), o.ClearField("result"), o.ClearField("error")),
            "ProtocolError",
            "reported a failure without its error",
        ),
    ],
    ids=["pickle-not-allowed", "unknown-codec", "oversized", "no-state", "running", "corrupt", "truncated", "no-error"],
)
async def test_an_outcome_the_control_plane_cannot_take_as_sent_fails_the_attempt_saying_why(
    dispatch_rig: Any, change: Callable[[worker_pb2.TaskOutcome], None], error_type: str, named: str
) -> None:
    rig, record, spec = await running_on_w1(dispatch_rig, retries=0)
    outcome = rig.success(spec, "a value")
    change(outcome)

    reply = rig.report("w1", outcome).envelope

    assert reply.WhichOneof("body") != "error"  # the frame itself is fine: the outcome fails its task
    assert record.state == FAILURE and record.result is None
    assert record.error is not None and record.error.type == error_type and named in record.error.message
    assert rig.fleet.get("w1").failed == 1


async def test_a_nan_retry_delay_from_a_worker_gets_the_backoff_and_other_schedules_go_on(
    dispatch_rig: Any,
) -> None:
    rig, record, spec = await running_on_w1(dispatch_rig, retries=1)
    outcome = rig.failure(spec, "Retry", "again")
    outcome.retry_requested = True
    outcome.retry_delay = float("nan")

    rig.report("w1", outcome)

    assert record.state == RETRYING
    # the backoff (its definition gives none) instead of NaN, which stalled every schedule
    assert record.eta == rig.clock()
    scheduled, _ = rig.coordinator.submit(rig.harness.spec("job", eta=rig.clock() + 0.05))
    rig.clock.advance(2.0)
    rig.coordinator._release_due()  # what its timer does when it fires

    assert (scheduled.state, record.state) == (PENDING, PENDING)


async def test_a_cancel_the_task_outran_says_not_cancelled_with_the_state_it_ended_in(dispatch_rig: Any) -> None:
    rig, record, spec = await running_on_w1(dispatch_rig)
    api = ClientApi(rig.coordinator)
    replies: list[bytes] = []
    cancel = new_envelope(77)
    cancel.cancel.task_id = record.task_id
    api.handle(encode_frame(cancel), replies.append)
    assert replies == []  # it waits for the worker to stop the task

    rig.report("w1", rig.success(spec, "done first"))  # the task ended before the stop reached it
    await until(lambda: bool(replies))

    body = decode_frame(replies[0]).cancel_reply
    assert record.state == SUCCESS
    assert not body.cancelled
    assert body.previous_state == task_pb2.TASK_STATE_SUCCESS  # the final state, not RUNNING


# --------------------------------------------------------------------------------------- work requests


async def test_the_reply_to_a_pull_echoes_the_requests_correlation_id(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])

    # Answered with tasks at once
    rig.submit("job")
    with_tasks = rig.pull("w1", correlation_id=1001)
    await settle()
    assert len(with_tasks.tasks) == 1
    assert with_tasks.envelope.correlation_id == 1001

    # Answered empty after its hold
    empty = rig.pull("w1", hold=0.1, correlation_id=1002)
    await until(lambda: empty.answered)
    assert empty.tasks == []
    assert empty.envelope.correlation_id == 1002


async def test_a_newer_pull_replaces_an_older_one_which_is_dropped_unanswered(dispatch_rig: Any) -> None:
    # The worker sent a new request on the same nng context: its socket no longer delivers an answer
    # to the older one, so an answer would only lose what it carried (stop orders, grants).
    rig = dispatch_rig()
    rig.register("w1", ["job"])
    older = rig.pull("w1", correlation_id=7)
    await settle()
    assert not older.answered

    newer = rig.pull("w1", correlation_id=8)
    assert older.dropped and older.replies == []

    record = rig.submit("job")
    await settle()
    assert [s.task_id for s in newer.tasks] == [record.task_id]
    assert newer.envelope.correlation_id == 8


async def cancelled_on_w1(dispatch_rig: Any) -> tuple[Any, Any, task_pb2.TaskSpec]:
    """A rig whose worker w1 runs a task whose cancel the control plane has just ordered: (rig, record, spec)."""
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=2)
    record = rig.submit("job")
    first = rig.pull("w1")
    await settle()
    (spec,) = first.tasks
    assert rig.coordinator.cancel(record.task_id)[0]
    return rig, record, spec


async def test_a_stop_order_is_repeated_on_every_answer_until_the_task_s_outcome_arrives(dispatch_rig: Any) -> None:
    # An answer the worker never read (it replaced its request meanwhile) must not lose the order.
    rig, record, spec = await cancelled_on_w1(dispatch_rig)

    unread = rig.pull("w1", hold=0.0)
    await asyncio.sleep(0.1)  # past the shortest hold (50 ms): answered empty, with the order
    assert list(unread.envelope.dispatch.cancel_task_ids) == [record.task_id]
    again = rig.pull("w1", hold=0.0)
    await asyncio.sleep(0.1)
    assert list(again.envelope.dispatch.cancel_task_ids) == [record.task_id]

    cancelled = worker_pb2.TaskOutcome(task_id=spec.task_id, attempt=spec.attempt, state=task_pb2.TASK_STATE_CANCELLED)
    rig.report("w1", cancelled)
    after = rig.pull("w1", hold=0.0)
    await asyncio.sleep(0.1)
    assert list(after.envelope.dispatch.cancel_task_ids) == []
    assert record.state == CANCELLED


async def test_a_task_retried_after_its_cancel_runs_again_without_the_old_stop_order(dispatch_rig: Any) -> None:
    # The order for attempt 1 must not stop attempt 2 on the same worker (it did, about 1 s later).
    rig, record, spec = await cancelled_on_w1(dispatch_rig)
    cancelled = worker_pb2.TaskOutcome(task_id=spec.task_id, attempt=spec.attempt, state=task_pb2.TASK_STATE_CANCELLED)
    rig.report("w1", cancelled)
    assert record.state == CANCELLED

    rig.coordinator.retry(record.task_id)
    again = rig.pull("w1")
    await settle()
    assert [(s.task_id, s.attempt) for s in again.tasks] == [(record.task_id, 2)]
    later = rig.pull("w1", hold=0.0)
    await asyncio.sleep(0.1)
    assert list(later.envelope.dispatch.cancel_task_ids) == []


async def test_outcomes_sent_with_a_pull_are_recorded_before_the_next_dispatch(harness: Any, dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"], capacity=1)
    first, second = rig.submit("job", 1), rig.submit("job", 2)
    pull = rig.pull("w1")
    await settle()
    (spec,) = pull.tasks
    assert spec.task_id == first.task_id

    # One message: "here is the result of my only slot, send the next task"
    envelope = rig.envelope(correlation_id=64)
    envelope.work_request.worker_id = "w1"
    envelope.work_request.hold = 5.0
    envelope.work_request.outcomes.append(rig.success(spec, "one"))
    next_pull = rig.send(envelope, rig.pipes["w1"])
    await settle()

    done = await harness.final(rig.coordinator, first.task_id)
    assert decode_value(done.result) == "one"
    assert [s.task_id for s in next_pull.tasks] == [second.task_id]
    assert next_pull.envelope.correlation_id == 64
    assert second.state == RUNNING
    assert rig.fleet.get("w1").processed == 1


async def test_results_and_deregister_are_acknowledged_with_the_requests_correlation_id(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    rig.register("w1", ["job"])

    results = rig.report("w1", correlation_id=301).envelope
    assert results.WhichOneof("body") == "ack"
    assert results.correlation_id == 301

    deregister = rig.deregister("w1", [], correlation_id=302).envelope
    assert deregister.WhichOneof("body") == "ack"
    assert deregister.correlation_id == 302
    assert "w1" not in rig.fleet


async def test_any_request_from_a_worker_refreshes_its_last_seen_and_a_new_connection_must_register_again(
    dispatch_rig: Any,
) -> None:
    rig = dispatch_rig(heartbeat_interval=0.1, heartbeat_timeout=15.0)
    rig.register("w1", ["job"], pipe_id=3, incarnation="process-a")
    worker = rig.fleet.get("w1")

    rig.clock.advance(4.0)
    rig.report("w1")
    assert worker.last_seen == rig.clock.now
    assert worker.pipe_id == 3

    # The worker reconnected: a request under its id on pipe 9 is not taken as its own...
    rig.pipes["w1"] = 9
    rig.clock.advance(4.0)
    code, _ = error_of(rig.heartbeat("w1").envelope)
    assert code == error_pb2.ERROR_CODE_NOT_REGISTERED
    assert worker.pipe_id == 3
    # ...until the same process registers again there: the record (and its leases) is resumed
    reply = rig.register("w1", ["job"], pipe_id=9, incarnation="process-a").envelope.register_reply
    assert reply.accepted and reply.resumed
    assert rig.fleet.get("w1") is worker and worker.pipe_id == 9
    rig.dispatcher.pipe_closed(3)
    rig.dispatcher.pipe_closed(9)
    rig.clock.advance(rig.dispatcher.heartbeat_timeout - 1)
    await asyncio.sleep(0.3)  # (reaper rounds)
    assert "w1" in rig.fleet  # it may come back on yet another connection...
    rig.clock.advance(2)
    await until(lambda: "w1" not in rig.fleet)  # ...until its heartbeat timeout passed
