"""The client API turns request frames into coordinator calls and answers every frame, bad ones with a typed error."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from fastworker.controlplane.api import ClientApi
from fastworker.controlplane.queue import LEVELS
from fastworker.controlplane.records import BRIEF_ERROR_MESSAGE, CANCELLED
from fastworker.protocol.framing import FRAME_PREFIX, decode_frame, encode_frame, new_envelope
from fastworker.protocol.payload import decode_value, encode_arguments
from fastworker.protocol.v1 import error_pb2, task_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope
from fastworker.worker.executor import MAX_ERROR_MESSAGE

BOUND = 10.0


class Replies:
    """Captures the frames a ClientApi sends back, decoded."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def __call__(self, frame: bytes) -> None:
        self.frames.append(frame)

    @property
    def envelopes(self) -> list[Envelope]:
        return [decode_frame(frame) for frame in self.frames]

    def only(self) -> Envelope:
        assert len(self.frames) == 1, f"expected one reply, got {len(self.frames)}"
        return self.envelopes[0]

    async def next(self, count: int = 1) -> Envelope:
        """Wait until at least count replies arrived; return the count-th."""
        async with asyncio.timeout(BOUND):
            while len(self.frames) < count:
                await asyncio.sleep(0.002)
        return self.envelopes[count - 1]


def request(build: Callable[[Envelope], None], correlation_id: int = 7, **fields: Any) -> bytes:
    envelope = new_envelope(correlation_id)
    for name, value in fields.items():
        setattr(envelope, name, value)
    build(envelope)
    return encode_frame(envelope)


def ask(api: ClientApi, build: Callable[[Envelope], None], correlation_id: int = 7, **fields: Any) -> Envelope:
    """Send one request that is answered at once (``fields``: envelope fields); return the decoded reply."""
    replies = Replies()
    api.handle(request(build, correlation_id, **fields), replies)
    reply = replies.only()
    assert reply.correlation_id == correlation_id
    return reply


@pytest.fixture
def api_for(harness: Any) -> Callable[..., ClientApi]:
    """Makes a ClientApi over a fresh coordinator with tasks add, boom and echo registered."""

    def add(x: int, y: int) -> int:
        return x + y

    def boom() -> None:
        raise ValueError("boom")

    harness.task(add)
    harness.task(boom)
    harness.task(lambda value: value, name="echo", priority="high")

    def make(*, max_frame_size: int = 1024 * 1024, instance_id: str = "", **coordinator_kwargs: Any) -> ClientApi:
        coordinator_kwargs.setdefault("local_concurrency", 0)
        return ClientApi(
            harness.coordinator(**coordinator_kwargs), max_frame_size=max_frame_size, instance_id=instance_id
        )

    return make


def submit(spec: task_pb2.TaskSpec, wait: float = 0.0) -> Callable[[Envelope], None]:
    def build(envelope: Envelope) -> None:
        envelope.submit.task.CopyFrom(spec)
        envelope.submit.wait = wait

    return build


# --------------------------------------------------------------------------------------------- bad frames


def assert_rejected(api: ClientApi, data: bytes, code: int, rejected_before: int = 0) -> error_pb2.Error:
    replies = Replies()
    api.handle(data, replies)
    reply = replies.only()
    assert reply.WhichOneof("body") == "error"
    assert reply.error.code == code, error_pb2.ErrorCode.Name(reply.error.code)  # type: ignore[arg-type]
    assert reply.error.message
    assert api.coordinator.counters.rejected_frames == rejected_before + 1
    return reply.error


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage bytes",
        b"FW",
        FRAME_PREFIX + b"\xff\xff\xff\xff",
        b"FW\x09" + b"\x00" * 10,
        FRAME_PREFIX + new_envelope(1).SerializeToString(),
    ],
    ids=["empty", "garbage", "short", "bad-protobuf", "bad-wire-format", "no-body"],
)
async def test_bytes_that_are_not_a_request_frame_get_a_protocol_error_and_are_counted(
    api_for: Callable[..., ClientApi], data: bytes
) -> None:
    assert_rejected(api_for(), data, error_pb2.ERROR_CODE_PROTOCOL)


async def test_a_frame_over_the_size_limit_gets_frame_too_large(api_for: Callable[..., ClientApi]) -> None:
    api = api_for(max_frame_size=1024)
    frame = request(lambda e: e.status.task_ids.extend(f"id-{i:04d}" for i in range(200)))
    assert len(frame) > 1024

    error = assert_rejected(api, frame, error_pb2.ERROR_CODE_FRAME_TOO_LARGE)

    assert "1024" in error.message


async def test_a_frame_of_an_unsupported_protocol_version_gets_incompatible_version(
    api_for: Callable[..., ClientApi],
) -> None:
    frame = request(lambda e: e.status.task_ids.append("x"), protocol_version=99)

    error = assert_rejected(api_for(), frame, error_pb2.ERROR_CODE_INCOMPATIBLE_VERSION)

    assert "99" in error.message


@pytest.mark.parametrize("body", ["heartbeat", "submit_reply", "register", "error", "ack"])
async def test_a_message_this_channel_does_not_serve_gets_a_protocol_error(
    api_for: Callable[..., ClientApi], body: str
) -> None:
    frame = request(lambda e: getattr(e, body).SetInParent())

    error = assert_rejected(api_for(), frame, error_pb2.ERROR_CODE_PROTOCOL)

    assert body in error.message


