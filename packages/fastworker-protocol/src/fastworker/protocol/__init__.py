"""FastWorker's wire protocol: generated envelopes, framing, payload codecs and the root error type."""

from fastworker.protocol.addresses import Address, parse_address
from fastworker.protocol.errors import (
    AuthenticationError,
    DecodeError,
    FastworkerError,
    FrameTooLarge,
    IncompatibleProtocol,
    PayloadError,
    ProtocolError,
)
from fastworker.protocol.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_PREFIX,
    decode_frame,
    encode_frame,
    new_envelope,
)
from fastworker.protocol.payload import (
    DEFAULT_MAX_PAYLOAD_SIZE,
    decode_arguments,
    decode_value,
    encode_arguments,
    encode_value,
    payload_problem,
)
from fastworker.protocol.version import __version__
from fastworker.protocol.versioning import PROTOCOL_VERSION, SUPPORTED_VERSIONS, check_compatible

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_PAYLOAD_SIZE",
    "FRAME_PREFIX",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Address",
    "AuthenticationError",
    "DecodeError",
    "FastworkerError",
    "FrameTooLarge",
    "IncompatibleProtocol",
    "PayloadError",
    "ProtocolError",
    "__version__",
    "check_compatible",
    "decode_arguments",
    "decode_frame",
    "decode_value",
    "encode_arguments",
    "encode_frame",
    "encode_value",
    "new_envelope",
    "parse_address",
    "payload_problem",
]
