"""Bad input gets its typed error, and the control plane goes on serving everyone."""

from __future__ import annotations

import asyncio
import uuid

import pynng
import pytest

from fastworker.client import (
    FastworkerError,
    InvalidOptions,
    PayloadError,
    QueueFull,
    SyncClient,
    TaskFailed,
    TaskNotFound,
    TaskState,
    UnknownTask,
    group,
    signature,
)
from fastworker.controlplane.testing import RunningControlPlane
from fastworker.protocol import FRAME_PREFIX, DecodeError, decode_frame, encode_frame, new_envelope
from fastworker.protocol.v1 import error_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

#: How long a raw socket waits for a reply, in milliseconds.
RAW_TIMEOUT_MS = 2000
SMALL_FRAME_LIMIT = 4096


async def assert_still_serving(client) -> None:
    assert await client.submit("fwtests.add", 20, 22, timeout=10) == 42


def raw_request(address: str, data: bytes) -> bytes | None:
    """Send ``data`` on a fresh Req0 socket; the reply, or None when none came within RAW_TIMEOUT_MS."""
    with pynng.Req0(recv_timeout=RAW_TIMEOUT_MS, send_timeout=RAW_TIMEOUT_MS) as sock:
        sock.dial(address, block=True)
        sock.send(data)
        try:
            reply: bytes = sock.recv()
        except pynng.Timeout:
            return None
        return reply


def error_reply(address: str, data: bytes) -> error_pb2.Error:
    """Send ``data`` raw and decode the Error envelope that must come back."""
    reply = raw_request(address, data)
    assert reply is not None, "no reply within 2 s"
    envelope = decode_frame(reply)
    assert envelope.WhichOneof("body") == "error", envelope
    return envelope.error


def status_frame(*task_ids: str, protocol_version: int | None = None) -> bytes:
    envelope = new_envelope(correlation_id=7)
    envelope.status.task_ids.extend(task_ids)
    if protocol_version is not None:
        envelope.protocol_version = protocol_version
    return encode_frame(envelope)


def assert_serves_a_fresh_client(control_plane: RunningControlPlane) -> None:
    assert control_plane.process.poll() is None, "the control plane exited"
    with SyncClient(control_plane.discovery) as client:
        assert client.submit("fwtests.add", 40, 2, timeout=10) == 42


# ---------------------------------------------------------------------------------------- client API


async def test_an_unknown_task_name_is_refused_at_delay_with_unknown_task(shared_cp, make_client):
    client = make_client(shared_cp)
    with pytest.raises(UnknownTask) as caught:
        await client.delay("fwtests.no_such_task", 1)
    assert caught.value.name == "fwtests.no_such_task"
    assert isinstance(caught.value, FastworkerError)
    await assert_still_serving(client)


async def test_an_unencodable_argument_raises_payload_error_in_the_client_and_submits_nothing(shared_cp, make_client):
    client = make_client(shared_cp)
    before = (await client.stats())["submitted"]
    with pytest.raises(PayloadError):
        await client.delay("fwtests.add", object(), 1)
    with pytest.raises(PayloadError):
        await client.submit("fwtests.add", 1, object(), timeout=5)
    assert (await client.stats())["submitted"] == before
    await assert_still_serving(client)


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda c: c.delay("fwtests.add", 1, 2, priority="bogus"), "priority"),
        (lambda c: c.delay("fwtests.add", 1, 2, countdown=float("nan")), "countdown"),
        (lambda c: c.submit("fwtests.add", 1, 2, queue="no spaces", timeout=5), "queue"),
        (lambda c: c.delay_many([("fwtests.add", (1, 2))], task_id="one-id"), "task_id"),
        (lambda c: c.set_limits("fwtests.add", rate_limit="5/x"), "rate_limit"),
        (lambda c: c.set_limits("fwtests.add", max_concurrency=0), "max_concurrency"),
    ],
    ids=["priority", "countdown", "queue", "batch-task-id", "rate", "concurrency"],
)
async def test_a_bad_option_raises_invalid_options_under_the_root_error_naming_it_and_sends_nothing(
    shared_cp, make_client, call, named
):
    client = make_client(shared_cp)
    before = (await client.stats())["submitted"]
    with pytest.raises(InvalidOptions, match=named) as caught:
        await call(client)
    assert isinstance(caught.value, FastworkerError) and isinstance(caught.value, ValueError)
    assert (await client.stats())["submitted"] == before
    assert not [limits for limits in await client.limits() if limits.name == "fwtests.add"]
    await assert_still_serving(client)


