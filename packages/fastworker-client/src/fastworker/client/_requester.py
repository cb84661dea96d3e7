"""Request/reply with the control plane over one RequestChannel: correlation ids, retries, typed errors.

Private, and shared by FastWorker's own distributions only (the client and the subworker's link,
so both retry the same way; see ``SHARED_INTERNALS`` in ``scripts/check_layout.py``): no
compatibility promise. Every request is idempotent (submissions carry their task id), so
resending after a lost reply never runs anything twice: a resend names the instance the unanswered
attempt went to, and a control plane restarted without a journal refuses a submission it does not
know that names another instance (it may have run there).

With a shared secret every request is addressed to the control plane instance that the latest
authenticated announcement named (see ``protocol.auth``), so a captured request is refused by the
next instance. After a restart, a request sealed for the previous instance is refused before the
control plane reads it; the requester waits for the new instance's announcement and sends it
again, sealed for the new one: safe, since the refused copy was never processed. A refusal from
the very instance the request was addressed to (it names itself) stands: raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from fastworker.client._transport import NoPlace, NotTaken, RequestChannel, TransportClosed, TransportError
from fastworker.client.errors import (
    AuthenticationError,
    ClientClosed,
    ControlPlaneUnavailable,
    FastworkerError,
    InvalidRequest,
    PayloadError,
    ProtocolError,
    QueueFull,
    TaskNotFound,
    UnknownTask,
)
from fastworker.protocol.auth import REFUSED_BY_DETAIL, FrameAuth, is_sealed
from fastworker.protocol.errors import DecodeError, IncompatibleProtocol
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE, decode_frame, encode_frame, new_envelope
from fastworker.protocol.v1 import error_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope
from fastworker.protocol.versioning import PROTOCOL_VERSION

logger = logging.getLogger(__name__)

#: One attempt's reply deadline beyond the time the control plane may hold the request.
ATTEMPT_SLACK = 3.0
#: Seconds between looks at the announced instance while waiting for a restarted control plane's announcement.
INSTANCE_POLL_INTERVAL = 0.05
#: Seconds before sending again a request the control plane refused for too many in flight on the connection.
RATE_LIMITED_RETRY = 0.05


#: Makes the exception for an Error reply's code from its message.
ErrorFactory = Callable[[str], FastworkerError]

_ERRORS: dict[int, ErrorFactory] = {
    error_pb2.ERROR_CODE_QUEUE_FULL: QueueFull,
    error_pb2.ERROR_CODE_AUTHENTICATION: AuthenticationError,
    error_pb2.ERROR_CODE_PAYLOAD: PayloadError,
    error_pb2.ERROR_CODE_PROTOCOL: ProtocolError,
    error_pb2.ERROR_CODE_INCOMPATIBLE_VERSION: ProtocolError,
    error_pb2.ERROR_CODE_FRAME_TOO_LARGE: ProtocolError,
    error_pb2.ERROR_CODE_SHUTTING_DOWN: ControlPlaneUnavailable,
    error_pb2.ERROR_CODE_OUTCOME_UNKNOWN: ControlPlaneUnavailable,
    error_pb2.ERROR_CODE_INVALID_REQUEST: InvalidRequest,
}
_NO_MORE_ERRORS: Mapping[int, ErrorFactory] = MappingProxyType({})


def error_from_wire(
    error: error_pb2.Error,
    task_name: str = "",
    task_id: str = "",
    *,
    errors: Mapping[int, ErrorFactory] = _NO_MORE_ERRORS,
) -> FastworkerError:
    """The typed exception for an Error reply (``errors`` adds a caller's own codes, e.g. the worker's).

    ``task_name`` names the task in UnknownTask; ``task_id`` in TaskNotFound, and in the
    ControlPlaneUnavailable of a submission whose outcome is unknown.
    """
    code = error.code
    if code == error_pb2.ERROR_CODE_UNKNOWN_TASK:
        return UnknownTask(task_name, error.message)
    if code == error_pb2.ERROR_CODE_TASK_NOT_FOUND:
        return TaskNotFound(task_id)
    factory = errors.get(code) or _ERRORS.get(code)
    if factory is None:
        return FastworkerError(f"{error_pb2.ErrorCode.Name(code)}: {error.message}")
    raised = factory(error.message)
    if code == error_pb2.ERROR_CODE_OUTCOME_UNKNOWN and isinstance(raised, ControlPlaneUnavailable):
        # The instance the submission first went to may have run it: whether it came alone or in a
        # batch (one outcome of many), the caller must look it up, not send it under a new id.
        raised.may_have_arrived = True
        raised.task_id = task_id or None
    return raised


def wait_bound(timeout: float | None) -> float | None:
    """A waiting call's bound, for the client and the eager client alike: None (no bound) or seconds.

    A negative one (a deadline already past) is 0.

    Raises:
        ValueError: NaN, which bounds nothing.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be None or a number of seconds, not {type(timeout).__name__}: {timeout!r:.40}")
    if math.isnan(timeout):
        raise ValueError("timeout must be None or a number of seconds, not NaN")
    return max(0.0, timeout)


