"""Client behaviour that needs no control plane: argument checks, wire translation, error mapping."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import socket
import time
from typing import Any

import pynng
import pytest

import fastworker.client
from fastworker.client import (
    Client,
    ClientClosed,
    ControlPlaneUnavailable,
    PayloadError,
    Priority,
    QueueFull,
    SyncClient,
    TaskInfo,
    TaskNotFound,
    TaskState,
    UnknownTask,
)
from fastworker.client._async import _error_from_wire
from fastworker.client.models import EventBatch, TaskEvent, result_of, task_info_from_wire
from fastworker.client.options import _eta_seconds
from fastworker.protocol import encode_arguments, encode_value
from fastworker.protocol.v1 import error_pb2, task_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope


def test_countdown_and_eta_become_an_absolute_due_time() -> None:
    assert _eta_seconds(None, None) == 0.0
    assert _eta_seconds(0, None) == 0.0
    assert abs(_eta_seconds(10, None) - (time.time() + 10)) < 1
    aware = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert _eta_seconds(None, aware) == aware.timestamp()
    assert _eta_seconds(None, dt.datetime(2030, 1, 1)) == aware.timestamp()  # naive means UTC
    assert _eta_seconds(None, 1234.5) == 1234.5


def test_countdown_and_eta_together_are_refused_and_a_countdown_of_zero_or_less_is_at_once() -> None:
    with pytest.raises(ValueError, match="not both"):
        _eta_seconds(1, 2.0)
    assert _eta_seconds(0, None) == _eta_seconds(-1, None) == 0.0


def test_task_info_translates_states_priorities_results_and_errors() -> None:
    wire = task_pb2.TaskInfo(
        task_id="t",
        name="add",
        state=task_pb2.TASK_STATE_SUCCESS,
        priority=task_pb2.PRIORITY_HIGH,
        attempts=2,
        worker="controlplane",
        queued_at=1.0,
        started_at=2.0,
        finished_at=3.0,
    )
    wire.result.CopyFrom(encode_value((1, dt.date(2020, 1, 1))))
    info = task_info_from_wire(wire)
    assert info.id == "t" and info.state is TaskState.SUCCESS and info.priority is Priority.HIGH
    assert info.result == (1, dt.date(2020, 1, 1))
    assert info.attempts == 2 and info.worker == "controlplane" and info.error is None

    failed = task_pb2.TaskInfo(task_id="f", name="x", state=task_pb2.TASK_STATE_FAILURE)
    failed.error.type, failed.error.message, failed.error.traceback = "ValueError", "bad", "Traceback..."
    info = task_info_from_wire(failed)
    assert info.error is not None and info.error.type == "ValueError" and info.result is None
    assert info.worker is None and info.started_at is None


def test_a_task_info_read_from_the_wire_equals_one_built_normally() -> None:
    """task_info_from_wire skips the dataclass __init__ for speed: it must still set every field, and only those."""
    wire = task_pb2.TaskInfo(task_id="t", name="x", state=task_pb2.TASK_STATE_SUCCESS, workflow_id="wf", attempts=1)
    wire.result.CopyFrom(encode_value([1, 2]))
    wire.progress.done, wire.progress.total = 3, 4
    wire.dependencies.task_ids.extend(["a", "b"])
    info = task_info_from_wire(wire)
    assert set(vars(info)) == {f.name for f in dataclasses.fields(TaskInfo)}
    assert info == TaskInfo(**{f.name: getattr(info, f.name) for f in dataclasses.fields(TaskInfo)})
    assert info.depends_on == ("a", "b") and info.workflow_id == "wf" and info.progress is not None
    assert info.progress.done == 3 and info.progress.total == 4 and info.result == [1, 2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "y"  # type: ignore[misc]
    plain = task_info_from_wire(task_pb2.TaskInfo(task_id="p", name="x", state=task_pb2.TASK_STATE_PENDING))
    assert plain.depends_on == () and plain.workflow_id is None and plain.progress is None


def test_a_pickled_result_is_decoded_only_where_pickle_is_enabled_and_elsewhere_says_why() -> None:
    wire = task_pb2.TaskInfo(task_id="t", name="x", state=task_pb2.TASK_STATE_SUCCESS)
    wire.result.CopyFrom(encode_value({"a": 1j}, allow_pickle=True))  # a complex: only pickle carries it
    plain = task_info_from_wire(wire)
    assert plain.state is TaskState.SUCCESS and plain.result is None
    assert plain.result_error is not None and "pickle" in plain.result_error
    with pytest.raises(
        PayloadError, match=r"^the result of task t cannot be decoded here: pickle payloads are refused"
    ):
        result_of(plain)
    pickled = task_info_from_wire(wire, allow_pickle=True)
    assert pickled.result == {"a": 1j} and pickled.result_error is None and result_of(pickled) == {"a": 1j}


class _HalfPickled(Client):
    """Answers every id as a finished task: ``pickled`` with a pickled result, any other with its own id as result."""

    async def _connect(self, within: float | None) -> None:
        return None

    async def _request(self, build: Any, **_: Any) -> Any:
        asked = Envelope()
        build(asked)
        reply = Envelope()
        which = asked.WhichOneof("body")
        if which == "status":
            infos = [reply.status_reply.tasks.add(task_id=task_id) for task_id in asked.status.task_ids]
        elif which == "wait":
            infos = [reply.wait_reply.finished.add(task_id=task_id) for task_id in asked.wait.task_ids]
        else:
            assert which == "task_detail"
            infos = [reply.task_detail_reply.task]
            infos[0].task_id = asked.task_detail.task_id
            infos[0].arguments.CopyFrom(encode_arguments([], {}))
        for info in infos:
            info.name, info.state = "make", task_pb2.TASK_STATE_SUCCESS
            value = 1j if info.task_id == "pickled" else info.task_id
            info.result.CopyFrom(encode_value(value, allow_pickle=True))
        return reply


async def test_a_result_this_client_cannot_decode_leaves_that_tasks_state_readable_and_no_batch_broken() -> None:
    # A client without pickle read a task whose result a pickle-enabled side pickled: status, wait
    # and wait_many raised PayloadError naming no task, for a whole batch of otherwise good ids.
    client = _HalfPickled("tcp://127.0.0.1:9")
    for info in (await client.status("pickled"), await client.wait("pickled", timeout=5)):
        assert info.state is TaskState.SUCCESS and info.result is None and info.result_error
    infos = await client.wait_many(["a", "pickled", "b"], timeout=5)
    assert [(i.result, bool(i.result_error)) for i in infos] == [("a", False), (None, True), ("b", False)]
    assert await client.results(["a", "b"], timeout=5) == ["a", "b"]
    for read in (client.result("pickled", timeout=5), client.results(["a", "pickled"], timeout=5)):
        with pytest.raises(PayloadError, match="the result of task pickled cannot be decoded here"):
            await read
    detail = await client.task_detail("pickled")  # no placeholder text where a string result would go
    assert detail.info.result is None and detail.info.result_error == infos[1].result_error
    assert (detail.args, detail.kwargs, detail.arguments_error) == ([], {}, None)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (error_pb2.ERROR_CODE_UNKNOWN_TASK, UnknownTask),
        (error_pb2.ERROR_CODE_QUEUE_FULL, QueueFull),
        (error_pb2.ERROR_CODE_TASK_NOT_FOUND, TaskNotFound),
        (error_pb2.ERROR_CODE_PAYLOAD, PayloadError),
        (error_pb2.ERROR_CODE_SHUTTING_DOWN, ControlPlaneUnavailable),
        (error_pb2.ERROR_CODE_PROTOCOL, fastworker.client.ProtocolError),
        (error_pb2.ERROR_CODE_AUTHENTICATION, fastworker.client.AuthenticationError),
    ],
)
def test_error_replies_map_to_typed_exceptions(code: int, expected: type[Exception]) -> None:
    error = _error_from_wire(error_pb2.Error(code=code, message="m"), task_name="n", task_id="i")  # type: ignore[arg-type]
    assert isinstance(error, expected)
    assert isinstance(error, fastworker.client.FastworkerError)


def test_task_not_found_says_what_was_not_found() -> None:
    assert (TaskNotFound("t1").task_id, TaskNotFound("t1").what) == ("t1", "task")
    error = TaskNotFound("w1", what="workflow")
    assert (error.task_id, error.what, str(error)) == (
        "w1",
        "workflow",
        "workflow w1 is not known to the control plane",
    )
    # An odd id is quoted (an empty one, a control character), a long one cut
    assert str(TaskNotFound("")) == "task '' is not known to the control plane"
    assert str(TaskNotFound("\x00")) == "task '\\x00' is not known to the control plane"
    assert "(300 characters)" in str(TaskNotFound("x" * 300)) and len(str(TaskNotFound("x" * 300))) < 200


async def test_unencodable_arguments_are_refused_before_anything_is_sent() -> None:
    client = Client("tcp://127.0.0.1:1", connect_timeout=0.1)
    with pytest.raises(PayloadError):
        await client.delay("add", object())
    assert client._channel is None  # never connected: nothing was sent
    await client.aclose()


async def test_a_client_without_a_control_plane_raises_control_plane_unavailable() -> None:
    client = Client("tcp://127.0.0.1:9", connect_timeout=0.2)
    with pytest.raises(ControlPlaneUnavailable, match="no control plane announced itself.*nothing listens there"):
        await client.delay("add", 1, 2)
    await client.aclose()


async def test_concurrent_calls_without_a_control_plane_each_fail_after_one_connect_timeout_not_in_turn() -> None:
    # Given 10 calls made at once by a client that never reached a control plane
    client = Client("tcp://127.0.0.1:9", connect_timeout=0.5)
    calls = [asyncio.ensure_future(client.status(f"t{i}")) for i in range(10)]

    # When the first fails, the others are done within half a timeout more (in turn, the last took 10)
    done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.wait(calls, timeout=0.25)

    # Then every one failed with ControlPlaneUnavailable
    assert all(call.done() for call in calls), f"{sum(not c.done() for c in calls)} of 10 still waiting"
    assert all(isinstance(call.exception(), ControlPlaneUnavailable) for call in calls)
    await client.aclose()


async def test_a_client_that_reached_something_silent_says_it_connected() -> None:
    with pynng.Pub0() as silent:  # a PUB socket that never publishes: reachable, but no control plane
        listener = silent.listen("tcp://127.0.0.1:0")
        address = f"tcp://127.0.0.1:{socket.ntohs(listener.local_address.port)}"
        client = Client(address, connect_timeout=1.0)
        with pytest.raises(ControlPlaneUnavailable, match=f"connected to {address}, but nothing there announced"):
            await client.workers()
        await client.aclose()


async def test_the_address_comes_from_the_environment_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_CONTROL_PLANE", "tcp://127.0.0.1:6000")
    assert Client().address == "tcp://127.0.0.1:6000"
    assert Client("tcp://127.0.0.1:7000").address == "tcp://127.0.0.1:7000"
    monkeypatch.delenv("FASTWORKER_CONTROL_PLANE")
    assert Client().address == "tcp://127.0.0.1:5550"


def test_public_api_is_exactly_what_all_lists() -> None:
    modules = {
        "admin",
        "announcements",
        "errors",
        "models",
        "envflags",
        "version",
        "cli",
        "jsonshape",
        "handles",
        "home",
        "options",
        "tls",
        "secretfile",
        "dashboardflags",
        "logsetup",
        "context",  # fastworker.client.context, imported by logsetup
        "command",
        "completion",
        "cpus",
        "limits",
        "workflows",
        "workflowtree",
        "fastapi",  # fastworker.client.fastapi, once something imported it
    }  # `task`: the decorator
    public = {name for name in dir(fastworker.client) if not name.startswith("_")} - modules
    assert public | {"__version__"} == set(fastworker.client.__all__)
    for name in (
        "Client",
        "SyncClient",
        "task",
        "Priority",
        "TaskState",
        "TaskFailed",
        "TaskTimeout",
        "UnknownTask",
        "QueueFull",
        "ControlPlaneUnavailable",
        "TaskNotFound",
        "PayloadError",
        "AuthenticationError",
        "ProtocolError",
        "FastworkerError",
        "CancelResult",
        "TaskInfo",
        "TaskError",
        "TaskHandle",
        "BoundTask",
        "TaskBackend",
        "current_client",
        "set_default_client",
        "use_client",
    ):
        assert name in fastworker.client.__all__, name


async def test_a_page_offset_past_what_the_wire_carries_asks_for_an_empty_page_not_a_crash() -> None:
    # uint32 on the wire: the dashboard answered ?offset=4294967296 with a 500 (ValueError: out of range)
    sent: list[Any] = []

    class Recording(Client):
        async def _request(self, build: Any, *, task_id: str = "", **_: Any) -> Any:
            envelope = Envelope()
            build(envelope)
            sent.append(envelope.tasks)
            reply = Envelope()
            reply.tasks_reply.SetInParent()
            return reply

    page = await Recording("tcp://127.0.0.1:9").list_tasks(offset=2**40, limit=2**40)
    assert (sent[0].offset, sent[0].limit) == (2**32 - 1, 2**32 - 1)
    assert page.tasks == []


@pytest.mark.parametrize(("applied", "reported"), [(500, 500), (0, 1000)])
async def test_a_page_reports_the_page_size_the_control_plane_applied(applied: int, reported: int) -> None:
    class Capped(Client):
        async def _request(self, build: Any, *, task_id: str = "", **_: Any) -> Any:
            reply = Envelope()
            reply.tasks_reply.total = 1200
            reply.tasks_reply.limit = applied  # 0: an older control plane that does not say
            return reply

    page = await Capped("tcp://127.0.0.1:9").list_tasks(limit=1000)
    assert page.limit == reported


@pytest.mark.parametrize(("sent", "read"), [(1_900_000_300.0, 1_900_000_300.0), (0.0, None)])
async def test_a_task_detail_says_when_the_task_expires_or_none(sent: float, read: float | None) -> None:
    # An operator saw a scheduled task's eta but not when it would end CANCELLED (Expired) instead
    class Detailing(Client):
        async def _request(self, build: Any, *, task_id: str = "", **_: Any) -> Any:
            reply = Envelope()
            task = reply.task_detail_reply.task
            task.task_id, task.name, task.state = task_id, "stamp", task_pb2.TASK_STATE_SCHEDULED
            task.eta = 1_900_000_600.0
            task.expires = sent  # 0: no expiry, or an older control plane that does not send it
            return reply

    detail = await Detailing("tcp://127.0.0.1:9").task_detail("t-1")
    assert (detail.eta, detail.expires) == (1_900_000_600.0, read)


async def test_a_request_sent_again_after_an_unanswered_attempt_names_the_instance_that_attempt_went_to() -> None:
    from fastworker.client._requester import Requester
    from fastworker.client._transport import TransportError
    from fastworker.protocol.framing import decode_frame, encode_frame, new_envelope

    class FlakyChannel:
        """Drops the first attempt's connection (its fate unknown), answers the second."""

        def __init__(self) -> None:
            self.sent: list[bytes] = []

        async def request(
            self, frame: bytes, timeout: float, *, aside: bool = False, taken_within: float | None = None
        ) -> bytes:
            self.sent.append(frame)
            if len(self.sent) == 1:
                raise TransportError("connection reset")
            reply = new_envelope(decode_frame(frame).correlation_id)
            reply.ack.SetInParent()
            return encode_frame(reply)

    instance = ["first-instance"]
    channel = FlakyChannel()
    requester = Requester(channel, instance=lambda: instance[0])  # type: ignore[arg-type]

    def build(envelope: Any) -> None:
        envelope.submit.task.task_id = "t-1"

    await requester.request(build, timeout=5)

    first, second = (decode_frame(frame) for frame in channel.sent)
    assert first.resent_from == "" and second.resent_from == "first-instance"
    assert second.submit.task.task_id == "t-1" and second.correlation_id == first.correlation_id


