"""Reads the control plane's discovery announcements, checked with the shared secret when one is set.

Shared by the client and the subworker link. A frame that fails the check is dropped, and the
reason is kept: a peer that hears only announcements it cannot accept says why (a missing or
wrong secret) instead of timing out in silence.
"""

from __future__ import annotations

import logging

from fastworker.protocol.auth import FrameAuth, is_sealed
from fastworker.protocol.errors import AuthenticationError, DecodeError, IncompatibleProtocol
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE, MAGIC, decode_frame
from fastworker.protocol.v1.discovery_pb2 import Announcement
from fastworker.protocol.v1.envelope_pb2 import Envelope

logger = logging.getLogger(__name__)

#: The discovery subscription topic: plain and sealed frames both start with it.
DISCOVERY_TOPIC = MAGIC


class AnnouncementReader:
    """Turns discovery frames into envelopes, refusing unauthenticated ones when a secret is set."""

    def __init__(self, auth: FrameAuth | None, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.auth = auth
        self.max_frame_size = max_frame_size
        #: Why the latest refused announcement was refused ("" if none was).
        self.problem = ""
        #: Why the latest announcement of another protocol version was ignored ("" if none was).
        self.incompatible = ""
        #: The reason in the latest shutdown notice heard since the latest announcement ("" if none).
        self.shutting_down = ""

    def read(self, data: bytes) -> Envelope | None:
        """The discovery envelope in a frame, or None if it is garbage or fails authentication."""
        try:
            if self.auth is not None:
                data = self.auth.open(data)
            elif is_sealed(data):
                raise AuthenticationError(
                    "the control plane requires the shared secret "
                    "(set FASTWORKER_SECRET_FILE or FASTWORKER_SECRET, or pass one)"
                )
            envelope = decode_frame(data, max_size=self.max_frame_size)
        except AuthenticationError as exc:
            if str(exc) != self.problem:
                logger.warning("ignored a discovery announcement: %s", exc)
            self.problem = str(exc)
        except IncompatibleProtocol as exc:
            if str(exc) != self.incompatible:
                logger.warning("ignored a discovery announcement: %s", exc)
            self.incompatible = str(exc)
        except DecodeError as exc:
            logger.debug("ignored a discovery frame: %s", exc)
        else:
            self.problem = ""
            body = envelope.WhichOneof("body")
            if body == "shutdown_notice":
                self.shutting_down = envelope.shutdown_notice.reason or "stopping"
            elif body == "announcement":
                self.shutting_down = ""
            return envelope
        return None

    def announcement(self, data: bytes) -> Announcement | None:
        """The announcement in a discovery frame, or None (garbage, refused, or another message)."""
        envelope = self.read(data)
        if envelope is None or envelope.WhichOneof("body") != "announcement":
            return None
        return envelope.announcement


def why_unheard(address: str, *, reached: bool, tls: bool, incompatible: str = "", shutting_down: str = "") -> str:
    """Why no control plane announced itself on ``address``, as far as this side can tell.

    ``incompatible``: why announcements heard there were ignored (another protocol version).
    ``shutting_down``: the reason of the shutdown notice heard there instead (a control plane draining).
    """
    if reached and shutting_down:
        return (
            f"connected to {address}, but the control plane there is shutting down ({shutting_down}) and takes"
            " no new work; the one that replaces it announces itself there"
        )
    if reached and incompatible:
        return f"connected to {address}, but what announces itself there speaks another protocol: {incompatible}"
    if reached:
        return (
            f"connected to {address}, but nothing there announced a control plane (another service on that"
            " port, a control plane of an incompatible version, or one refusing connections from this address"
            " past its --max-connections-per-peer or --max-connections: its log says so)"
        )
    if tls:
        return (
            f"could not connect to {address}: nothing listens there, or the TLS handshake failed "
            "(check that the CA bundle signed the control plane's certificate and that the "
            "certificate names the host dialled)"
        )
    return (
        f"could not connect to {address}: nothing listens there, or what does is not a control plane's discovery"
        " address (not its client, dispatch or HTTP port), does not answer (a stopped or overloaded process),"
        " or requires TLS (dial tls+tcp:// with a CA bundle)"
    )