async def test_every_rejected_frame_is_counted_and_good_requests_still_work_after_them(
    api_for: Callable[..., ClientApi],
) -> None:
    api = api_for(max_frame_size=4096)  # room for the stats reply (its two-minute history is ~1.5 KB)
    for n, data in enumerate([b"junk", b"x" * 5000, request(lambda e: e.heartbeat.SetInParent())]):
        api.handle(data, Replies())
        assert api.coordinator.counters.rejected_frames == n + 1

    reply = ask(api, lambda e: e.stats.SetInParent())

    assert reply.stats_reply.rejected_frames == 3


async def test_a_refused_request_is_answered_with_its_error_code_and_correlation_id_and_is_not_a_bad_frame(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for()

    reply = ask(api, submit(harness.spec("no.such.task")), correlation_id=41)

    assert reply.WhichOneof("body") == "error"
    assert reply.error.code == error_pb2.ERROR_CODE_UNKNOWN_TASK
    assert api.coordinator.counters.rejected_frames == 0


async def test_an_unexpected_error_while_handling_is_answered_as_internal(
    api_for: Callable[..., ClientApi], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = api_for()

    def broken(task_id: str) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(api.coordinator, "find", broken)

    reply = ask(api, lambda e: e.status.task_ids.append("x"), correlation_id=5)

    assert reply.error.code == error_pb2.ERROR_CODE_INTERNAL
    assert "bug" not in reply.error.message  # internals are logged, not sent


# ---------------------------------------------------------------------------------------------- submits


async def test_submit_replies_with_the_task_id_and_state_and_flags_a_repeat_as_duplicate(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for()
    spec = harness.spec("add", 1, 2, task_id="t-1")

    first = ask(api, submit(spec), correlation_id=11)
    second = ask(api, submit(spec), correlation_id=12)

    assert first.WhichOneof("body") == "submit_reply"
    assert first.submit_reply.task_id == "t-1"
    assert first.submit_reply.state == task_pb2.TASK_STATE_PENDING
    assert not first.submit_reply.duplicate
    assert not first.submit_reply.HasField("task")  # not final yet
    assert second.correlation_id == 12
    assert second.submit_reply.duplicate
    assert api.coordinator.counters.submitted == 1


async def test_submit_with_wait_replies_once_the_task_is_final_with_its_info(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for(local_concurrency=1)
    replies = Replies()

    api.handle(request(submit(harness.spec("add", 20, 22, task_id="w-1"), wait=5.0), correlation_id=99), replies)
    reply = await replies.next()

    assert reply.correlation_id == 99
    body = reply.submit_reply
    assert body.task_id == "w-1"
    assert body.state == task_pb2.TASK_STATE_SUCCESS
    assert body.task.task_id == "w-1"
    assert body.task.worker == "controlplane"
    assert decode_value(body.task.result) == 42
    await asyncio.sleep(0.05)
    assert len(replies.frames) == 1


async def test_submit_with_wait_replies_with_the_current_state_when_the_wait_ends_first(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for()  # no local slots: the task stays PENDING
    replies = Replies()

    api.handle(request(submit(harness.spec("add", 1, 1), wait=0.1), correlation_id=3), replies)
    assert replies.frames == []
    reply = await replies.next()

    assert reply.correlation_id == 3
    assert reply.submit_reply.state == task_pb2.TASK_STATE_PENDING


async def test_a_batch_reports_one_outcome_per_task_in_order_with_refusals_in_place(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for()
    specs = [
        harness.spec("add", 1, 2, task_id="b-1"),
        harness.spec("no.such.task", task_id="b-2"),
        harness.spec("echo", "x", task_id="b-3"),
    ]

    reply = ask(api, lambda e: e.submit_batch.tasks.extend(specs), correlation_id=21)

    outcomes = reply.submit_batch_reply.outcomes
    assert [o.task_id for o in outcomes] == ["b-1", "b-2", "b-3"]
    assert [o.WhichOneof("outcome") for o in outcomes] == ["accepted", "error", "accepted"]
    assert outcomes[0].accepted.task_id == "b-1"
    assert outcomes[0].accepted.state == task_pb2.TASK_STATE_PENDING
    assert not outcomes[0].accepted.duplicate
    assert outcomes[1].error.code == error_pb2.ERROR_CODE_UNKNOWN_TASK
    assert "no.such.task" in outcomes[1].error.message
    assert outcomes[2].accepted.task_id == "b-3"
    assert api.coordinator.counters.submitted == 2


async def test_a_batch_repeating_a_task_id_accepts_it_once(api_for: Callable[..., ClientApi], harness: Any) -> None:
    api = api_for()
    spec = harness.spec("add", 1, 2, task_id="dup")

    reply = ask(api, lambda e: e.submit_batch.tasks.extend([spec, spec]))

    duplicates = [o.accepted.duplicate for o in reply.submit_batch_reply.outcomes]
    assert duplicates == [False, True]
    assert api.coordinator.counters.submitted == 1


async def test_a_batch_whose_answer_could_not_fit_a_frame_is_refused_whole_before_any_is_accepted(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    # Long ids and no arguments: the request fits the frame, its answer (each id twice) would not
    api = api_for(max_frame_size=8192)
    specs = [harness.spec("add", task_id=f"{n:03d}" + "x" * 147) for n in range(40)]
    envelope = new_envelope(5)
    envelope.submit_batch.tasks.extend(specs)
    assert len(encode_frame(envelope)) < 8192

    reply = ask(api, lambda e: e.submit_batch.tasks.extend(specs), correlation_id=5)

    assert reply.error.code == error_pb2.ERROR_CODE_FRAME_TOO_LARGE
    assert "a batch of 40 tasks, none accepted" in reply.error.message
    assert api.coordinator.counters.submitted == 0 and len(api.coordinator.queue) == 0


async def test_a_batch_whose_request_is_large_but_whose_answer_fits_is_accepted(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    # Short ids and large arguments: twice the request would not fit the frame, the answer does
    api = api_for(max_frame_size=8192)
    specs = [harness.spec("echo", "y" * 120, task_id=f"b-{n}") for n in range(40)]
    envelope = new_envelope(6)
    envelope.submit_batch.tasks.extend(specs)
    assert 4096 < len(encode_frame(envelope)) < 8192

    reply = ask(api, lambda e: e.submit_batch.tasks.extend(specs), correlation_id=6)

    assert [o.accepted.task_id for o in reply.submit_batch_reply.outcomes] == [f"b-{n}" for n in range(40)]
    assert api.coordinator.counters.submitted == 40


# ---------------------------------------------------------------------------------------------- queries


async def test_status_lists_known_tasks_in_request_order_and_the_missing_ids(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for()
    api.coordinator.submit(harness.spec("add", 1, 2, task_id="s-1"))
    api.coordinator.submit(harness.spec("echo", "hi", task_id="s-2"))

    reply = ask(api, lambda e: e.status.task_ids.extend(["s-2", "nope", "s-1", "gone"]), correlation_id=8)

    body = reply.status_reply
    assert [t.task_id for t in body.tasks] == ["s-2", "s-1"]
    assert list(body.missing) == ["nope", "gone"]
    assert body.tasks[0].name == "echo"
    assert body.tasks[0].priority == task_pb2.PRIORITY_HIGH
    assert body.tasks[0].state == task_pb2.TASK_STATE_PENDING
    assert not body.tasks[0].HasField("arguments")


async def test_status_of_a_finished_task_carries_its_result(api_for: Callable[..., ClientApi], harness: Any) -> None:
    api = api_for(local_concurrency=1)
    record, _ = api.coordinator.submit(harness.spec("add", 2, 2))
    await harness.final(api.coordinator, record.task_id)

    reply = ask(api, lambda e: e.status.task_ids.append(record.task_id))

    (info,) = reply.status_reply.tasks
    assert info.state == task_pb2.TASK_STATE_SUCCESS
    assert decode_value(info.result) == 4


async def test_a_reply_over_the_frame_limit_becomes_a_frame_too_large_error(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for(local_concurrency=1, max_frame_size=1024)
    record, _ = api.coordinator.submit(harness.spec("echo", "x" * 4000))
    await harness.final(api.coordinator, record.task_id)

    reply = ask(api, lambda e: e.status.task_ids.append(record.task_id), correlation_id=77)

    assert reply.error.code == error_pb2.ERROR_CODE_FRAME_TOO_LARGE
    assert reply.correlation_id == 77


async def test_a_wait_naming_an_unknown_id_replies_at_once_and_a_wait_replies_when_its_task_finishes(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for(local_concurrency=1)
    record, _ = api.coordinator.submit(harness.spec("boom"))
    replies = Replies()

    def build(ids: list[str]) -> Callable[[Envelope], None]:
        def fill(envelope: Envelope) -> None:
            envelope.wait.task_ids.extend(ids)
            envelope.wait.timeout = 5.0

        return fill

    # An unknown id: its caller fails on it now, not once the other task ends
    api.handle(request(build([record.task_id, "unknown"]), correlation_id=31), replies)
    reply = await replies.next()
    assert reply.correlation_id == 31
    body = reply.wait_reply
    assert list(body.missing) == ["unknown"]  # every requested id is accounted for
    assert [t.task_id for t in body.finished] + list(body.pending) == [record.task_id]

    # A wait on the task alone replies when it finishes, with its info
    api.handle(request(build([record.task_id]), correlation_id=32), replies)
    reply = await replies.next(2)
    assert reply.correlation_id == 32
    body = reply.wait_reply
    assert [t.task_id for t in body.finished] == [record.task_id]
    assert body.finished[0].state == task_pb2.TASK_STATE_FAILURE
    assert body.finished[0].error.type == "ValueError"
    assert list(body.pending) == [] and list(body.missing) == []


async def test_wait_for_final_and_unknown_tasks_replies_at_once(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for(local_concurrency=1)
    record, _ = api.coordinator.submit(harness.spec("add", 1, 2))
    await harness.final(api.coordinator, record.task_id)

    def build(envelope: Envelope) -> None:
        envelope.wait.task_ids.extend([record.task_id, "unknown"])
        envelope.wait.timeout = 30.0

    reply = ask(api, build, correlation_id=32)

    assert [t.task_id for t in reply.wait_reply.finished] == [record.task_id]
    assert list(reply.wait_reply.missing) == ["unknown"]


async def test_a_wait_whose_results_exceed_one_frame_lists_the_rest_as_pending_for_the_next_ask(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for(local_concurrency=2, max_frame_size=1024 * 1024)
    records = [api.coordinator.submit(harness.spec("echo", str(i) * 400_000))[0] for i in range(4)]
    ids = [record.task_id for record in records]
    for task_id in ids:
        await harness.final(api.coordinator, task_id)
    received: dict[str, int] = {}
    asks = 0
    while len(received) < len(ids):
        asks += 1
        assert asks <= len(ids), "no progress"
        wanted = [task_id for task_id in ids if task_id not in received]

        def build(envelope: Envelope, wanted: list[str] = wanted) -> None:
            envelope.wait.task_ids.extend(wanted)
            envelope.wait.timeout = 5.0

        replies = Replies()
        api.handle(request(build, correlation_id=40 + asks), replies)
        frame = replies.frames[0]
        assert len(frame) <= 1024 * 1024  # it fits the frame limit the client reads with
        body = replies.only().wait_reply
        assert body.finished, "each reply carries at least one result"
        for info in body.finished:
            received[info.task_id] = len(decode_value(info.result))
        assert set(body.pending) == set(wanted) - {info.task_id for info in body.finished}

    assert received == dict.fromkeys(ids, 400_000)
    assert asks > 1


@pytest.mark.parametrize("allow_pickle", [False, True])
async def test_arguments_in_a_codec_this_control_plane_does_not_accept_are_refused_at_the_door(
    api_for: Callable[..., ClientApi], harness: Any, allow_pickle: bool
) -> None:
    api = api_for(allow_pickle=allow_pickle)
    pickled = harness.spec("echo", "x")
    pickled.arguments.CopyFrom(encode_arguments(["x"], {}, allow_pickle=True))
    pickled.arguments.codec = task_pb2.CODEC_PICKLE
    unknown = harness.spec("echo", "y")
    unknown.arguments.codec = 7  # type: ignore[assignment]

    single = ask(api, submit(pickled))
    batch = ask(api, lambda envelope: envelope.submit_batch.tasks.extend([unknown, harness.spec("echo", "z")]))

    if allow_pickle:
        assert single.submit_reply.task_id == pickled.task_id
    else:
        assert single.error.code == error_pb2.ERROR_CODE_PAYLOAD
        assert "pickle" in single.error.message and "--allow-pickle" in single.error.message
        assert api.coordinator.find(pickled.task_id) is None
    refused, accepted = batch.submit_batch_reply.outcomes
    assert refused.error.code == error_pb2.ERROR_CODE_PAYLOAD
    assert "unknown payload codec 7" in refused.error.message
    assert api.coordinator.find(unknown.task_id) is None
    assert accepted.HasField("accepted")
    # Counted per frame, as the counter says: the single refused one, and the batch once
    assert api.coordinator.counters.rejected_frames == (1 if allow_pickle else 2)
    many = [harness.spec("echo", n) for n in range(5)]
    for spec in many:
        spec.arguments.codec = 7  # type: ignore[assignment]
    ask(api, lambda envelope: envelope.submit_batch.tasks.extend(many))
    assert api.coordinator.counters.rejected_frames == (2 if allow_pickle else 3)


async def test_a_flood_of_garbage_client_frames_is_counted_in_full_but_logged_once(
    api_for: Callable[..., ClientApi], caplog: pytest.LogCaptureFixture
) -> None:
    api = api_for()
    replies: list[bytes] = []
    with caplog.at_level(logging.WARNING, logger="fastworker.controlplane.api"):
        for _ in range(1000):
            api.handle(b"garbage bytes", replies.append)

    assert len(replies) == 1000  # every frame still gets its typed error
    assert api.coordinator.counters.rejected_frames == 1000
    assert len([r for r in caplog.records if "refused a client frame" in r.getMessage()]) == 1


async def test_wait_that_times_out_replies_with_the_pending_ids(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for()
    record, _ = api.coordinator.submit(harness.spec("add", 1, 2))
    replies = Replies()

    def build(envelope: Envelope) -> None:
        envelope.wait.task_ids.append(record.task_id)
        envelope.wait.timeout = 0.05

    api.handle(request(build, correlation_id=33), replies)
    reply = await replies.next()

    assert reply.correlation_id == 33
    assert list(reply.wait_reply.pending) == [record.task_id]
    assert list(reply.wait_reply.finished) == []


async def test_cancel_replies_whether_it_cancelled_and_the_previous_state(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for()
    record, _ = api.coordinator.submit(harness.spec("add", 1, 2))

    first = ask(api, lambda e: setattr(e.cancel, "task_id", record.task_id), correlation_id=51)
    second = ask(api, lambda e: setattr(e.cancel, "task_id", record.task_id), correlation_id=52)
    unknown = ask(api, lambda e: setattr(e.cancel, "task_id", "never-seen"), correlation_id=53)

    assert first.cancel_reply.cancelled
    assert first.cancel_reply.previous_state == task_pb2.TASK_STATE_PENDING
    assert not second.cancel_reply.cancelled
    assert second.cancel_reply.previous_state == task_pb2.TASK_STATE_CANCELLED
    assert unknown.error.code == error_pb2.ERROR_CODE_TASK_NOT_FOUND


async def test_retry_replies_with_the_new_state_and_refuses_a_task_that_is_not_final(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for()
    record, _ = api.coordinator.submit(harness.spec("add", 1, 2))

    refused = ask(api, lambda e: setattr(e.retry, "task_id", record.task_id), correlation_id=61)
    api.coordinator.cancel(record.task_id)
    retried = ask(api, lambda e: setattr(e.retry, "task_id", record.task_id), correlation_id=62)

    assert refused.error.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    assert retried.WhichOneof("body") == "retry_reply"
    assert retried.retry_reply.state == task_pb2.TASK_STATE_PENDING


@pytest.mark.parametrize("kind", ["cancel", "retry", "purge", "workflow"])
async def test_an_action_sent_again_gets_its_first_attempts_answer_not_the_answer_of_a_second_run(
    api_for: Callable[..., ClientApi], harness: Any, kind: str
) -> None:
    # A client sends an attempt again when the first got no answer in time (a stalled control
    # plane): both arrive. The second found the first's work done and answered "not cancelled",
    # "not retryable" (the caller may submit the work again), "purged 0"
    api = api_for()
    api.coordinator.queue.paused.add(task_pb2.PRIORITY_LOW)
    records = [api.coordinator.submit(spec_for("add", f"low-{n}"))[0] for n in range(3)]
    if kind == "retry":
        api.coordinator.cancel(records[0].task_id)
    workflow_id = "wf-1"
    if kind == "workflow":
        api.coordinator.submit_workflow(workflow_id, [spec_for("add", "step-1"), spec_for("add", "step-2")])
    builds: dict[str, Callable[[Envelope], None]] = {
        "cancel": lambda e: setattr(e.cancel, "task_id", records[0].task_id),
        "retry": lambda e: setattr(e.retry, "task_id", records[0].task_id),
        "purge": lambda e: setattr(e.purge, "priority", task_pb2.PRIORITY_LOW),
        "workflow": lambda e: (setattr(e.workflow, "workflow_id", workflow_id), setattr(e.workflow, "cancel", True)),
    }
    frame = request(builds[kind], correlation_id=81)

    answers = []
    for _ in range(2):  # the attempt, and the same attempt sent again
        replies = Replies()
        api.handle(frame, replies)
        answers.append(replies.only())

    assert answers[0] == answers[1] and api.resends.replayed == 1
    first = answers[0]
    expected = {
        "cancel": lambda: (
            first.cancel_reply.cancelled and first.cancel_reply.previous_state == task_pb2.TASK_STATE_PENDING
        ),
        "retry": lambda: first.retry_reply.state == task_pb2.TASK_STATE_PENDING,
        "purge": lambda: first.purge_reply.purged == 3,
        "workflow": lambda: first.workflow_reply.cancelled == 2,
    }
    assert expected[kind](), first
    # A new request (its own correlation id) is answered afresh
    again = ask(api, builds[kind], correlation_id=82)
    assert again != first and api.resends.replayed == 1


async def test_stats_report_the_coordinators_counters(api_for: Callable[..., ClientApi], harness: Any) -> None:
    api = api_for()
    api.coordinator.submit(harness.spec("add", 1, 2))
    api.coordinator.submit(harness.spec("add", 1, 2, eta=4_000_000_000.0))
    cancelled, _ = api.coordinator.submit(harness.spec("add", 1, 2))
    api.coordinator.cancel(cancelled.task_id)

    reply = ask(api, lambda e: e.stats.SetInParent(), correlation_id=71)

    s = reply.stats_reply
    assert (s.submitted, s.succeeded, s.failed, s.cancelled, s.retried) == (3, 0, 0, 1, 0)
    assert (s.queued, s.scheduled, s.running, s.workers) == (1, 1, 0, 0)
    assert s.cache_size == 1
    assert s.uptime >= 0
    assert s.rejected_frames == 0
    assert s.executed_locally == 0


async def test_queues_report_every_level_in_dispatch_order(api_for: Callable[..., ClientApi], harness: Any) -> None:
    api = api_for(max_queue=50)
    api.coordinator.submit(harness.spec("add", 1, 2))  # normal
    api.coordinator.submit(harness.spec("echo", 1))  # high by default
    api.coordinator.submit(harness.spec("echo", 2))
    api.coordinator.submit(harness.spec("echo", 3, eta=4_000_000_000.0))
    api.coordinator.queue.paused.add(task_pb2.PRIORITY_LOW)

    reply = ask(api, lambda e: e.queues.SetInParent(), correlation_id=72)

    body = reply.queues_reply
    assert [q.priority for q in body.queues] == list(LEVELS)
    assert [q.depth for q in body.queues] == [0, 2, 1, 0]
    assert [q.paused for q in body.queues] == [False, False, False, True]
    assert body.queues[1].oldest_age >= 0
    assert body.queues[0].oldest_age == 0
    assert body.scheduled == 1
    assert body.running == 0
    assert body.max_queue == 50


async def test_registered_tasks_lists_every_task_definition_sorted_by_name(
    api_for: Callable[..., ClientApi],
) -> None:
    reply = ask(api_for(), lambda e: e.registered_tasks.SetInParent(), correlation_id=73)

    tasks = reply.registered_tasks_reply.tasks
    assert [t.name for t in tasks] == ["add", "boom", "echo"]
    assert tasks[2].priority == task_pb2.PRIORITY_HIGH


async def test_workers_replies_with_an_empty_list_for_now(api_for: Callable[..., ClientApi]) -> None:
    reply = ask(api_for(), lambda e: e.workers.SetInParent(), correlation_id=74)

    assert reply.WhichOneof("body") == "workers_reply"


# ------------------------------------------------------------------------------- direct replies from slots


async def test_a_submit_with_wait_is_answered_from_the_slot_thread_before_the_loop_finalizes_it(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    # Given a waiting submit of a sync task that runs on a slot thread
    api = api_for(local_concurrency=1)
    replies = Replies()
    api.handle(request(submit(harness.spec("add", 1, 2, task_id="direct-1"), wait=5.0)), replies)

    # When the reply arrives
    async with asyncio.timeout(BOUND):
        while not replies.frames:
            await asyncio.sleep(0)
    reply = decode_frame(replies.frames[0]).submit_reply

    # Then it carries the final state and result, and it is the only reply ever sent
    assert reply.state == task_pb2.TASK_STATE_SUCCESS
    assert decode_value(reply.task.result) == 3
    assert reply.task.finished_at >= reply.task.started_at > 0
    await asyncio.sleep(0.05)
    assert len(replies.frames) == 1


async def test_a_status_right_after_a_direct_reply_sees_the_task_final(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    # Given a submit answered directly by the slot thread
    api = api_for(local_concurrency=1)
    coordinator = api.coordinator
    replies = Replies()
    api.handle(request(submit(harness.spec("add", 2, 2, task_id="ryw-1"), wait=5.0)), replies)
    async with asyncio.timeout(BOUND):
        while not replies.frames:
            await asyncio.sleep(0)

    # When the client asks for its status at once (possibly before the loop took the outcome in)
    status = ask(api, lambda envelope: envelope.status.task_ids.append("ryw-1"))

    # Then the status is final: a client never reads a task older than a reply it already got
    assert status.status_reply.tasks[0].state == task_pb2.TASK_STATE_SUCCESS
    assert decode_value(status.status_reply.tasks[0].result) == 4
    assert coordinator.find("ryw-1") is not None and coordinator.find("ryw-1").is_final


async def test_a_failing_task_submitted_with_wait_is_answered_once_with_its_error(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    api = api_for(local_concurrency=1)
    replies = Replies()
    api.handle(request(submit(harness.spec("boom", task_id="direct-2"), wait=5.0)), replies)
    reply = (await replies.next()).submit_reply
    assert reply.state == task_pb2.TASK_STATE_FAILURE
    assert reply.task.error.type == "ValueError"
    assert "boom" in reply.task.error.traceback
    await asyncio.sleep(0.05)
    assert len(replies.frames) == 1


# ------------------------------------------------------------------------------------------ admin requests


def spec_for(name: str, task_id: str, priority: int = task_pb2.PRIORITY_LOW) -> task_pb2.TaskSpec:
    return task_pb2.TaskSpec(
        task_id=task_id,
        name=name,
        priority=priority,  # type: ignore[arg-type]
        arguments=encode_arguments((), {}),
    )


@pytest.mark.parametrize("kind", ["purge", "pause"])
@pytest.mark.parametrize("priority", [task_pb2.PRIORITY_UNSPECIFIED, 99])
async def test_purge_and_pause_refuse_a_missing_or_unknown_level(
    api_for: Callable[..., ClientApi], kind: str, priority: int
) -> None:
    api = api_for()
    reply = ask(api, lambda e: setattr(getattr(e, kind), "priority", priority))
    assert reply.error.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    assert "priority level" in reply.error.message
    assert api.coordinator.counters.rejected_frames == 0  # a refused request, not a bad frame


async def test_tasks_lists_queued_tasks_without_payloads_and_task_detail_has_the_arguments(
    api_for: Callable[..., ClientApi],
) -> None:
    api = api_for()
    for n in range(3):
        ask(api, submit(spec_for("add", f"id-{n}")))
    listing = ask(api, lambda e: e.tasks.SetInParent()).tasks_reply
    assert listing.total == 3 and [t.task_id for t in listing.tasks] == ["id-2", "id-1", "id-0"]
    assert not any(t.HasField("arguments") or t.HasField("result") for t in listing.tasks)
    detail = ask(api, lambda e: setattr(e.task_detail, "task_id", "id-1")).task_detail_reply.task
    assert detail.task_id == "id-1" and detail.HasField("arguments")
    missing = ask(api, lambda e: setattr(e.task_detail, "task_id", "nope"))
    assert missing.error.code == error_pb2.ERROR_CODE_TASK_NOT_FOUND


async def test_task_detail_says_when_a_task_is_due_and_when_it_expires(api_for: Callable[..., ClientApi]) -> None:
    # An operator saw a scheduled task's eta but not when it would end CANCELLED (Expired) instead
    api = api_for()
    now = time.time()
    scheduled = spec_for("add", "id-scheduled")
    scheduled.eta, scheduled.expires = now + 600, now + 300
    ask(api, submit(scheduled))
    ask(api, submit(spec_for("add", "id-plain")))

    def detail_of(task_id: str) -> task_pb2.TaskInfo:
        return ask(api, lambda e: setattr(e.task_detail, "task_id", task_id)).task_detail_reply.task

    detail = detail_of("id-scheduled")
    assert detail.state == task_pb2.TASK_STATE_SCHEDULED
    assert (detail.eta, detail.expires) == (scheduled.eta, scheduled.expires)
    assert detail_of("id-plain").expires == 0.0  # none
    listed = ask(api, lambda e: e.tasks.SetInParent()).tasks_reply.tasks
    assert [t.expires for t in listed] == [0.0, 0.0]  # a detail's field: listings stay as small as they were


async def test_a_task_page_says_the_page_size_it_applied_so_that_paging_by_it_skips_nothing(
    api_for: Callable[..., ClientApi],
) -> None:
    # Asked for 1,000, a page held 500 but the client reported 1,000: offset += limit skipped 500 tasks
    api = api_for()
    for n in range(1200):
        ask(api, submit(spec_for("add", f"id-{n}")))
    seen: list[str] = []
    offset = 0
    while True:

        def build(envelope: Envelope, offset: int = offset) -> None:
            envelope.tasks.offset = offset
            envelope.tasks.limit = 1000

        page = ask(api, build).tasks_reply
        assert page.limit == 500
        seen += [t.task_id for t in page.tasks]
        offset += page.limit
        if offset >= page.total:
            break
    assert len(seen) == len(set(seen)) == 1200
    assert ask(api, lambda e: e.tasks.SetInParent()).tasks_reply.limit == 50  # no size asked: the default


async def test_purge_cancels_the_level_and_pause_is_reported_in_queues(api_for: Callable[..., ClientApi]) -> None:
    api = api_for()
    ask(api, lambda e: (setattr(e.pause, "priority", task_pb2.PRIORITY_LOW), setattr(e.pause, "paused", True)))
    for n in range(4):
        ask(api, submit(spec_for("add", f"low-{n}")))
    ask(api, submit(spec_for("add", "normal-0", task_pb2.PRIORITY_NORMAL)))
    queues = ask(api, lambda e: e.queues.SetInParent()).queues_reply.queues
    assert [q.paused for q in queues] == [False, False, False, True]
    assert ask(api, lambda e: setattr(e.purge, "priority", task_pb2.PRIORITY_LOW)).purge_reply.purged == 4
    states = ask(api, lambda e: e.status.task_ids.extend(["low-0", "normal-0"])).status_reply.tasks
    assert [t.state for t in states] == [task_pb2.TASK_STATE_CANCELLED, task_pb2.TASK_STATE_PENDING]


async def test_drain_of_an_unknown_worker_says_so_and_an_absurd_timeout_is_refused(
    api_for: Callable[..., ClientApi],
) -> None:
    api = api_for()
    assert ask(api, lambda e: setattr(e.drain, "worker_id", "ghost")).drain_reply.draining is False
    absurd = ask(api, lambda e: (setattr(e.drain, "worker_id", "w"), setattr(e.drain, "timeout", -1.0)))
    assert absurd.error.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    nameless = ask(api, lambda e: e.drain.SetInParent())
    assert nameless.error.code == error_pb2.ERROR_CODE_INVALID_REQUEST


async def test_a_submission_sent_again_after_another_instance_went_silent_is_refused_unless_known_here(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    # Given a control plane without a journal, instance "new", that already accepted one task
    api = api_for(instance_id="new")
    known = harness.spec("add", 1, 1)
    ask(api, submit(known))
    fresh, other = harness.spec("add", 2, 2), harness.spec("add", 3, 3)

    # When submissions come again naming "old" as the instance their unanswered attempt went to
    refused = ask(api, submit(fresh), correlation_id=31, resent_from="old")
    again = ask(api, submit(known), correlation_id=32, resent_from="old")
    batch = ask(api, lambda e: e.submit_batch.tasks.extend([known, other]), correlation_id=33, resent_from="old")
    same = ask(api, submit(other), correlation_id=34, resent_from="new")

    # Then the unknown one is refused (the old instance may have run it), a known one is its duplicate,
    # and a resend to the same instance is an ordinary submission
    assert refused.error.code == error_pb2.ERROR_CODE_OUTCOME_UNKNOWN
    assert fresh.task_id in refused.error.message and "keeps no journal" in refused.error.message
    assert api.coordinator.find(fresh.task_id) is None
    assert again.submit_reply.duplicate
    first, second = batch.submit_batch_reply.outcomes
    assert first.accepted.duplicate and second.error.code == error_pb2.ERROR_CODE_OUTCOME_UNKNOWN
    assert same.submit_reply.task_id == other.task_id and not same.submit_reply.duplicate


async def test_a_workflow_cancel_counts_a_running_step_that_swallowed_its_stop_which_ends_cancelled(
    harness: Any,
) -> None:
    # Given a workflow whose only step is running and swallows the stop (it returns a value)
    started = harness.gate()

    def stubborn() -> str:
        started.set()
        try:
            while True:
                time.sleep(0.001)
        except BaseException:  # the cancel's TaskCancelled, swallowed
            return "finished anyway"

    harness.task(stubborn, name="stubborn")
    api = ClientApi(harness.coordinator(local_concurrency=1))
    spec = harness.spec("stubborn")
    api.coordinator.submit_workflow("wf-stubborn", [spec])
    await asyncio.to_thread(started.wait, 10)

    # When the workflow is cancelled
    replies = Replies()

    def cancel_workflow(envelope: Envelope) -> None:
        envelope.workflow.workflow_id = "wf-stubborn"
        envelope.workflow.cancel = True

    api.handle(request(cancel_workflow), replies)
    reply = await replies.next()

    # Then the step ends CANCELLED (what it returned after the interrupt dropped), counted as cancelled
    assert api.coordinator.find(spec.task_id).state == CANCELLED
    assert reply.workflow_reply.cancelled == 1


async def test_a_task_detail_too_large_for_one_frame_leaves_the_result_out_and_status_reads_it(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    # Given a task whose arguments and result each fit a frame, but not both together
    api = api_for(max_frame_size=256 * 1024, local_concurrency=1)
    value = "v" * (140 * 1024)  # 280 KiB together: over the 256 KiB frame
    spec = harness.spec("echo", value)
    ask(api, submit(spec))
    await harness.final(api.coordinator, spec.task_id)

    # When its detail is asked for, it comes with the arguments and without the result
    detail = ask(api, lambda e: setattr(e.task_detail, "task_id", spec.task_id)).task_detail_reply.task
    assert detail.state == task_pb2.TASK_STATE_SUCCESS and detail.HasField("arguments")
    assert not detail.HasField("result")

    # And status reads the result alone
    status = ask(api, lambda e: e.status.task_ids.append(spec.task_id)).status_reply.tasks[0]
    assert decode_value(status.result) == value


async def test_listings_and_events_carry_an_errors_type_and_start_and_status_the_whole_bounded_error(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    # A task that fails with a 200 KB message: a page of such tasks, or the events kept about them,
    # held every traceback in full (hundreds of MB, listings over the frame limit)
    def loud() -> None:
        raise RuntimeError("L" * 200_000)

    harness.task(loud)
    api = api_for(local_concurrency=1, max_frame_size=16 * 1024 * 1024)
    spec = harness.spec("loud")
    ask(api, submit(spec))
    await harness.final(api.coordinator, spec.task_id)

    listed = ask(api, lambda e: e.tasks.SetInParent()).tasks_reply.tasks
    brief = next(info for info in listed if info.task_id == spec.task_id).error
    assert brief.type == "RuntimeError" and brief.message == "L" * BRIEF_ERROR_MESSAGE and not brief.traceback
    events = [e.task for e in api.coordinator.events.read(0, task_ids=[spec.task_id])[0]]
    assert events and all(len(e.error.message) <= BRIEF_ERROR_MESSAGE and not e.error.traceback for e in events)
    whole = ask(api, lambda e: e.status.task_ids.append(spec.task_id)).status_reply.tasks[0].error
    assert whole.message.startswith("L" * 1000) and "characters left out" in whole.message
    assert len(whole.message) <= MAX_ERROR_MESSAGE + 100 and "raise RuntimeError" in whole.traceback


async def test_a_failed_workflow_stays_failed_once_its_failed_step_left_the_cache_and_is_unknown_once_all_did(
    api_for: Callable[..., ClientApi], harness: Any
) -> None:
    # Given a workflow of two independent steps, one succeeding and one failing, on a 3-record result cache
    api = api_for(local_concurrency=1, result_cache_size=3)
    coordinator = api.coordinator
    good = task_pb2.TaskSpec(task_id="wf-good", name="add", arguments=encode_arguments((1, 1), {}))
    bad = task_pb2.TaskSpec(task_id="wf-bad", name="boom", arguments=encode_arguments((), {}))
    coordinator.submit_workflow("wf-half", [good, bad])
    for task_id in ("wf-good", "wf-bad"):
        await harness.final(coordinator, task_id)

    def state() -> Envelope:
        return ask(api, lambda e: setattr(e.workflow, "workflow_id", "wf-half"))

    assert state().workflow_reply.workflow.state == task_pb2.TASK_STATE_FAILURE

    # When the failed step's record leaves the cache (the good one, read last, stays)
    coordinator.find("wf-good")
    for n in range(2):
        record, _ = coordinator.submit(
            task_pb2.TaskSpec(task_id=f"other-{n}", name="add", arguments=encode_arguments((n, n), {}))
        )
        await harness.final(coordinator, record.task_id)
    assert coordinator.find("wf-bad") is None and coordinator.find("wf-good") is not None

    # Then the workflow still reads FAILURE, not SUCCESS
    assert state().workflow_reply.workflow.state == task_pb2.TASK_STATE_FAILURE

    # And once every step left the cache, it is not known (not a SUCCESS with no steps)
    for n in range(3):
        record, _ = coordinator.submit(
            task_pb2.TaskSpec(task_id=f"more-{n}", name="add", arguments=encode_arguments((n, n), {}))
        )
        await harness.final(coordinator, record.task_id)
    assert state().error.code == error_pb2.ERROR_CODE_TASK_NOT_FOUND
