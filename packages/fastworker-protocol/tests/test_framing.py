"""Envelope <-> frame round trips and the typed refusals of bad frames."""

from __future__ import annotations

import os
import random

import pytest

from fastworker.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_PREFIX,
    PROTOCOL_VERSION,
    DecodeError,
    FrameTooLarge,
    IncompatibleProtocol,
    ProtocolError,
    check_compatible,
    decode_frame,
    encode_arguments,
    encode_frame,
    new_envelope,
)
from fastworker.protocol.v1.envelope_pb2 import Envelope
from fastworker.protocol.v1.task_pb2 import PRIORITY_HIGH


def _submit_envelope(correlation_id: int = 7) -> Envelope:
    envelope = new_envelope(correlation_id)
    spec = envelope.submit.task
    spec.task_id = "3b0f2a4e-7f45-4c1e-9d3a-2f5e8c1b9a70"
    spec.name = "add"
    spec.priority = PRIORITY_HIGH
    spec.arguments.CopyFrom(encode_arguments((1, 2), {}))
    spec.headers["trace"] = "abc"
    return envelope


def test_envelope_round_trips_through_a_frame() -> None:
    envelope = _submit_envelope()
    decoded = decode_frame(encode_frame(envelope))
    assert decoded == envelope
    assert decoded.WhichOneof("body") == "submit"
    assert decoded.protocol_version == PROTOCOL_VERSION
    assert decoded.correlation_id == 7


def test_every_body_kind_round_trips() -> None:
    body_fields = [f.name for f in Envelope.DESCRIPTOR.oneofs_by_name["body"].fields]
    assert len(body_fields) > 40
    for name in body_fields:
        envelope = new_envelope(1)
        getattr(envelope, name).SetInParent()
        assert decode_frame(encode_frame(envelope)).WhichOneof("body") == name


def test_frames_start_with_the_prefix_used_as_discovery_topic() -> None:
    assert encode_frame(_submit_envelope()).startswith(FRAME_PREFIX)


def test_new_envelope_stamps_version_correlation_id_and_time() -> None:
    envelope = new_envelope(2**64 - 1)
    assert envelope.protocol_version == PROTOCOL_VERSION
    assert envelope.correlation_id == 2**64 - 1
    assert envelope.sent_at > 1.7e9


def test_oversize_frames_are_refused_before_parsing() -> None:
    frame = encode_frame(_submit_envelope())
    with pytest.raises(FrameTooLarge) as info:
        decode_frame(frame + b"\x00" * 100, max_size=len(frame))
    assert info.value.size == len(frame) + 100
    assert info.value.limit == len(frame)
    assert isinstance(info.value, DecodeError)


def test_encoding_a_frame_over_the_limit_raises_frame_too_large() -> None:
    envelope = new_envelope(1)
    envelope.submit.task.arguments.data = b"x" * 2048
    with pytest.raises(FrameTooLarge):
        encode_frame(envelope, max_size=1024)


def test_default_limit_refuses_a_frame_one_byte_over() -> None:
    with pytest.raises(FrameTooLarge):
        decode_frame(FRAME_PREFIX + b"\x00" * (DEFAULT_MAX_FRAME_SIZE - len(FRAME_PREFIX) + 1))


@pytest.mark.parametrize(
    "data",
    [b"", b"F", b"FW", b"XX\x01\x08\x01", b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 64],
    ids=["empty", "one-byte", "magic-only", "bad-magic", "http", "zeros"],
)
def test_garbage_without_the_magic_header_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_frame(data)


def test_unknown_wire_format_byte_raises_decode_error() -> None:
    frame = encode_frame(_submit_envelope())
    with pytest.raises(DecodeError, match="unsupported wire format 9"):
        decode_frame(b"FW\x09" + frame[3:])


def test_truncated_frames_raise_decode_error() -> None:
    frame = encode_frame(_submit_envelope())
    failures = 0
    for cut in range(len(FRAME_PREFIX), len(frame)):
        try:
            decode_frame(frame[:cut])
        except (DecodeError, IncompatibleProtocol):
            failures += 1
    # Every strict prefix is either malformed protobuf or a body-less/short envelope: none may pass as whole.
    assert failures == len(frame) - len(FRAME_PREFIX)


def test_random_garbage_after_a_valid_header_never_escapes_as_a_foreign_exception() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        data = FRAME_PREFIX + rng.randbytes(rng.randrange(0, 200))
        try:
            decode_frame(data)
        except ProtocolError:
            pass


def test_empty_envelope_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="no body"):
        decode_frame(encode_frame(new_envelope(1)))


def test_a_bare_header_is_an_empty_frame_not_a_version_mismatch() -> None:
    with pytest.raises(DecodeError, match="empty envelope"):
        decode_frame(FRAME_PREFIX)


def test_unknown_protocol_version_raises_incompatible_protocol() -> None:
    envelope = _submit_envelope()
    envelope.protocol_version = 99
    with pytest.raises(IncompatibleProtocol) as info:
        decode_frame(encode_frame(envelope))
    assert info.value.peer_version == 99
    assert PROTOCOL_VERSION in info.value.supported


def test_missing_protocol_version_is_refused() -> None:
    envelope = _submit_envelope()
    envelope.protocol_version = 0
    with pytest.raises(IncompatibleProtocol):
        decode_frame(encode_frame(envelope))


def test_check_compatible_accepts_the_current_version() -> None:
    check_compatible(PROTOCOL_VERSION)
    with pytest.raises(IncompatibleProtocol):
        check_compatible(PROTOCOL_VERSION + 1)


def test_decode_accepts_bytes_from_os_urandom_without_crashing() -> None:
    for _ in range(500):
        with pytest.raises(ProtocolError):
            decode_frame(os.urandom(64))