class _RefusedAuthentication(AuthenticationError):
    """The control plane refused our request's authentication (it never processed the request)."""

    def __init__(self, message: str, refused_by: str) -> None:
        super().__init__(message)
        #: The instance that refused it ("" from a control plane that does not say).
        self.refused_by = refused_by


class Requester:
    """Sends request envelopes on a channel and returns replies, retrying until a deadline.

    Args:
        channel: Where requests go.
        max_frame_size: Largest frame sent or accepted.
        auth: With a shared secret: every attempt is sealed afresh (a resend is never a replay),
            replies are checked.
        instance: Returns the id of the control plane instance requests are addressed to (learned
            from authenticated announcements); "" addresses none.
        errors: Exceptions for error codes only this caller receives (the worker's ``NotRegistered``).
    """

    def __init__(
        self,
        channel: RequestChannel,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        auth: FrameAuth | None = None,
        instance: Callable[[], str] = lambda: "",
        errors: Mapping[int, ErrorFactory] = _NO_MORE_ERRORS,
    ) -> None:
        self.channel = channel
        self.max_frame_size = max_frame_size
        self.auth = auth
        self.instance = instance
        self.errors = errors
        # A random start: a reply captured from another requester never carries the id we wait for.
        self._correlation = int.from_bytes(os.urandom(8), "big")

    def _next_correlation_id(self) -> int:
        self._correlation = (self._correlation + 1) % (1 << 64) or 1
        return self._correlation

    async def request(
        self,
        build: Callable[[Envelope], None] | Envelope,
        *,
        timeout: float,
        hold: float = 0.0,
        aside: bool = False,
        taken_within: float | None = None,
        task_id: str = "",
        task_name: str = "",
    ) -> Envelope:
        """Send a request (built by ``build``, or an envelope with its body set) and return the reply.

        Args:
            build: Fills the body of a new envelope, or is the envelope to send.
            timeout: Seconds for the whole exchange, retries included, beyond ``hold``.
            hold: Seconds the control plane may hold the request before replying (long polls).
            aside: Leave the channel's cheap lane to the requests sent while this one is out
                (``RequestChannel.request``).
            taken_within: Seconds for a connection to a control plane to take the request (None:
                ``timeout + hold``): with none up for that long, the call fails then, however long
                a control plane would have held it.
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
        started = time.monotonic()
        deadline = started + timeout + hold
        # Until a control plane took an attempt, the call ends at ``taken_within``.
        taken_by = None if taken_within is None or taken_within >= timeout + hold else started + taken_within
        attempt_timeout = hold + ATTEMPT_SLACK
        unsent = ""  # why the last attempt was not even sent
        taken = False  # whether an attempt reached a control plane that did not answer
        while True:
            now = time.monotonic()
            ends = deadline if taken_by is None else taken_by
            remaining = ends - now
            if remaining <= 0:
                if unsent and not taken:
                    raise ControlPlaneUnavailable(f"not sent within {ends - started:g} s: {unsent}")
                # Whether it was sent cannot be told here; whether a control plane is connected can.
                connected = getattr(self.channel, "connected", True)
                unavailable = ControlPlaneUnavailable(
                    f"no reply from the control plane within {ends - started:g} s"
                    + ("" if connected else _not_connected(getattr(self.channel, "address", None)))
                )
                unavailable.may_have_arrived = taken
                raise unavailable
            addressed_to = self.instance()
            sealed = self.auth.seal(frame, recipient=addressed_to) if self.auth is not None else frame
            try:
                unsent = ""
                data = await self.channel.request(
                    sealed,
                    min(attempt_timeout, deadline - now),
                    aside=aside,
                    taken_within=None if taken_by is None else remaining,
                )
            except NoPlace as exc:
                unsent = str(exc)  # (not sent: the next attempt is no resend)
                continue
            except NotTaken:
                unsent = "no connection to a control plane"
                continue
            except TimeoutError:
                taken = True
                taken_by = None  # a control plane had it: the whole deadline applies
                frame = self._resent_from(envelope, frame, addressed_to)
                continue
            except TransportClosed:
                raise ClientClosed("the client was closed") from None
            except TransportError as exc:
                logger.debug("request failed (%s); retrying", exc)
                taken = True
                taken_by = None  # (a connection may have taken it before it failed)
                frame = self._resent_from(envelope, frame, addressed_to)
                await asyncio.sleep(0.05)
                continue
            try:
                opened = self._opened(data)
            except _RefusedAuthentication as exc:
                # A refusal from the very instance it was addressed to is no restart: it stands.
                restarted = bool(addressed_to) and exc.refused_by != addressed_to
                if restarted and await self._instance_changed(addressed_to, deadline):
                    logger.info("control plane restarted: sending the refused request to the new instance")
                    continue  # refused unread, so sending it again cannot run anything twice
                raise AuthenticationError(str(exc)) from None
            try:
                reply = decode_frame(opened, max_size=self.max_frame_size)
            except (DecodeError, IncompatibleProtocol) as exc:
                raise ProtocolError(f"bad reply from the control plane: {exc}") from exc
            if reply.WhichOneof("body") == "error":
                if reply.correlation_id not in (0, envelope.correlation_id):
                    continue  # not ours (cannot happen with contexts); ask again
                if reply.error.code == error_pb2.ERROR_CODE_RATE_LIMITED:
                    # Refused unread: more of this connection's requests were out than the control plane
                    # holds (requests given up here that it still holds count there). Sent again, it
                    # cannot run anything twice.
                    await asyncio.sleep(min(RATE_LIMITED_RETRY, max(0.0, deadline - time.monotonic())))
                    continue
                raise error_from_wire(reply.error, task_name, task_id, errors=self.errors)
            if reply.correlation_id != envelope.correlation_id:
                raise ProtocolError("reply correlation id does not match the request")
            return reply

    def _resent_from(self, envelope: Envelope, frame: bytes, addressed_to: str) -> bytes:
        """The frame to send again after an attempt with no answer: naming the instance that attempt went to.

        That instance may have acted on it (accepted a task, started it) before it stopped; a
        restarted control plane without a journal then refuses a submission it does not know
        (``Envelope.resent_from``) rather than run it a second time. The first such instance counts.
        """
        if envelope.resent_from or not addressed_to:
            return frame
        envelope.resent_from = addressed_to
        return encode_frame(envelope, max_size=self.max_frame_size)

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
                    "the control plane requires the shared secret "
                    "(set FASTWORKER_SECRET_FILE or FASTWORKER_SECRET, or pass secret=)"
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
                raise _RefusedAuthentication(
                    f"the control plane refused our authentication: {reply.error.message}",
                    reply.error.details.get(REFUSED_BY_DETAIL, ""),
                )
        raise AuthenticationError("the control plane answered without authentication (it has no secret configured?)")

    async def _instance_changed(self, addressed_to: str, deadline: float) -> bool:
        """Wait (until the deadline) for an announcement naming an instance other than ``addressed_to``.

        For a refusal from another instance (or from a control plane that does not name itself): the
        control plane restarted and its new announcement is on its way (or, from one that does not
        name itself, the seal or the clocks are wrong, and then no new instance comes: the refusal stands).
        """
        while self.instance() == addressed_to:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(INSTANCE_POLL_INTERVAL)
        return True


def _not_connected(address: str | None) -> str:
    """Why a request got no reply while no connection is up: the address dialled, and what to check."""
    if not address:
        return " (no control plane is connected)"
    tls = address.startswith("tls+")
    return (
        f" (no control plane is connected: could not connect to {address}, the address the control plane"
        " announced: nothing listens there, it is not reachable from this host (check --advertise-host)"
        + (", or the TLS handshake failed (check that the certificate names that host)" if tls else "")
        + ")"
    )