class _SealedControlPlane:
    """A channel to a control plane instance with a secret: it opens each request, or refuses it, as that instance does."""

    def __init__(self, secret: str, identity: str, *, names_itself: bool = True) -> None:
        self.secret = secret
        self.identity = identity
        #: False: refuses as a control plane from before refusals named the instance.
        self.names_itself = names_itself
        self.attempts = 0

    async def request(
        self, frame: bytes, timeout: float, *, aside: bool = False, taken_within: float | None = None
    ) -> bytes:
        from fastworker.protocol.auth import FrameAuth, authentication_error_frame
        from fastworker.protocol.errors import AuthenticationError
        from fastworker.protocol.framing import decode_frame, encode_frame, new_envelope

        self.attempts += 1
        try:
            plain = FrameAuth(self.secret, identity=self.identity).open(frame)
        except AuthenticationError as exc:
            return authentication_error_frame(str(exc), refused_by=self.identity if self.names_itself else "")
        reply = new_envelope(decode_frame(plain).correlation_id)
        reply.ack.SetInParent()
        return FrameAuth(self.secret).seal(encode_frame(reply))


#: Seconds a test waits for a request whose own timeout is far longer (it must end well before it).
_PROMPTLY = 10.0


async def test_a_refusal_from_the_instance_the_request_was_addressed_to_is_raised_at_once() -> None:
    from fastworker.client import AuthenticationError
    from fastworker.client._requester import Requester
    from fastworker.protocol.auth import FrameAuth

    # Given a client that heard instance-a's announcements (it holds that secret among its fallbacks)
    # but seals with a secret instance-a does not accept (rotation step 1 skipped)
    channel = _SealedControlPlane("cp-secret", "instance-a")
    requester = Requester(channel, auth=FrameAuth("new-secret"), instance=lambda: "instance-a")  # type: ignore[arg-type]

    # Then the refusal is raised as it arrives, not once the request's timeout passed: no restart is coming
    with pytest.raises(AuthenticationError, match="refused our authentication"):
        await asyncio.wait_for(requester.request(_ack_request, timeout=60.0), _PROMPTLY)
    assert channel.attempts == 1