async def test_a_workflow_too_large_for_one_frame_raises_payload_error_and_submits_nothing(shared_cp, make_client):
    # Each step's arguments are within the payload bound; together they exceed the client's frame limit
    client = make_client(shared_cp, max_frame_size=64 * 1024)
    before = (await client.stats())["submitted"]
    steps = group([signature("fwtests.record", args=("x" * 30_000,)) for _ in range(3)])
    with pytest.raises(PayloadError, match="do not fit in one frame"):
        await client.delay_workflow(steps)
    assert (await client.stats())["submitted"] == before
    await assert_still_serving(client)


async def test_wrong_arguments_end_in_failure_with_the_type_error_text(shared_cp, make_client):
    client = make_client(shared_cp)
    with pytest.raises(TaskFailed) as caught:
        await client.submit("fwtests.add", 1, timeout=10)
    info = caught.value.info
    assert info.state is TaskState.FAILURE
    assert info.error is not None
    assert info.error.type == "TypeError"
    assert "missing 1 required positional argument" in info.error.message
    assert "'y'" in info.error.message

    task_id = await client.delay("fwtests.add", 1, 2, 3)
    info = await client.wait(task_id, timeout=10)
    assert info.state is TaskState.FAILURE
    assert info.error is not None
    assert info.error.type == "TypeError"
    assert "positional argument" in info.error.message
    assert (await client.status(task_id)).error == info.error
    await assert_still_serving(client)


async def test_a_task_that_raises_value_error_fails_with_its_type_message_and_traceback(shared_cp, make_client):
    client = make_client(shared_cp)
    message = f"bad value {uuid.uuid4()}"
    task_id = await client.delay("fwtests.fail", message)
    info = await client.wait(task_id, timeout=10)

    assert info.state is TaskState.FAILURE
    assert info.attempts == 1
    assert info.worker == "controlplane"
    assert info.error is not None
    assert info.error.type == "ValueError"
    assert info.error.message == message
    assert "raise ValueError(message)  # fwtests: the raising line" in info.error.traceback
    assert "fwtests_tasks.py" in info.error.traceback
    with pytest.raises(TaskFailed) as caught:
        await client.result(task_id, timeout=10)
    assert caught.value.remote_traceback == info.error.traceback
    await assert_still_serving(client)


@pytest.mark.parametrize("where", ["controlplane", "subworker"])
async def test_an_async_task_that_raises_keyboard_interrupt_fails_and_the_process_that_ran_it_serves_on(
    where, start_cp, start_cp_for_workers, start_worker, make_client
):
    # Given a control plane that runs async tasks itself, or one subworker that does
    if where == "controlplane":
        control_plane = start_cp()
    else:
        control_plane = start_cp_for_workers()
        worker = start_worker(control_plane, "kb-w1", task_modules=("fwtests_tasks",))
    client = make_client(control_plane)
    # When an async task raises KeyboardInterrupt on that process's event loop
    task_id = await client.delay("fwtests.async_interrupt", "from the task")
    info = await client.wait(task_id, timeout=10)
    # Then the task fails with it, at once, and the same process runs the next task
    assert info.state is TaskState.FAILURE
    assert info.error is not None and (info.error.type, info.error.message) == ("KeyboardInterrupt", "from the task")
    assert info.worker == ("controlplane" if where == "controlplane" else "kb-w1")
    assert (await client.wait(await client.delay("fwtests.add", 20, 22), timeout=10)).worker == info.worker
    if where == "subworker":
        assert worker.process.poll() is None


async def test_the_status_of_an_unknown_task_id_raises_task_not_found(shared_cp, make_client):
    client = make_client(shared_cp)
    unknown = str(uuid.uuid4())
    with pytest.raises(TaskNotFound) as caught:
        await client.status(unknown)
    assert caught.value.task_id == unknown
    with pytest.raises(TaskNotFound):
        await client.cancel(unknown)
    await assert_still_serving(client)


