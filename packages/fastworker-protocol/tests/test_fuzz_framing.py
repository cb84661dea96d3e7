"""Fuzzing the frame decoder and the frame authenticator: hostile bytes get a typed error, never anything else.

``decode_frame`` may raise only ``DecodeError`` (``FrameTooLarge`` included) or
``IncompatibleProtocol``; ``FrameAuth.open`` only ``AuthenticationError``. Inputs: arbitrary bytes,
arbitrary bytes behind a valid header, valid envelopes with random (often absurd) field values,
structured mutations of valid frames (truncation, bit flips, insertions, deletions, splices,
unknown versions), and hand-built protobuf wire data with wrong wire types, absurd varints, lying
lengths and deep nesting. Bounded for CI by the ``FUZZ`` settings below (a few seconds per test).
"""

from __future__ import annotations

import math
import os
import struct
from datetime import timedelta
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fastworker.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_PREFIX,
    SUPPORTED_VERSIONS,
    DecodeError,
    FrameTooLarge,
    IncompatibleProtocol,
    decode_frame,
    encode_frame,
    new_envelope,
)
from fastworker.protocol.auth import SEALED_PREFIX, FrameAuth
from fastworker.protocol.errors import AuthenticationError
from fastworker.protocol.v1.envelope_pb2 import Envelope

#: Bounded fuzzing for CI: each test runs at most this many examples, each within the deadline.
#: No example database (nothing written into the repository); failures print the reproducing blob.
FUZZ = settings(
    max_examples=int(os.environ.get("FWFUZZ_EXAMPLES", "400")),  # e.g. FWFUZZ_EXAMPLES=50000 for a long local run
    deadline=timedelta(seconds=1),  # typical examples take 1-40 ms; generous for a noisy CI machine
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

DECODE_ERRORS = (DecodeError, IncompatibleProtocol)
BODY_FIELDS = list(Envelope.DESCRIPTOR.oneofs_by_name["body"].fields)

# ------------------------------------------------------------------------------ valid envelopes


INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),  # open enums: unknown values are legal on the wire
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
ABSURD_FLOATS = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, 2.0**63, -1.0, 1e10]


def scalar(draw: Any, field: FieldDescriptor) -> Any:
    """One value for a scalar field: mostly bounds and absurd values, sometimes anything in range."""
    kind = field.type
    if kind in INT_BOUNDS:
        low, high = INT_BOUNDS[kind]
        if kind == FieldDescriptor.TYPE_ENUM and draw(st.booleans()):
            return draw(st.sampled_from([v.number for v in field.enum_type.values]))
        return draw(st.one_of(st.sampled_from([low, high, 0, 1, -1 if low < 0 else 2]), st.integers(low, high)))
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        value = draw(st.one_of(st.sampled_from(ABSURD_FLOATS), st.floats(allow_nan=True, allow_infinity=True)))
        if kind == FieldDescriptor.TYPE_FLOAT and math.isfinite(value) and abs(value) > 3.4e38:
            value = math.copysign(math.inf, value)
        return value
    if kind == FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if kind == FieldDescriptor.TYPE_STRING:
        return draw(st.one_of(st.text(max_size=40), st.sampled_from(["", "\x00", "x" * 5000, "é\u2028\U0001f600"])))
    if kind == FieldDescriptor.TYPE_BYTES:
        return draw(st.binary(max_size=64))
    raise AssertionError(f"unhandled field type {kind}")  # pragma: no cover


def is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def fill(draw: Any, message: Message, depth: int) -> None:
    """Set a random selection of the message's fields (one member per oneof) to random values."""
    descriptor: Descriptor = message.DESCRIPTOR
    for field in descriptor.fields:
        if field.containing_oneof is not None or not draw(st.booleans()):
            continue
        set_field(draw, message, field, depth)
    for oneof in descriptor.oneofs:
        if oneof.name == "body" or not draw(st.booleans()):
            continue
        set_field(draw, message, draw(st.sampled_from(list(oneof.fields))), depth)


def set_field(draw: Any, message: Message, field: FieldDescriptor, depth: int) -> None:
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if is_message and field.message_type.GetOptions().map_entry:
        key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        mapping = getattr(message, field.name)
        for _ in range(draw(st.integers(0, 3))):
            key = scalar(draw, key_field)
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth > 0:
                    fill(draw, mapping[key], depth - 1)
            else:
                mapping[key] = scalar(draw, value_field)
        return
    if is_repeated(field):
        container = getattr(message, field.name)
        for _ in range(draw(st.integers(0, 3))):
            if is_message:
                if depth > 0:
                    fill(draw, container.add(), depth - 1)
            else:
                container.append(scalar(draw, field))
        return
    if is_message:
        child = getattr(message, field.name)
        child.SetInParent()
        if depth > 0:
            fill(draw, child, depth - 1)
        return
    setattr(message, field.name, scalar(draw, field))