@pytest.mark.parametrize("names_itself", [True, False], ids=["named", "older-control-plane"])
async def test_a_request_refused_by_a_restarted_control_plane_is_sent_again_to_the_new_instance(
    names_itself: bool,
) -> None:
    from fastworker.client._requester import Requester
    from fastworker.protocol.auth import FrameAuth

    # Given a client addressing instance-a, which restarted as instance-b (same secret) before it heard so
    channel = _SealedControlPlane("s3cret", "instance-b", names_itself=names_itself)
    instance = ["instance-a"]
    requester = Requester(channel, auth=FrameAuth("s3cret"), instance=lambda: instance[0])  # type: ignore[arg-type]
    reply = asyncio.ensure_future(requester.request(_ack_request, timeout=60.0))
    await asyncio.sleep(0.2)
    assert channel.attempts == 1 and not reply.done()  # refused, and waiting for the new instance

    # When the client hears instance-b's announcement
    instance[0] = "instance-b"

    # Then the refused request goes again, sealed for instance-b, and is answered
    assert (await asyncio.wait_for(reply, _PROMPTLY)).WhichOneof("body") == "ack"
    assert channel.attempts == 2


class _Unreached:
    """A channel with no control plane behind it: each attempt waits its bound, then fails as nng would."""

    def __init__(self, taken_after: int | None = None) -> None:
        self.attempts: list[tuple[float, float | None]] = []
        #: From this attempt on (1-based), a control plane takes the request and answers at once.
        self.taken_after = taken_after

    async def request(
        self, frame: bytes, timeout: float, *, aside: bool = False, taken_within: float | None = None
    ) -> bytes:
        from fastworker.client._transport import NotTaken
        from fastworker.protocol.framing import decode_frame, encode_frame, new_envelope

        self.attempts.append((timeout, taken_within))
        if self.taken_after is not None and len(self.attempts) >= self.taken_after:
            reply = new_envelope(decode_frame(frame).correlation_id)
            reply.ack.SetInParent()
            return encode_frame(reply)
        if taken_within is not None:
            await asyncio.sleep(taken_within)
            raise NotTaken(f"not taken within {taken_within:g} s")
        await asyncio.sleep(timeout)
        raise TimeoutError


