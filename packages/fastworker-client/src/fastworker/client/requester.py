"""Request/reply with the control plane over one RequestChannel: correlation ids, retries, typed errors.

Shared by the client and the subworker's link, so both retry the same way: every request is
idempotent (submissions carry their task id), so resending after a lost reply never runs anything
twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fastworker.client.errors import (
    AuthenticationError,
    ControlPlaneUnavailable,
    FastworkerError,
    PayloadError,
    ProtocolError,
    QueueFull,
    TaskNotFound,
    UnknownTask,
)
from fastworker.client.transport import RequestChannel, TransportClosed, TransportError
from fastworker.protocol.auth import FrameAuth, is_sealed
from fastworker.protocol.errors import DecodeError, IncompatibleProtocol
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE, decode_frame, encode_frame, new_envelope
from fastworker.protocol.v1 import error_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope
from fastworker.protocol.versioning import PROTOCOL_VERSION

logger = logging.getLogger(__name__)

#: One attempt's reply deadline beyond the time the control plane may hold the request.
ATTEMPT_SLACK = 3.0


class NotRegistered(FastworkerError):
    """The control plane does not know this worker (it restarted, or dropped the worker): register again."""


_ERRORS: dict[int, Callable[[str], FastworkerError]] = {
    error_pb2.ERROR_CODE_QUEUE_FULL: QueueFull,
    error_pb2.ERROR_CODE_AUTHENTICATION: AuthenticationError,
    error_pb2.ERROR_CODE_PAYLOAD: PayloadError,
    error_pb2.ERROR_CODE_PROTOCOL: ProtocolError,
    error_pb2.ERROR_CODE_INCOMPATIBLE_VERSION: ProtocolError,
    error_pb2.ERROR_CODE_FRAME_TOO_LARGE: ProtocolError,
    error_pb2.ERROR_CODE_SHUTTING_DOWN: ControlPlaneUnavailable,
    error_pb2.ERROR_CODE_NOT_REGISTERED: NotRegistered,
}


def error_from_wire(error: error_pb2.Error, task_name: str = "", task_id: str = "") -> FastworkerError:
    """The typed exception for an Error reply."""
    code = error.code
    if code == error_pb2.ERROR_CODE_UNKNOWN_TASK:
        return UnknownTask(task_name, error.message)
    if code == error_pb2.ERROR_CODE_TASK_NOT_FOUND:
        return TaskNotFound(task_id)
    factory = _ERRORS.get(code)
    if factory is not None:
        return factory(error.message)
    return FastworkerError(f"{error_pb2.ErrorCode.Name(code)}: {error.message}")


class Requester:
    """Sends request envelopes on a channel and returns replies, retrying until a deadline."""

    def __init__(
        self, channel: RequestChannel, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, auth: FrameAuth | None = None
    ) -> None:
        self.channel = channel
        self.max_frame_size = max_frame_size
        #: With a shared secret: every attempt is sealed afresh (a resend is never a replay), replies are checked.
        self.auth = auth
        self._correlation = 0

    def _next_correlation_id(self) -> int:
        self._correlation = (self._correlation + 1) % (1 << 64) or 1
        return self._correlation

    async def request(
        self,
        build: Callable[[Envelope], None] | Envelope,
        *,
        timeout: float,
        hold: float = 0.0,
        task_id: str = "",
        task_name: str = "",
    ) -> Envelope:
        """Send a request (built by ``build``, or an envelope with its body set) and return the reply.

        Args:
            build: Fills the body of a new envelope, or is the envelope to send.
            timeout: Seconds for the whole exchange, retries included, beyond ``hold``.
            hold: Seconds the control plane may hold the request before replying (long polls).
            task_id: Names the task in a TaskNotFound error.
            task_name: Names the task in an UnknownTask error.

        Raises:
            ControlPlaneUnavailable: no reply within the deadline, or the channel was closed.
            FastworkerError: the control plane answered with an error (typed).
        """
        if isinstance(build, Envelope):
            envelope = build
            envelope.protocol_version = PROTOCOL_VERSION
            envelope.correlation_id = self._next_correlation_id()
            envelope.sent_at = time.time()
        else:
            envelope = new_envelope(self._next_correlation_id())
            build(envelope)
        frame = encode_frame(envelope, max_size=self.max_frame_size)
        deadline = time.monotonic() + timeout + hold
        attempt_timeout = hold + ATTEMPT_SLACK
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ControlPlaneUnavailable(f"no reply from the control plane within {timeout + hold:g} s")
            sealed = self.auth.seal(frame) if self.auth is not None else frame
            try:
                data = await self.channel.request(sealed, min(attempt_timeout, remaining))
            except TimeoutError:
                continue
            except TransportClosed:
                raise ControlPlaneUnavailable("the connection was closed") from None
            except TransportError as exc:
                logger.debug("request failed (%s); retrying", exc)
                await asyncio.sleep(0.05)
                continue
            try:
                reply = decode_frame(self._opened(data), max_size=self.max_frame_size)
            except (DecodeError, IncompatibleProtocol) as exc:
                raise ProtocolError(f"bad reply from the control plane: {exc}") from exc
            if reply.WhichOneof("body") == "error":
                if reply.correlation_id not in (0, envelope.correlation_id):
                    continue  # not ours (cannot happen with contexts); ask again
                raise error_from_wire(reply.error, task_name, task_id)
            if reply.correlation_id != envelope.correlation_id:
                raise ProtocolError("reply correlation id does not match the request")
            return reply

    def _opened(self, data: bytes) -> bytes:
        """The plain reply frame, checked when a secret is configured.

        A plain reply is accepted only as an authentication refusal (the peer could not check our
        seal, so it cannot seal its answer either); any other plain reply is refused.

        Raises:
            AuthenticationError: a reply that fails the check, or a sealed reply without a secret here.
        """
        if self.auth is None:
            if is_sealed(data):
                raise AuthenticationError(
                    "the control plane requires the shared secret (set FASTWORKER_SECRET or pass secret=)"
                )
            return data
        if is_sealed(data):
            return self.auth.open(data)
        try:
            reply = decode_frame(data, max_size=self.max_frame_size)
        except (DecodeError, IncompatibleProtocol):
            reply = None
        if reply is not None and reply.WhichOneof("body") == "error":
            if reply.error.code == error_pb2.ERROR_CODE_AUTHENTICATION:
                raise AuthenticationError(f"the control plane refused our authentication: {reply.error.message}")
        raise AuthenticationError("the control plane answered without authentication (it has no secret configured?)")