async def test_an_unknown_id_in_a_wait_many_raises_task_not_found_at_once_while_another_wait_holds_the_rest(
    shared_cp, make_client, tmp_path
):
    # Two running tasks a first wait_many holds a poll on; a second asks for them and an unknown id.
    # Its poll shares ids with the first, so the control plane answers it early, not only once all
    # are final: it must not hold the unknown id's answer until a task ends (that was 5 s: the poll's
    # hold, and a wait_many with a shorter timeout raised TaskTimeout instead).
    client = make_client(shared_cp)
    gate = tmp_path / "release"
    ids = [await client.delay("fwtests.block_until", str(gate), f"held-{n}", 30.0) for n in range(2)]
    held = asyncio.ensure_future(client.wait_many(ids, timeout=60))
    try:
        await asyncio.sleep(0.5)  # the first poll is held on the control plane
        unknown = str(uuid.uuid4())
        with pytest.raises(TaskNotFound) as caught:
            await client.wait_many([*ids, unknown], timeout=3)
        assert caught.value.task_id == unknown
        assert not held.done()  # the tasks still run
    finally:
        gate.touch()
        infos = await held
    assert [info.result for info in infos] == [True, True]


async def test_a_full_queue_refuses_a_submission_with_queue_full(start_cp, make_client):
    control_plane = start_cp("--local-concurrency", "0", "--max-queue", "3")
    client = make_client(control_plane)
    queued = [await client.delay("fwtests.add", i, i) for i in range(3)]

    with pytest.raises(QueueFull):
        await client.delay("fwtests.add", 9, 9)

    assert (await client.stats())["submitted"] == 3
    assert [(await client.status(task_id)).state for task_id in queued] == [TaskState.PENDING] * 3
    # Still serving: freeing a place lets the next submission in.
    assert (await client.cancel(queued[0])).cancelled is True
    accepted = await client.delay("fwtests.add", 9, 9)
    assert (await client.status(accepted)).state is TaskState.PENDING


# ------------------------------------------------------------------------------------------ raw frames


def test_garbage_and_truncated_frames_each_get_a_protocol_error_reply(shared_cp):
    with SyncClient(shared_cp.discovery) as client:
        rejected_before = client.stats()["rejected_frames"]
    whole = status_frame(*(f"task-{i}-" + "x" * 60 for i in range(4)))
    truncated = whole[: len(whole) - 25]
    with pytest.raises(DecodeError):
        decode_frame(truncated)  # the premise: it really is a broken frame
    wire_format_99 = FRAME_PREFIX[:2] + bytes([99]) + whole[len(FRAME_PREFIX) :]
    bad_frames = {
        "garbage": b"\x00\xffthis is not a FastWorker frame\x13\x37",
        "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "empty": b"",
        "header only": FRAME_PREFIX,
        "truncated": truncated,
        "unknown wire format": wire_format_99,
        "random body": FRAME_PREFIX + bytes(range(256)) * 4,
    }
    codes = {name: error_reply(shared_cp.client, data).code for name, data in bad_frames.items()}

    assert codes == dict.fromkeys(codes, error_pb2.ERROR_CODE_PROTOCOL)
    assert_serves_a_fresh_client(shared_cp)
    with SyncClient(shared_cp.discovery) as client:
        assert client.stats()["rejected_frames"] - rejected_before == len(bad_frames)


def test_an_envelope_with_protocol_version_99_gets_an_incompatible_version_reply(shared_cp):
    error = error_reply(shared_cp.client, status_frame("some-task", protocol_version=99))
    assert error.code == error_pb2.ERROR_CODE_INCOMPATIBLE_VERSION
    assert "99" in error.message
    assert_serves_a_fresh_client(shared_cp)


def test_a_well_formed_frame_that_is_not_a_request_gets_a_protocol_error_reply(shared_cp):
    envelope: Envelope = new_envelope(correlation_id=3)
    envelope.stats_reply.submitted = 1
    error = error_reply(shared_cp.client, encode_frame(envelope))
    assert error.code == error_pb2.ERROR_CODE_PROTOCOL
    assert_serves_a_fresh_client(shared_cp)


