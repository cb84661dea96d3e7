"""The only code that turns an Envelope into bytes and back, enforcing the frame size limit.

A frame is a 3-byte header, ``b"FW"`` plus the wire-format byte, followed by the serialized
``Envelope``. The header lets a receiver refuse garbage before protobuf parses anything, and it
doubles as the PUB/SUB topic: subscribers filter on :data:`FRAME_PREFIX` (nng SUB filtering is a
prefix match).
"""

from __future__ import annotations

import time

from google.protobuf.message import DecodeError as _ProtobufDecodeError

from fastworker.protocol.errors import DecodeError, FrameTooLarge
from fastworker.protocol.v1.envelope_pb2 import Envelope
from fastworker.protocol.versioning import PROTOCOL_VERSION, check_compatible

#: Magic bytes at the start of every frame.
MAGIC = b"FW"
#: The framing layout version (not the protocol version, which lives in the envelope).
WIRE_FORMAT = 1
#: What every valid frame starts with; also the discovery channel's subscription topic.
FRAME_PREFIX = MAGIC + bytes([WIRE_FORMAT])
#: Default upper bound for one frame on any channel, in bytes (16 MiB).
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
#: Requests one connection may have waiting for an answer at once, long polls included. A control
#: plane refuses more, unread (``ERROR_CODE_RATE_LIMITED``); a client holds its own beyond it.
MAX_REQUESTS_IN_FLIGHT = 1024

_HEADER_SIZE = len(FRAME_PREFIX)


def new_envelope(correlation_id: int = 0) -> Envelope:
    """An Envelope stamped with this side's protocol version, the correlation id and the time."""
    return Envelope(protocol_version=PROTOCOL_VERSION, correlation_id=correlation_id, sent_at=time.time())


def encode_frame(envelope: Envelope, *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Serialize envelope into one frame.

    Raises:
        FrameTooLarge: the frame would exceed max_size, so the peer would refuse it anyway.
    """
    frame = FRAME_PREFIX + envelope.SerializeToString()
    if len(frame) > max_size:
        raise FrameTooLarge(len(frame), max_size)
    return frame


def decode_frame(data: bytes, *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> Envelope:
    """Parse one frame into an Envelope, checking size, header, structure and protocol version.

    Raises:
        FrameTooLarge: data is over max_size (checked before anything is parsed).
        DecodeError: data is not a frame (bad header, truncated or garbage protobuf, empty body).
        IncompatibleProtocol: the sender speaks an unsupported protocol version.
    """
    size = len(data)
    if size > max_size:
        raise FrameTooLarge(size, max_size)
    if size < _HEADER_SIZE or data[:2] != MAGIC:
        raise DecodeError("not a FastWorker frame (bad magic bytes)", data_size=size)
    if data[2] != WIRE_FORMAT:
        raise DecodeError(f"unsupported wire format {data[2]} (expected {WIRE_FORMAT})", data_size=size)
    envelope = Envelope()
    try:
        envelope.ParseFromString(data[_HEADER_SIZE:])
    except _ProtobufDecodeError as exc:
        raise DecodeError(f"malformed envelope: {exc}", data_size=size) from exc
    if envelope.protocol_version == 0 and envelope.WhichOneof("body") is None:
        raise DecodeError("empty envelope (no version, no body)", data_size=size)
    check_compatible(envelope.protocol_version)
    if envelope.WhichOneof("body") is None:
        raise DecodeError("envelope has no body (empty, or a message type this version does not know)", data_size=size)
    return envelope
