"""Limits hold at the door (issue 14, item 8): oversized arguments and what discovery tells strangers.

A client that skips its own 8 MiB argument check (a raw frame) must be refused when it submits,
not when the task runs: 12 MiB submissions used to be accepted and held in memory. And an
unauthenticated listener on the discovery address learns only how to connect: no task names,
no dashboard URL, no fleet size, no version.
"""

from __future__ import annotations

import uuid

import pynng
from fwsec_support import StartControlPlane, rss_mb

from fastworker.client import SyncClient
from fastworker.protocol import decode_frame, encode_frame, new_envelope
from fastworker.protocol.framing import FRAME_PREFIX
from fastworker.protocol.payload import DEFAULT_MAX_PAYLOAD_SIZE
from fastworker.protocol.v1 import error_pb2, task_pb2
from fastworker.protocol.v1.discovery_pb2 import Announcement
from fastworker.protocol.v1.task_pb2 import CODEC_MSGPACK

OVERSIZED = 12 * 1024 * 1024
SUBMISSIONS = 20
#: Most the control plane's RSS may grow over the oversized submissions. Accepted, 20 of them held
#: 240 MB of arguments (+310 MB RSS measured); refused, only the transient copies of one frame
#: (nng's message, its bytes, the parsed envelope) stay cached by the allocator (+60 to 85 MB measured).
RSS_GROWTH_BOUND_MB = 120
RAW_TIMEOUT_MS = 20_000
#: What a peer needs to connect: all an unsealed announcement may carry.
CONNECT_FIELDS = {"instance_id", "client_address", "dispatch_address", "auth_required", "supported_versions"}


def oversized_spec() -> task_pb2.TaskSpec:
    """A task whose arguments are over the limit: what a client bypassing its own check sends."""
    spec = task_pb2.TaskSpec(task_id=str(uuid.uuid4()), name="fwsec.echo")
    spec.arguments.codec = CODEC_MSGPACK
    spec.arguments.data = b"\x00" * OVERSIZED
    return spec


def raw_request(sock: pynng.Req0, frame: bytes) -> error_pb2.Error | None:
    """Send one frame and return the error in the reply (None if the reply is not an error)."""
    sock.send(frame)
    reply = decode_frame(sock.recv())
    return reply.error if reply.WhichOneof("body") == "error" else None


def test_oversized_arguments_are_refused_when_submitted_and_not_held(start_cp: StartControlPlane) -> None:
    assert OVERSIZED > DEFAULT_MAX_PAYLOAD_SIZE
    control_plane = start_cp("--local-concurrency", "0")  # accepted tasks would wait in the queue
    with SyncClient(control_plane.discovery) as client:
        before = client.stats()
        rss_before = rss_mb(control_plane.pid)
        with pynng.Req0(recv_timeout=RAW_TIMEOUT_MS, send_timeout=RAW_TIMEOUT_MS) as sock:
            sock.dial(control_plane.client, block=True)
            for i in range(SUBMISSIONS):
                envelope = new_envelope(i + 1)
                envelope.submit.task.CopyFrom(oversized_spec())
                error = raw_request(sock, encode_frame(envelope))
                assert error is not None and error.code == error_pb2.ERROR_CODE_PAYLOAD, error
                assert str(DEFAULT_MAX_PAYLOAD_SIZE) in error.message

            batch = new_envelope(100)
            batch.submit_batch.tasks.append(oversized_spec())
            batch.submit_batch.tasks.add(task_id=str(uuid.uuid4()), name="fwsec.noop").arguments.codec = CODEC_MSGPACK
            sock.send(encode_frame(batch))
            outcomes = decode_frame(sock.recv()).submit_batch_reply.outcomes
            assert [o.WhichOneof("outcome") for o in outcomes] == ["error", "accepted"]
            assert outcomes[0].error.code == error_pb2.ERROR_CODE_PAYLOAD

        rss_after = rss_mb(control_plane.pid)
        after = client.stats()
        assert after["submitted"] == before["submitted"] + 1  # only the small task of the batch
        assert after["rejected_frames"] == before["rejected_frames"] + SUBMISSIONS + 1
        assert sum(q["depth"] for q in client.queues()) == 1
        assert rss_after - rss_before < RSS_GROWTH_BOUND_MB, f"RSS {rss_before:.0f} -> {rss_after:.0f} MB"


def announcement_heard(discovery: str) -> tuple[bytes, Announcement | None]:
    """The first discovery frame a stranger (no secret) hears, and its announcement if it can read one."""
    with pynng.Sub0(topics=FRAME_PREFIX[:2], recv_timeout=RAW_TIMEOUT_MS) as sub:
        sub.dial(discovery, block=True)
        data: bytes = sub.recv()
    if data[:3] != FRAME_PREFIX:
        return data, None
    envelope = decode_frame(data)
    assert envelope.WhichOneof("body") == "announcement"
    return data, envelope.announcement


def test_an_unauthenticated_listener_learns_only_how_to_connect(start_cp: StartControlPlane) -> None:
    control_plane = start_cp(dashboard=True)
    assert control_plane.dashboard  # served, yet not announced to strangers
    data, announcement = announcement_heard(control_plane.discovery)
    assert announcement is not None
    assert {field.name for field, _ in announcement.ListFields()} <= CONNECT_FIELDS
    assert announcement.client_address == control_plane.client
    assert announcement.dispatch_address == control_plane.dispatch
    assert b"fwsec." not in data and control_plane.dashboard.encode() not in data
    with SyncClient(control_plane.discovery) as client:  # and that is enough to connect
        assert client.submit("fwsec.echo", 5, timeout=20) == 5