def _ack_request(envelope: Any) -> None:
    envelope.status.task_ids.append("t-1")


async def test_a_held_request_no_control_plane_takes_fails_after_its_taking_bound_not_its_hold() -> None:
    from fastworker.client._requester import Requester

    # Given no control plane: a request may be held 5 s once taken, but must be taken within 0.3 s
    channel = _Unreached()
    requester = Requester(channel, instance=lambda: "")  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(ControlPlaneUnavailable, match=r"not sent within 0.3 s: no connection to a control plane"):
        await requester.request(_ack_request, timeout=2.0, hold=5.0, taken_within=0.3)

    # Then the call ended at that bound (not 2 + 5 s), after one attempt that carried it
    assert time.monotonic() - started < 1.5
    assert len(channel.attempts) == 1 and channel.attempts[0][1] == pytest.approx(0.3, abs=0.05)


async def test_a_held_request_a_control_plane_took_keeps_its_whole_deadline() -> None:
    from fastworker.client._requester import Requester

    # Given a first attempt that a control plane took but never answered (it timed out), then one answered
    class TakenThenAnswered(_Unreached):
        async def request(
            self, frame: bytes, timeout: float, *, aside: bool = False, taken_within: float | None = None
        ) -> bytes:
            if not self.attempts:
                self.attempts.append((timeout, taken_within))
                await asyncio.sleep(0.4)  # taken (past the 0.2-s bound), then no answer
                raise TimeoutError
            return await super().request(frame, timeout, aside=aside, taken_within=taken_within)

    channel = TakenThenAnswered(taken_after=2)
    requester = Requester(channel, instance=lambda: "")  # type: ignore[arg-type]

    # When the request must be taken within 0.2 s
    reply = await requester.request(_ack_request, timeout=5.0, hold=1.0, taken_within=0.2)

    # Then the second attempt, past that bound, was sent without it and answered
    assert reply.WhichOneof("body") == "ack"
    assert [bound for _, bound in channel.attempts] == [0.2, None] or channel.attempts[1][1] is None


