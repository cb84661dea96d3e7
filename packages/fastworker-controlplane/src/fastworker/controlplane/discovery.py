"""Announces this control plane on the discovery PUB socket: metadata periodically, and a shutdown notice.

PUB/SUB loses the first messages to a subscriber that has just connected (slow joiner), so state
is republished every ``announce_interval`` rather than sent once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pynng

from fastworker.protocol.auth import FrameAuth
from fastworker.protocol.framing import encode_frame, new_envelope
from fastworker.protocol.v1.discovery_pb2 import Announcement
from fastworker.protocol.versioning import SUPPORTED_VERSIONS

logger = logging.getLogger(__name__)


#: Largest frame the discovery socket takes in, in bytes: subscribers send nothing (nng reads 0 as no limit).
DISCOVERY_RECV_MAX_SIZE = 64


class DiscoveryPublisher:
    """Publishes the Announcement built by ``describe`` every interval on a Pub0 socket."""

    def __init__(
        self,
        sock: pynng.Pub0,
        describe: Callable[[Announcement], None],
        interval: float,
        *,
        auth: FrameAuth | None = None,
    ) -> None:
        self._socket = sock
        self._auth = auth
        self._describe = describe
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin announcing."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fastworker-discovery")

    def publish_now(self) -> None:
        """Send one announcement at once (e.g. after registered tasks changed)."""
        envelope = new_envelope()
        announcement = envelope.announcement
        announcement.supported_versions.extend(sorted(SUPPORTED_VERSIONS))
        self._describe(announcement)
        self._send(encode_frame(envelope))

    def announce_shutdown(self, instance_id: str, drain_timeout: float, reason: str) -> None:
        """Tell subscribers this instance stops accepting work, every interval until :meth:`stop`.

        Repeated, as announcements are: a client that connects during the drain hears why nothing
        answers it, instead of guessing at a wrong port or version.
        """
        envelope = new_envelope()
        notice = envelope.shutdown_notice
        notice.instance_id = instance_id
        notice.drain_timeout = drain_timeout
        notice.reason = reason
        frame = encode_frame(envelope)
        self._send(frame)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._repeat(frame), name="fastworker-discovery")

    async def _repeat(self, frame: bytes) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._send(frame)

    def _send(self, frame: bytes) -> None:
        if self._auth is not None:
            frame = self._auth.seal(frame)
        try:
            self._socket.send(frame, block=False)
        except pynng.TryAgain:
            pass  # PUB never blocks; nothing to do when no subscriber can take it
        except pynng.Closed:
            pass

    async def _run(self) -> None:
        while True:
            try:
                self.publish_now()
            except Exception:
                logger.exception("discovery announcement failed")
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        """Stop announcing."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