def test_frames_over_the_size_limit_get_an_error_or_are_dropped_and_the_control_plane_keeps_serving(start_cp):
    control_plane = start_cp("--max-frame-size", str(SMALL_FRAME_LIMIT))

    # Just over the limit: the frame reaches the control plane, which answers FRAME_TOO_LARGE.
    slightly_over = status_frame(*(f"{i:08d}" for i in range(SMALL_FRAME_LIMIT // 10 + 20)))
    assert SMALL_FRAME_LIMIT < len(slightly_over) < SMALL_FRAME_LIMIT + 1024
    error = error_reply(control_plane.client, slightly_over)
    assert error.code == error_pb2.ERROR_CODE_FRAME_TOO_LARGE

    # Far over the limit (25x, within the 1 MiB that a control plane reads to refuse): answered too.
    far_over = status_frame(*(f"{i:08d}" for i in range(100_000 // 10)))
    assert len(far_over) > 90_000
    error = error_reply(control_plane.client, far_over)
    assert error.code == error_pb2.ERROR_CODE_FRAME_TOO_LARGE
    assert f"exceeds the limit of {SMALL_FRAME_LIMIT} bytes" in error.message
    with SyncClient(control_plane.discovery) as client:
        assert client.stats()["rejected_frames"] >= 2  # counted, as logged

    # Beyond what it reads to refuse (2 MiB here): the transport cuts the connection off, unbuffered.
    assert raw_request(control_plane.client, b"x" * (2 * 1024 * 1024)) is None

    assert_serves_a_fresh_client(control_plane)
    # A raw socket still gets answers too.
    assert error_reply(control_plane.client, b"garbage").code == error_pb2.ERROR_CODE_PROTOCOL


async def test_an_id_that_is_not_a_str_is_refused_by_name_and_no_wait_hangs_on_it(shared_cp, make_client):
    # bytes were sent as text and never matched the answer: result(b"...") waited for ever; an int
    # failed inside the wait batch, where nobody answered the waiter either.
    client = make_client(shared_cp)
    task_id = await client.delay("fwtests.add", 5, 6)
    for bad in (task_id.encode(), 123, None):
        for call in (client.status, client.result, client.wait, client.cancel, client.retry, client.task_detail):
            with pytest.raises(TypeError, match=f"task_id must be a str, not {type(bad).__name__}"):
                await asyncio.wait_for(call(bad), 10)
        for many in (client.wait_many, client.results):
            with pytest.raises(TypeError, match=f"each of task_ids must be a str, not {type(bad).__name__}"):
                await asyncio.wait_for(many([task_id, bad], timeout=5), 10)
    for many in (client.wait_many, client.results):  # a lone id would be read as one id per character
        with pytest.raises(TypeError, match="task_ids must be a sequence of str ids, not str"):
            await asyncio.wait_for(many(task_id, timeout=5), 10)
    with pytest.raises(TypeError, match="workflow_id must be a str"):
        await asyncio.wait_for(client.workflow(b"wf"), 10)
    with pytest.raises(ValueError, match="task_id is not valid text"):  # was a bare UnicodeEncodeError
        await asyncio.wait_for(client.status("\ud800-id"), 10)
    with pytest.raises(TypeError, match="timeout must be None or a number of seconds, not str"):
        await asyncio.wait_for(client.result(task_id, timeout="5"), 10)  # type: ignore[arg-type]
    assert await asyncio.wait_for(client.result(task_id, timeout=10), 15) == 11
    await assert_still_serving(client)


def test_a_peer_that_streams_a_huge_frame_into_the_discovery_socket_is_cut_off_at_its_length(shared_cp):
    # Subscribers send nothing; nng read a frame sent to the publisher whole (no limit there):
    # three such peers, unauthenticated, grew the control plane by 900 MiB
    import socket
    import struct
    from urllib.parse import urlsplit

    where = urlsplit(shared_cp.discovery)
    rss_before = _rss_kib(shared_cp.pid)
    with socket.create_connection((where.hostname, where.port), timeout=10) as peer:
        peer.sendall(b"\x00SP\x00" + struct.pack(">H", 0x21) + b"\x00\x00")  # the SP header of a SUB
        assert peer.recv(8)[:4] == b"\x00SP\x00"  # the publisher's own header
        peer.sendall(struct.pack(">Q", 1 << 30))  # a frame of 1 GiB is coming
        sent = 0
        chunk = b"x" * (1 << 20)
        with pytest.raises(OSError):  # cut off (reset, or a broken pipe), long before 1 GiB
            while sent < 256 << 20:
                peer.sendall(chunk)
                sent += len(chunk)
            raise AssertionError(f"the control plane read {sent >> 20} MiB of it")
    assert _rss_kib(shared_cp.pid) - rss_before < 64 * 1024
    assert_serves_a_fresh_client(shared_cp)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