def test_a_client_used_on_a_second_event_loop_raises_a_typed_error_naming_the_rule() -> None:
    from fastworker.client import CallContextError

    client = Client("tcp://127.0.0.1:9", connect_timeout=0.05)
    with pytest.raises(ControlPlaneUnavailable):
        asyncio.run(client.status("x"))  # first loop: binds the client (nothing listens)
    with pytest.raises(CallContextError, match="first used on another event loop"):
        asyncio.run(client.status("x"))
    asyncio.run(client.aclose())


async def test_only_a_wait_many_alone_on_its_ids_asks_the_control_plane_to_answer_once_all_are_final() -> None:
    # A partial answer to wait_many only comes back as another wait; a single wait needs the early one
    sent: list[tuple[list[str], bool]] = []

    class Recording(Client):
        async def connect(self) -> None:
            return None

        async def _connect(self, within: float | None) -> None:
            return None

        async def _request(self, build: Any, *, task_id: str = "", **_: Any) -> Any:
            envelope = Envelope()
            build(envelope)
            sent.append((list(envelope.wait.task_ids), envelope.wait.all_final))
            await asyncio.sleep(0)
            reply = Envelope()
            for task_id in envelope.wait.task_ids:
                reply.wait_reply.finished.add(task_id=task_id, name="t", state=task_pb2.TASK_STATE_SUCCESS)
            return reply

    client = Recording("tcp://127.0.0.1:9")
    await client.wait_many(["a", "b", "c"], timeout=5)
    assert sent == [(["a", "b", "c"], True)]

    # Two waits on one id, or two wait_many calls sharing a request: the early answers stay
    sent.clear()
    await asyncio.gather(client.wait_many(["a", "b"], timeout=5), client.wait("b", timeout=5))
    await asyncio.gather(client.wait_many(["x"], timeout=5), client.wait_many(["y"], timeout=5))
    assert sent == [(["a", "b"], False), (["x", "y"], False)]


