"""The subworker's connection to the control plane: discovery, registration, work requests, results, heartbeats.

The only module of the worker that opens sockets. It learns the dispatch address from the
discovery announcements and follows the control plane when it restarts (a new instance id, or a
new address): ``instance_id`` changes and ``instance_changed`` is set, so the runtime registers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from fastworker.client._requester import Requester
from fastworker.client._transport import RequestChannel, Subscription
from fastworker.client.announcements import DISCOVERY_TOPIC, AnnouncementReader, why_unheard
from fastworker.client.errors import FastworkerError
from fastworker.client.tls import TlsFiles, is_tls
from fastworker.protocol.auth import FrameAuth, Secret
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE
from fastworker.protocol.v1 import error_pb2, worker_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

logger = logging.getLogger(__name__)

#: Seconds a plain request (register, results, heartbeat) may take, retries included.
REQUEST_TIMEOUT = 5.0
#: Seconds a leaving worker's last requests may take once its control plane announced its shutdown:
#: one that still drains answers at once, and one that is gone must not hold the worker's exit.
FAREWELL_TIMEOUT_AFTER_SHUTDOWN = 1.0


class NotRegistered(FastworkerError):
    """The control plane does not know this worker (it restarted, or dropped the worker): register again."""


class ControlPlaneLink:
    """Talks to whichever control plane announces itself on the discovery address."""

    def __init__(
        self,
        discovery_address: str,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        secret: Secret | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.discovery_address = discovery_address
        self.max_frame_size = max_frame_size
        self.instance_id = ""
        self.dispatch_address = ""
        #: Monotonic time this worker sent the latest request the control plane answered: the start
        #: of its lease (``fastworker.protocol.lease``). Measured at sending, never at the answer,
        #: since the control plane may have taken the request in no later than that.
        self.last_contact = float("-inf")
        #: Set when an announcement names a control plane other than the one registered with.
        self.instance_changed = asyncio.Event()
        self._announced = asyncio.Event()
        self._registered_instance = ""
        #: True once the control plane this worker follows announced its shutdown (until another announces itself).
        self.shutdown_announced = False
        self._farewell_unanswered = False
        #: Called with the ids of running tasks the control plane wants stopped.
        self.on_cancel: Callable[[list[str]], None] = lambda task_ids: None
        #: Called with the drain timeout when an operator asked this worker to drain.
        self.on_drain: Callable[[float], None] = lambda timeout: None
        loop = asyncio.get_running_loop()
        auth = FrameAuth(secret) if secret else None
        self._announcements = AnnouncementReader(auth, max_frame_size=max_frame_size)
        self._channel = RequestChannel(loop, max_frame_size=max_frame_size, tls=tls)
        self._requester = Requester(
            self._channel,
            max_frame_size=max_frame_size,
            auth=auth,
            instance=lambda: self.instance_id,
            errors={error_pb2.ERROR_CODE_NOT_REGISTERED: NotRegistered},
        )
        self._subscription = Subscription(
            loop, discovery_address, DISCOVERY_TOPIC, self._on_discovery, max_frame_size=max_frame_size, tls=tls
        )

    @property
    def problem(self) -> str:
        """Why announcements heard so far were refused (a missing or wrong secret), if they were."""
        return self._announcements.problem

    def why_unheard(self) -> str:
        """Why no control plane announced itself yet, as far as this side can tell."""
        return why_unheard(
            self.discovery_address,
            reached=self._subscription.reached,
            tls=is_tls(self.discovery_address),
            incompatible=self._announcements.incompatible,
            shutting_down=self._announcements.shutting_down,
        )

    def _on_discovery(self, data: bytes) -> None:
        envelope = self._announcements.read(data)
        if envelope is None:
            return
        body = envelope.WhichOneof("body")
        if body == "shutdown_notice":
            if envelope.shutdown_notice.instance_id == self.instance_id:
                self.shutdown_announced = True
            return
        announcement = envelope.announcement
        if body != "announcement" or not announcement.dispatch_address:
            return
        if announcement.instance_id != self.instance_id:
            self.shutdown_announced = self._farewell_unanswered = False
        self.instance_id = announcement.instance_id
        self.dispatch_address = announcement.dispatch_address
        self._channel.dial(announcement.dispatch_address)
        self._announced.set()
        if self._registered_instance and announcement.instance_id != self._registered_instance:
            self.instance_changed.set()

    async def _request(
        self, build: Callable[[Envelope], None], *, timeout: float, hold: float = 0.0, aside: bool = False
    ) -> Envelope:
        """One exchange with the control plane; an answer renews this worker's lease (``last_contact``)."""
        sent = time.monotonic()
        reply = await self._requester.request(build, timeout=timeout, hold=hold, aside=aside)
        self.last_contact = max(self.last_contact, sent)
        return reply

    async def wait_for_control_plane(self, timeout: float | None = None) -> None:
        """Wait until a control plane announced itself (forever when timeout is None).

        Raises:
            TimeoutError: none did within timeout.
        """
        async with asyncio.timeout(timeout):
            await self._announced.wait()

    async def register(self, request: worker_pb2.RegisterRequest) -> worker_pb2.RegisterReply:
        """Register (or register again) with the announced control plane.

        Raises:
            ControlPlaneUnavailable: no reply in time.
        """
        instance = self.instance_id

        def build(envelope: Envelope) -> None:
            envelope.register.CopyFrom(request)

        reply = await self._request(build, timeout=REQUEST_TIMEOUT)
        answer = reply.register_reply
        if answer.accepted and answer.instance_id:
            # The instance that accepted us is the current one, even before its announcement reaches
            # us (a worker told "not registered" by a restarted control plane registers at once):
            # outcomes are kept for the instance that gave their tasks, so the pull loop must name
            # this one, or it would drop every outcome of the new instance as an old one's, and the
            # control plane would re-queue (and re-run) each of those tasks until the announcement came.
            self.instance_id = answer.instance_id
        self._registered_instance = answer.instance_id or instance
        self.instance_changed.clear()
        return answer

    async def pull(
        self,
        worker_id: str,
        hold: float,
        outcomes: Sequence[worker_pb2.TaskOutcome] = (),
        held_task_ids: Sequence[str] = (),
        prefetch: int = 0,
        *,
        busy: bool = False,
    ) -> worker_pb2.Dispatch:
        """Report outcomes and ask for work: returns the control plane's Dispatch (``instance_id`` filled in).

        ``held_task_ids`` lists every task this worker holds, so the control plane can take back
        tasks whose dispatch never arrived. A ``busy`` worker (it will report outcomes and claim
        tasks while this request is held) sends it aside, leaving the cheap lane to those; an idle
        one keeps the cheap lane for it, since its answer starts the next task.

        Raises:
            NotRegistered: the control plane does not know this worker.
            ControlPlaneUnavailable: no reply in time.
        """

        def build(envelope: Envelope) -> None:
            envelope.work_request.worker_id = worker_id
            envelope.work_request.hold = hold
            envelope.work_request.outcomes.extend(outcomes)
            envelope.work_request.held_task_ids.extend(held_task_ids)
            envelope.work_request.prefetch = prefetch

        reply = await self._request(build, timeout=REQUEST_TIMEOUT, hold=hold, aside=busy)
        dispatch = reply.dispatch
        if dispatch.cancel_task_ids:
            self.on_cancel(list(dispatch.cancel_task_ids))
        if dispatch.HasField("drain"):
            self.on_drain(dispatch.drain.timeout)
        if not dispatch.instance_id:
            dispatch.instance_id = self.instance_id
        return dispatch

    async def send_results(
        self,
        worker_id: str,
        outcomes: Sequence[worker_pb2.TaskOutcome],
        claims: Sequence[str] = (),
        *,
        progress: Sequence[worker_pb2.TaskProgress] = (),
    ) -> list[str]:
        """Report finished tasks and running tasks' progress, and claim prefetched tasks to start: returns the claims granted.

        Raises:
            NotRegistered: the control plane does not know this worker.
            ControlPlaneUnavailable: no reply in time.
        """

        def build(envelope: Envelope) -> None:
            envelope.results.worker_id = worker_id
            envelope.results.outcomes.extend(outcomes)
            envelope.results.started_task_ids.extend(claims)
            envelope.results.progress.extend(progress)

        reply = await self._request(build, timeout=REQUEST_TIMEOUT)
        if reply.WhichOneof("body") != "dispatch":
            return []
        return list(reply.dispatch.granted_task_ids)

    def farewell_timeout(self, heartbeat_timeout: float) -> float | None:
        """How long a leaving worker's last requests (drain notice, results, deregistration) may take.

        None: not worth sending. The control plane has not answered for longer than the heartbeat
        timeout, so it has taken (or is about to take) back this worker's tasks, as for a crash.
        """
        if time.monotonic() - self.last_contact > heartbeat_timeout:
            return None
        if self.shutdown_announced:
            return None if self._farewell_unanswered else FAREWELL_TIMEOUT_AFTER_SHUTDOWN
        return REQUEST_TIMEOUT

    def farewell_unanswered(self) -> None:
        """A farewell request got no answer: after a shutdown notice, the control plane is gone."""
        self._farewell_unanswered = True

    async def heartbeat(self, beat: worker_pb2.Heartbeat, *, timeout: float = REQUEST_TIMEOUT) -> None:
        """Tell the control plane this worker lives, with its load.

        Raises:
            NotRegistered: the control plane does not know this worker.
            ControlPlaneUnavailable: no reply in time.
        """

        def build(envelope: Envelope) -> None:
            envelope.heartbeat.CopyFrom(beat)

        reply = await self._request(build, timeout=timeout)
        if reply.WhichOneof("body") == "heartbeat":
            if reply.heartbeat.cancel_task_ids:
                self.on_cancel(list(reply.heartbeat.cancel_task_ids))
            if reply.heartbeat.HasField("drain"):
                self.on_drain(reply.heartbeat.drain.timeout)

    async def deregister(
        self, worker_id: str, returned_task_ids: Sequence[str], *, timeout: float = REQUEST_TIMEOUT
    ) -> None:
        """Leave the fleet, handing back tasks this worker will not finish.

        Raises:
            ControlPlaneUnavailable: no reply in time.
        """

        def build(envelope: Envelope) -> None:
            envelope.deregister.worker_id = worker_id
            envelope.deregister.returned_task_ids.extend(returned_task_ids)

        await self._request(build, timeout=timeout)

    def close(self) -> None:
        """Close the sockets."""
        self._subscription.close()
        self._channel.close()