@st.composite
def envelopes(draw: Any, *, versions: st.SearchStrategy[int] | None = None) -> Envelope:
    """A valid Envelope: any body kind, random (often absurd) field values, nested three levels deep."""
    envelope = new_envelope(draw(st.integers(0, 2**64 - 1)))
    envelope.sent_at = draw(st.sampled_from(ABSURD_FLOATS))
    if versions is not None:
        envelope.protocol_version = draw(versions)
    if draw(st.integers(0, 9)) == 0:
        envelope.auth = draw(st.binary(max_size=40))
    body = draw(st.sampled_from(BODY_FIELDS))
    child = getattr(envelope, body.name)
    child.SetInParent()
    fill(draw, child, depth=3)
    return envelope


# ------------------------------------------------------------------------- raw protobuf wire data


def varint(value: int) -> bytes:
    value &= 2**64 - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@st.composite
def wire_fields(draw: Any, depth: int = 4) -> bytes:
    """Protobuf wire data that is well-framed or nearly so, with wrong types and absurd values.

    Field numbers come mostly from the Envelope and its bodies (so parsing reaches real fields with
    the wrong wire type), plus 0 and the largest legal number; values include 10-byte and overlong
    varints, lengths that lie, start/end-group markers and nested length-delimited data.
    """
    numbers = st.one_of(
        st.sampled_from([1, 2, 3, 4, *(f.number for f in BODY_FIELDS)]),
        st.sampled_from([0, 5, 9, 99, 2**29 - 1]),
        st.integers(1, 300),
    )
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        number = draw(numbers)
        wire_type = draw(st.integers(0, 7))  # 6 and 7 do not exist
        parts.append(varint((number << 3) | wire_type))
        if wire_type == 0:
            choice = draw(st.integers(0, 3))
            if choice == 3:  # overlong: more than 10 bytes of continuation
                parts.append(b"\xff" * draw(st.integers(10, 20)) + b"\x01")
            else:
                parts.append(varint(draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]))))
        elif wire_type == 1:
            parts.append(draw(st.binary(min_size=8, max_size=8)))
        elif wire_type == 5:
            parts.append(draw(st.binary(min_size=4, max_size=4)))
        elif wire_type == 2:
            inner = draw(wire_fields(depth - 1)) if depth > 0 and draw(st.booleans()) else draw(st.binary(max_size=32))
            lie = draw(st.sampled_from([0, 0, 0, 1, -1, 2**31, 2**64 - 1]))
            parts.append(varint(len(inner) + lie) + inner)
        # 3 (start group), 4 (end group), 6, 7: nothing follows on purpose.
    return b"".join(parts)


def nested(depth: int, leaf: bytes = b"") -> bytes:
    """``depth`` levels of field 12 (``submit``) each wrapping the next: deep recursion for the parser."""
    data = leaf
    for _ in range(depth):
        data = varint((12 << 3) | 2) + varint(len(data)) + data
    return data


# ----------------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw: Any, frame: bytes) -> bytes:
    """One to four structured mutations of a frame; never returns the frame unchanged."""
    data = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "byte", "insert", "delete", "splice", "duplicate"]))
        size = len(data)
        if kind == "truncate" and size:
            del data[draw(st.integers(0, size - 1)) :]
        elif kind == "flip" and size:
            data[draw(st.integers(0, size - 1))] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and size:
            data[draw(st.integers(0, size - 1))] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x08, 0x12]))
        elif kind == "insert":
            at = draw(st.integers(0, size))
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and size:
            at = draw(st.integers(0, size - 1))
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "splice":
            at = draw(st.integers(0, size))
            data[at:] = draw(wire_fields())
        elif kind == "duplicate" and size:
            start = draw(st.integers(0, size - 1))
            data[start:start] = data[start : start + draw(st.integers(1, 32))]
    result = bytes(data)
    assume(result != frame)
    return result


def frames_and_mutations() -> st.SearchStrategy[bytes]:
    return envelopes().map(encode_frame).flatmap(mutated)


# ------------------------------------------------------------------------------------ the checks