async def test_watch_skips_the_events_that_led_to_the_state_it_yielded_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # The task moved on between watch()'s two first reads: the sequence it follows from was taken
    # while attempt 1 ran, the status once that attempt had failed into RETRYING. The events since
    # replay RUNNING and RETRYING of attempt 1; yielded, RUNNING would come after RETRYING.
    def info(state: TaskState, attempts: int) -> TaskInfo:
        return TaskInfo("t", "flaky", state, Priority.NORMAL, attempts, None, None, None, None)

    history = [
        info(TaskState.RUNNING, 1),
        info(TaskState.RETRYING, 1),
        info(TaskState.PENDING, 1),
        info(TaskState.RUNNING, 2),
        info(TaskState.SUCCESS, 2),
    ]
    client = Client("tcp://127.0.0.1:9")

    async def events(after: int = 0, **_: Any) -> EventBatch:
        if after == 0:
            return EventBatch([], 10, False)
        return EventBatch([TaskEvent(10 + i, "task_state", 0.0, task=e) for i, e in enumerate(history, 1)], 15, False)

    async def status(task_id: str) -> TaskInfo:
        return history[1]

    monkeypatch.setattr(client, "events", events)
    monkeypatch.setattr(client, "status", status)
    seen = [(i.state, i.attempts) async for i in client.watch("t", timeout=5)]
    assert seen == [
        (TaskState.RETRYING, 1),
        (TaskState.PENDING, 1),
        (TaskState.RUNNING, 2),
        (TaskState.SUCCESS, 2),
    ]


