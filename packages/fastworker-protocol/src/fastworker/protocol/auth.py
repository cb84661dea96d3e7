r"""Authenticated frames: an HMAC-SHA256 over every frame, with a timestamp and a nonce against replays.

With a shared secret configured, every frame on every channel (requests, replies, discovery) is
sealed before it is sent and opened (checked) before anything parses it::

    b"FW\x02" | sent at (8 bytes, big-endian float seconds) | nonce (12 bytes) | HMAC (32 bytes) | envelope

The MAC covers the header, the time, the nonce and the envelope. A receiver refuses a frame that
is not sealed, whose MAC does not match (wrong or missing secret, tampering), whose time is
outside ``window`` seconds of its own clock (an old capture; keep hosts' clocks in sync), or
whose nonce it has already accepted within the window (a replay). Opening returns the plain
frame (``b"FW\x01" + envelope``) that :func:`~fastworker.protocol.framing.decode_frame` reads.

The nonce memory lives in one process and dies with it, so a receiver with an ``identity`` (the
control plane: its instance id, new at every start) also requires frames to be *addressed* to it:
the sender seals with ``recipient=`` that id, which selects the MAC key (derived from the secret
and the id). A frame captured before a restart was addressed to the previous instance and fails
the check afterwards, whatever the nonce memory forgot. Frames the control plane sends (replies,
announcements) are not addressed: a reply is bound to its request by nng's request id and the
envelope's correlation id, and requesters start correlation ids at a random value.

This authenticates; it does not encrypt: use TLS for confidentiality. The secret never crosses
the wire, and nothing in a frame reveals it.

Rotation. A :class:`SecretSource` (a secret file, read again when it changes) gives several secrets:
the first seals, every one opens. Asked again every :data:`RELOAD_INTERVAL` seconds, it lets a
fleet move to a new secret with no restart and no refused frame: first accept the new one
everywhere, then seal with it, then drop the old one (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias

from fastworker.protocol.errors import AuthenticationError
from fastworker.protocol.framing import FRAME_PREFIX, MAGIC, encode_frame, new_envelope
from fastworker.protocol.v1 import error_pb2

logger = logging.getLogger(__name__)

#: Wire-format byte of a sealed frame (a plain frame has 1).
SEALED_WIRE_FORMAT = 2
#: What every sealed frame starts with.
SEALED_PREFIX = MAGIC + bytes([SEALED_WIRE_FORMAT])
#: Seconds a sealed frame's timestamp may differ from the receiver's clock.
DEFAULT_WINDOW = 60.0
#: Most nonces remembered for replay detection (older ones fall out of the window anyway).
DEFAULT_REPLAY_CAPACITY = 1_000_000
#: Most recipients' derived keys kept by one sender.
_MAX_RECIPIENT_KEYS = 64
#: Seconds between two asks of a :class:`SecretSource` for the secrets in force.
RELOAD_INTERVAL = 2.0
#: ``Error.details`` key of an authentication refusal: the identity (instance id) of the receiver that refused.
REFUSED_BY_DETAIL = "instance_id"

_TIME = struct.Struct(">d")
_NONCE_SIZE = 12
_MAC_SIZE = 32
_HEADER_SIZE = len(SEALED_PREFIX) + _TIME.size + _NONCE_SIZE
_OVERHEAD = _HEADER_SIZE + _MAC_SIZE
_PLAIN_HEADER = len(FRAME_PREFIX)


class SecretSource(Protocol):
    """Where a shared secret that may change comes from (a secret file, read again when it changes)."""

    def secrets(self) -> Sequence[str]:
        """The secrets in force, at least one: the first seals; every one opens (a rotation's old or next one)."""
        ...


#: A shared secret as every component takes it: one fixed secret, or a source of rotating ones.
Secret: TypeAlias = str | SecretSource


def _derive_key(secret: str | bytes) -> bytes:
    """The MAC key of a secret, so that the configured secret itself is never used directly."""
    if not secret:
        raise ValueError("the shared secret cannot be empty")
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    return hashlib.sha256(b"fastworker frame key v1\x00" + raw).digest()


class FrameAuth:
    """Seals outgoing frames and opens incoming ones with a shared secret (or a rotating set of them).

    Not thread-safe for :meth:`open` (the replay memory); use one per receiving loop.
    """

    def __init__(
        self,
        secret: str | bytes | SecretSource,
        *,
        window: float = DEFAULT_WINDOW,
        replay_capacity: int = DEFAULT_REPLAY_CAPACITY,
        clock: Callable[[], float] = time.time,
        identity: str = "",
        reload_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``reload_clock``: when to ask a :class:`SecretSource` again (every :data:`RELOAD_INTERVAL`)."""
        self._source: SecretSource | None = None
        if isinstance(secret, str | bytes):
            initial: Sequence[str | bytes] = (secret,)
        else:
            self._source, initial = secret, secret.secrets()
        self._reload_clock = reload_clock
        self._next_reload = reload_clock() + RELOAD_INTERVAL
        self._secrets: tuple[str | bytes, ...] = ()
        #: The MAC keys of the secrets in force; the first seals.
        self._keys: tuple[bytes, ...] = ()
        self._recipient_keys: dict[tuple[bytes, str], bytes] = {}
        self._use(initial)
        #: When set, :meth:`open` accepts only frames sealed with ``recipient=identity``.
        self.identity = identity
        self.window = window
        self.replay_capacity = replay_capacity
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        #: Frames sent at or before this time are refused: their nonces may have been forgotten early,
        #: when more than ``replay_capacity`` frames arrived within one window.
        self._floor = float("-inf")

    def _use(self, secrets: Sequence[str | bytes]) -> None:
        """Make these the secrets in force (the first seals); derive their keys once."""
        secrets = tuple(secrets)
        if not secrets:
            raise ValueError("the shared secret cannot be empty")
        if secrets != self._secrets:
            self._keys = tuple(_derive_key(secret) for secret in secrets)
            self._secrets = secrets
            self._recipient_keys = {}

    def _reload(self) -> None:
        """Ask the source for the secrets in force, at most once per interval."""
        source = self._source
        if source is None:
            return
        now = self._reload_clock()
        if now < self._next_reload:
            return
        self._next_reload = now + RELOAD_INTERVAL
        try:
            secrets = source.secrets()
            if secrets:
                self._use(secrets)
        except Exception:  # a source that fails must not fail the frame: the secrets in force stay
            logger.warning("could not read the shared secrets again; keeping those in force", exc_info=True)

    def _key_for(self, recipient: str, key: bytes) -> bytes:
        """The MAC key of frames addressed to ``recipient`` under ``key`` (``key`` itself when none is named).

        A separate key per recipient, rather than the id mixed into the MAC input, so that no frame
        addressed to one recipient (or to none) can be reinterpreted as addressed to another.
        """
        if not recipient:
            return key
        keyed = self._recipient_keys.get((key, recipient))
        if keyed is None:
            if len(self._recipient_keys) >= _MAX_RECIPIENT_KEYS:
                self._recipient_keys.clear()  # a peer sees a handful of instances in its life
            keyed = hmac.new(key, b"recipient\x00" + recipient.encode(), hashlib.sha256).digest()
            self._recipient_keys[(key, recipient)] = keyed
        return keyed

    def seal(self, frame: bytes, *, recipient: str = "") -> bytes:
        """The sealed form of a plain frame (a fresh nonce every call, so a resend is not a replay).

        Args:
            frame: The plain frame.
            recipient: The receiver's identity (the control plane's instance id): only a receiver
                with that identity opens the frame, so a capture dies with the instance it was sent to.
        """
        if self._source is not None:
            self._reload()
        header = SEALED_PREFIX + _TIME.pack(self._clock()) + os.urandom(_NONCE_SIZE)
        body = memoryview(frame)[_PLAIN_HEADER:]
        mac = hmac.new(self._key_for(recipient, self._keys[0]), header, hashlib.sha256)
        mac.update(body)
        return b"".join((header, mac.digest(), body))

    def open(self, data: bytes) -> bytes:
        """Check a sealed frame and return the plain frame inside it.

        With an ``identity``, only frames sealed with ``recipient=identity`` open.

        Raises:
            AuthenticationError: not sealed, wrong MAC (wrong secret, altered, or addressed to another
                identity), outside the time window, or a replay.
        """
        if data[:3] != SEALED_PREFIX:
            raise AuthenticationError(
                "frame is not authenticated: the receiver requires the shared secret and the sender used none"
                " (give both sides the same secret)"
            )
        if len(data) < _OVERHEAD:
            raise AuthenticationError("authenticated frame is truncated")
        if self._source is not None:
            self._reload()
        view = memoryview(data)
        header = view[:_HEADER_SIZE]
        body = view[_OVERHEAD:]
        given = view[_HEADER_SIZE:_OVERHEAD]
        for key in self._keys:  # the sealing one first: the others only while a rotation is under way
            mac = hmac.new(self._key_for(self.identity, key), header, hashlib.sha256)
            mac.update(body)
            if hmac.compare_digest(mac.digest(), given):
                break
        else:
            if self.identity:
                raise AuthenticationError(
                    "frame authentication failed: wrong shared secret, altered frame, or addressed to another "
                    "control plane instance (sent before a restart, or replayed)"
                )
            raise AuthenticationError("frame authentication failed: wrong shared secret or altered frame")
        now = self._clock()
        (sent_at,) = _TIME.unpack_from(data, len(SEALED_PREFIX))
        if not abs(now - sent_at) <= self.window:  # also refuses NaN
            ahead = sent_at - now
            raise AuthenticationError(
                f"frame timestamp is {abs(ahead):.1f} s {'ahead of' if ahead > 0 else 'behind'} this clock (window"
                f" {self.window:g} s): a replay or clock skew"
            )
        nonce = bytes(view[len(SEALED_PREFIX) + _TIME.size : _HEADER_SIZE])
        self._forget(now)
        if nonce in self._seen or sent_at <= self._floor:
            raise AuthenticationError("frame refused: it was replayed")
        self._seen[nonce] = sent_at
        return FRAME_PREFIX + bytes(body)

    def _forget(self, now: float) -> None:
        """Drop nonces older than the window (a frame that old is refused by its time anyway)."""
        seen = self._seen
        oldest = now - self.window
        while seen:
            nonce, sent_at = next(iter(seen.items()))
            if sent_at >= oldest and len(seen) < self.replay_capacity:
                break
            del seen[nonce]
            if sent_at >= oldest:  # forgotten while still inside the window: refuse anything that old
                self._floor = max(self._floor, sent_at)


def is_sealed(data: bytes) -> bool:
    """True if data carries the sealed-frame header (says nothing about whether it is valid)."""
    return data[:3] == SEALED_PREFIX


def authentication_error_frame(message: str, correlation_id: int = 0, *, refused_by: str = "") -> bytes:
    """A plain Error frame refusing an unauthenticated frame (the sender may have no secret to open a sealed one).

    ``refused_by``: the refusing receiver's identity, in ``details[REFUSED_BY_DETAIL]``. A sender that
    addressed that very identity learns the refusal stands (a secret not accepted, a clock off);
    one that addressed another learns the receiver restarted, and sends again once it hears the new one.
    The identity is no secret: every announcement carries it.
    """
    envelope = new_envelope(correlation_id)
    envelope.error.code = error_pb2.ERROR_CODE_AUTHENTICATION
    envelope.error.message = message
    if refused_by:
        envelope.error.details[REFUSED_BY_DETAIL] = refused_by
    return encode_frame(envelope)