def assert_decodes_or_refuses(
    data: bytes, *, max_size: int = DEFAULT_MAX_FRAME_SIZE, fuzzing: bool = True
) -> Envelope | None:
    """decode_frame either returns a usable envelope or raises one of its documented errors.

    Under hypothesis the outcome is recorded as an event (``--hypothesis-show-statistics``).
    """
    try:
        envelope = decode_frame(data, max_size=max_size)
    except DECODE_ERRORS as exc:
        assert str(exc)  # every refusal says why
        if fuzzing:
            event(f"refused: {type(exc).__name__}")
        return None
    if fuzzing:
        event("decoded")
    # Whatever decodes is a usable request: a supported version, a body, and it survives a re-encode.
    assert envelope.protocol_version in SUPPORTED_VERSIONS
    assert envelope.WhichOneof("body") is not None
    envelope.SerializeToString()
    envelope.ByteSize()
    return envelope


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_decode_or_raise_only_decode_errors(data: bytes) -> None:
    assert_decodes_or_refuses(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_behind_a_valid_header_decode_or_raise_only_decode_errors(data: bytes) -> None:
    assert_decodes_or_refuses(FRAME_PREFIX + data)


@FUZZ
@given(envelopes())
def test_valid_envelopes_with_absurd_field_values_round_trip(envelope: Envelope) -> None:
    decoded = assert_decodes_or_refuses(encode_frame(envelope))
    assert decoded is not None
    assert decoded.SerializeToString(deterministic=True) == envelope.SerializeToString(deterministic=True)


@FUZZ
@given(frames_and_mutations())
def test_mutated_valid_frames_decode_or_raise_only_decode_errors(data: bytes) -> None:
    assert_decodes_or_refuses(data)


@FUZZ
@given(wire_fields())
def test_protobuf_with_wrong_wire_types_and_absurd_values_decodes_or_raises_only_decode_errors(body: bytes) -> None:
    assert_decodes_or_refuses(FRAME_PREFIX + body)
    # The same behind a valid version field, so that parsing goes past the version check.
    assert_decodes_or_refuses(FRAME_PREFIX + varint(1 << 3) + varint(1) + body)


@FUZZ
@given(envelopes(versions=st.integers(0, 2**32 - 1)))
def test_unknown_protocol_versions_are_refused_with_incompatible_protocol(envelope: Envelope) -> None:
    data = encode_frame(envelope)
    if envelope.protocol_version in SUPPORTED_VERSIONS:
        assert decode_frame(data) == envelope
    else:
        with pytest.raises(IncompatibleProtocol) as caught:
            decode_frame(data)
        assert caught.value.peer_version == envelope.protocol_version


@FUZZ
@given(st.integers(0, 255).filter(lambda b: b != FRAME_PREFIX[2]), envelopes())
def test_unknown_wire_formats_are_refused_with_decode_error(wire_format: int, envelope: Envelope) -> None:
    data = FRAME_PREFIX[:2] + bytes([wire_format]) + encode_frame(envelope)[len(FRAME_PREFIX) :]
    with pytest.raises(DecodeError, match="wire format"):
        decode_frame(data)


@FUZZ
@given(envelopes(), st.integers(0, 4096))
def test_frames_over_the_size_limit_raise_frame_too_large_before_parsing(envelope: Envelope, limit: int) -> None:
    data = encode_frame(envelope) + b"\xff" * 64  # the junk tail would be a DecodeError if parsed
    with pytest.raises(FrameTooLarge) as caught:
        decode_frame(data, max_size=min(limit, len(data) - 1))
    assert caught.value.size == len(data)


@pytest.mark.parametrize("depth", [10, 64, 100, 101, 200, 1_000, 10_000, 100_000])
def test_deeply_nested_messages_raise_decode_error_not_recursion_error(depth: int) -> None:
    data = FRAME_PREFIX + varint(1 << 3) + varint(1) + nested(depth)
    assert_decodes_or_refuses(data, fuzzing=False)


@pytest.mark.parametrize(
    "body",
    [
        varint((12 << 3) | 2) + varint(2**64 - 1),  # a length of 2^64 - 1 with nothing behind it
        varint((12 << 3) | 2) + varint(2**31) + b"x" * 100,
        varint((12 << 3) | 2) + b"\xff" * 11,  # a varint longer than 10 bytes
        varint((12 << 3) | 3),  # start group, never ended
        varint((12 << 3) | 4),  # end group, never started
        varint(0),  # field number 0
        varint(((2**29 - 1) << 3) | 0) + varint(2**64 - 1),  # the largest field number
        varint((1 << 3) | 0) + varint(2**64 - 1),  # protocol_version way beyond uint32
        varint((1 << 3) | 2) + varint(1) + b"\x01",  # protocol_version with the wrong wire type
        varint((3 << 3) | 0) + varint(1),  # sent_at (a double) as a varint
        varint((12 << 3) | 0) + varint(1),  # a message body as a varint
    ],
)
def test_hand_made_hostile_protobuf_is_refused_with_a_decode_error(body: bytes) -> None:
    assert_decodes_or_refuses(FRAME_PREFIX + body, fuzzing=False)
    assert_decodes_or_refuses(FRAME_PREFIX + varint(1 << 3) + varint(1) + body, fuzzing=False)


# ------------------------------------------------------------------------------- authenticated frames

SECRET = "fuzz-secret"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def assert_opens_or_refuses(auth: FrameAuth, data: bytes) -> bytes | None:
    try:
        plain = auth.open(data)
    except AuthenticationError as exc:
        assert str(exc)
        event(f"refused: {str(exc).split(':')[0]}")
        return None
    assert plain.startswith(FRAME_PREFIX)
    return plain


@FUZZ
@given(st.binary(max_size=512))
def test_open_of_arbitrary_bytes_raises_only_authentication_error(data: bytes) -> None:
    assert assert_opens_or_refuses(FrameAuth(SECRET), data) is None


@FUZZ
@given(st.binary(max_size=512))
def test_open_of_arbitrary_bytes_behind_the_sealed_header_raises_only_authentication_error(data: bytes) -> None:
    assert assert_opens_or_refuses(FrameAuth(SECRET), SEALED_PREFIX + data) is None


@FUZZ
@given(st.data())
def test_a_mutated_sealed_frame_never_opens(data: st.DataObject) -> None:
    sealed = FrameAuth(SECRET).seal(encode_frame(data.draw(envelopes())))
    altered = data.draw(mutated(sealed))
    with pytest.raises(AuthenticationError):
        FrameAuth(SECRET).open(altered)


@FUZZ
@given(st.data(), st.sampled_from(["", "x", "fuzz-secreT", "fuzz-secret\x00", "a" * 1000]))
def test_a_frame_sealed_with_another_secret_never_opens(data: st.DataObject, other: str) -> None:
    sealed = FrameAuth(other or "other").seal(encode_frame(data.draw(envelopes())))
    with pytest.raises(AuthenticationError, match="authentication failed"):
        FrameAuth(SECRET).open(sealed)


@FUZZ
@given(envelopes(), st.one_of(st.sampled_from(ABSURD_FLOATS), st.floats()))
def test_a_genuine_frame_with_an_absurd_timestamp_is_refused_unless_inside_the_window(
    envelope: Envelope, sent_at: float
) -> None:
    now = 1_000_000.0
    sealed = FrameAuth(SECRET, clock=Clock(sent_at)).seal(encode_frame(envelope))
    receiver = FrameAuth(SECRET, clock=Clock(now), window=60.0)
    if math.isfinite(sent_at) and abs(now - sent_at) <= 60.0:
        assert receiver.open(sealed) == encode_frame(envelope)
    else:
        with pytest.raises(AuthenticationError, match="window"):
            receiver.open(sealed)


@FUZZ
@given(st.data())
def test_a_genuine_frame_opens_once_and_its_replays_are_refused(data: st.DataObject) -> None:
    frame = encode_frame(data.draw(envelopes()))
    sealed = FrameAuth(SECRET).seal(frame)
    receiver = FrameAuth(SECRET)
    assert receiver.open(sealed) == frame
    for _ in range(data.draw(st.integers(1, 3))):
        with pytest.raises(AuthenticationError, match="replayed"):
            receiver.open(sealed)


@FUZZ
@given(st.one_of(st.binary(max_size=1024), wire_fields()))
def test_a_genuinely_sealed_garbage_body_opens_and_then_decodes_or_raises_only_decode_errors(body: bytes) -> None:
    # An insider with the secret can seal anything: the decoder behind open() must still hold.
    sealed = FrameAuth(SECRET).seal(FRAME_PREFIX + body)
    plain = FrameAuth(SECRET).open(sealed)
    assert plain == FRAME_PREFIX + body
    assert_decodes_or_refuses(plain)


def test_the_replay_memory_stays_bounded_under_a_flood_of_genuine_frames() -> None:
    sender = FrameAuth(SECRET)
    receiver = FrameAuth(SECRET, replay_capacity=1000)
    frame = encode_frame(new_envelope(1))
    for _ in range(20_000):
        receiver.open(sender.seal(frame))
    assert len(receiver._seen) <= 1000


def test_a_forged_time_field_cannot_pass_the_mac() -> None:
    sealed = bytearray(FrameAuth(SECRET, clock=Clock(0.0)).seal(encode_frame(new_envelope(1))))
    struct.pack_into(">d", sealed, len(SEALED_PREFIX), 1_000_000.0)  # move it into the window
    with pytest.raises(AuthenticationError, match="authentication failed"):
        FrameAuth(SECRET, clock=Clock(1_000_000.0)).open(bytes(sealed))
