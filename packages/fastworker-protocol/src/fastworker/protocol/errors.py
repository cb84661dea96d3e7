"""The root of every FastWorker exception, and the errors the wire layer raises.

    FastworkerError
    ├── ProtocolError            a peer sent something this side cannot accept
    │   ├── DecodeError          bytes that are not a valid frame
    │   │   └── FrameTooLarge    a frame over the channel's size limit
    │   └── IncompatibleProtocol a peer speaks a protocol version we do not
    ├── PayloadError             a value the payload codec cannot (or may not) encode or decode
    └── AuthenticationError      a missing or wrong secret, or a replayed frame

Each package adds its own subclasses (the client's UnknownTask, QueueFull, ...) under the same root.
"""

from __future__ import annotations


class FastworkerError(Exception):
    """Base class of every exception FastWorker raises on purpose.

    Every one pickles and copies whole (a process pool hands it to its parent, a test runner
    reports it): rebuilt from its state, never by calling its ``__init__`` again with its message.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)


class ProtocolError(FastworkerError):
    """A peer sent something that does not follow the protocol."""


class DecodeError(ProtocolError):
    """Bytes that cannot be decoded into a valid frame.

    Args:
        message: What was wrong, for humans.
        data_size: The size of the offending input, in bytes.
    """

    def __init__(self, message: str, *, data_size: int = 0) -> None:
        super().__init__(message)
        self.data_size = data_size


class FrameTooLarge(DecodeError):
    """A frame larger than the channel's maximum frame size."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes", data_size=size)
        self.size = size
        self.limit = limit


class IncompatibleProtocol(ProtocolError):
    """A frame from a peer speaking a protocol version this side does not support."""

    def __init__(self, peer_version: int, supported: frozenset[int]) -> None:
        versions = ", ".join(str(v) for v in sorted(supported))
        super().__init__(f"peer speaks protocol version {peer_version}; this side supports {versions}")
        self.peer_version = peer_version
        self.supported = supported


class PayloadError(FastworkerError):
    """Arguments or a result that the payload codec cannot encode or decode, or over the size limit."""


class AuthenticationError(FastworkerError):
    """A missing or wrong shared secret, or a replayed frame."""


def _rebuild(cls: type[FastworkerError], args: tuple[object, ...], state: dict[str, object]) -> FastworkerError:
    """An error unpickled: made without its ``__init__`` (whose parameters vary by class), its state restored."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error