async def test_a_closed_client_and_a_closed_sync_client_raise_the_same_error() -> None:
    # The SyncClient raised a bare RuntimeError, outside the one root; the Client ControlPlaneUnavailable.
    client = Client("tcp://127.0.0.1:9")
    await client.aclose()
    with pytest.raises(ClientClosed, match="the client is closed") as from_client:
        await client.status("t")
    sync = SyncClient("tcp://127.0.0.1:9")
    sync.close()
    with pytest.raises(ClientClosed, match="the SyncClient is closed") as from_sync:
        sync.status("t")
    for caught in (from_client.value, from_sync.value):
        assert isinstance(caught, ControlPlaneUnavailable) and isinstance(caught, RuntimeError)


def test_every_exception_pickles_and_copies_whole() -> None:
    # A TaskFailed raised in a ProcessPoolExecutor's child broke the whole pool: it did not unpickle
    import copy
    import pickle

    from fastworker.client import Retry, TaskError, TaskFailed, TaskInfo, TaskState, TaskTimeout, UnknownTask
    from fastworker.client.errors import DuplicateTaskName
    from fastworker.protocol.errors import FrameTooLarge, IncompatibleProtocol

    info = TaskInfo(
        id="t1",
        name="add",
        state=TaskState.FAILURE,
        priority="normal",
        attempts=1,
        worker="w1",
        queued_at=None,
        started_at=None,
        finished_at=None,
        result=None,
        error=TaskError("RuntimeError", "boom", "Traceback ..."),
    )
    errors = [
        TaskFailed(info),
        TaskTimeout("t1", 2.5),
        Retry(3.0),
        Retry(message="again"),
        UnknownTask("nope"),
        TaskNotFound("w1", what="workflow"),
        DuplicateTaskName("add", "a.add", "b.add"),
        FrameTooLarge(10, 5),
        IncompatibleProtocol(9, frozenset({1})),
    ]
    for error in errors:
        for again in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):
            assert type(again) is type(error) and str(again) == str(error), error
            assert again.__dict__ == error.__dict__, error
    assert pickle.loads(pickle.dumps(errors[0])).remote_traceback == "Traceback ..."


def test_a_negative_wait_bound_reads_as_a_deadline_already_past_not_minus_one_second() -> None:
    from fastworker.client import TaskTimeout

    error = TaskTimeout("t1", -1)
    assert (str(error), error.timeout) == ("task t1 did not finish within 0 s", 0.0)


async def test_clients_say_where_they_talk_to_and_whether_they_are_open() -> None:
    from fastworker.client import Client, SyncClient

    client = Client("tcp://127.0.0.1:9")
    assert repr(client) == "<Client tcp://127.0.0.1:9 open>"
    await client.aclose()
    assert repr(client) == "<Client tcp://127.0.0.1:9 closed>"
    sync = SyncClient("tcp://127.0.0.1:9")
    sync.close()
    assert repr(sync) == "<SyncClient tcp://127.0.0.1:9 closed>"
