"""``Client``: the asyncio client, one long-lived connection shared safely by any number of coroutines.

Throughput comes from coalescing: ``delay`` calls made while earlier submissions are in flight
travel together in one batch envelope, and concurrent ``result`` waits share long-poll requests.
Every task keeps its own id, acknowledgement and error. An idle client sends at once, so a lone
request pays no batching delay.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, cast

from fastworker.client import _tracing as tracing
from fastworker.client import handles, hooks
from fastworker.client._background import cancel_all, spawn
from fastworker.client._idargs import id_arg, ids_arg
from fastworker.client._requester import Requester, error_from_wire
from fastworker.client._requester import wait_bound as _wait_bound
from fastworker.client._transport import RequestChannel, Subscription
from fastworker.client.admin import AdminMethods
from fastworker.client.announcements import DISCOVERY_TOPIC, AnnouncementReader, why_unheard
from fastworker.client.errors import (
    AuthenticationError,
    CallContextError,
    ClientClosed,
    ControlPlaneUnavailable,
    FastworkerError,
    PayloadError,
    ProtocolError,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
)
from fastworker.client.models import (
    CancelResult,
    EventBatch,
    TaskEvent,
    TaskInfo,
    TaskState,
    result_of,
    task_info_from_wire,
)
from fastworker.client.options import (
    BatchCall,
    BatchOptionArgs,
    SubmitOptionArgs,
    SubmitOptions,
    batch_calls,
    call_payload_error,
)
from fastworker.client.secretfile import secret_from_env
from fastworker.client.tls import TlsFiles, is_tls
from fastworker.protocol.addresses import parse_address
from fastworker.protocol.auth import FrameAuth, Secret
from fastworker.protocol.errors import FrameTooLarge
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE
from fastworker.protocol.ids import new_task_id, shown_id
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import events_pb2, task_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

if TYPE_CHECKING:  # the canvas loads on the first workflow, not with the client
    from fastworker.client.workflows import Workflow, WorkflowHandle, WorkflowInfo

logger = logging.getLogger(__name__)

#: Where clients find the control plane unless told otherwise (docs/reference.md).
DEFAULT_CONTROL_PLANE = "tcp://127.0.0.1:5550"
#: Env vars read by every client (docs/reference.md).
ENV_CONTROL_PLANE = "FASTWORKER_CONTROL_PLANE"
ENV_SECRET = "FASTWORKER_SECRET"

#: Submission batches in flight at once; more calls wait and join the next batch.
_MAX_SUBMITS_IN_FLIGHT = 4
#: Wait (long-poll) requests in flight at once.
_MAX_WAITS_IN_FLIGHT = 32
#: Budget of encoded task bytes per batch envelope (well under the frame limit).
_BATCH_BYTES = 4 * 1024 * 1024
#: Most tasks per batch envelope.
_MAX_BATCH = 10_000
#: Most ids per status/wait request.
_MAX_IDS_PER_WAIT = 1000
#: How long the control plane may hold one wait request, in seconds.
_SERVER_WAIT = 5.0
#: Seconds a waiting call's request may wait for a connection to take it, however short its timeout.
MIN_TAKEN_WITHIN = 1.0


def _taken_within(request_timeout: float, hold: float, within: float | None) -> float | None:
    """How long a request may wait for a control plane to take it (None: its whole deadline)."""
    if not hold:
        return None
    return request_timeout if within is None else min(request_timeout, max(within, MIN_TAKEN_WITHIN))


#: Longest look at a task's state once a wait's bound passed (a task final by then is returned).
_LAST_LOOK = 0.5

T = TypeVar("T")

_error_from_wire = error_from_wire


class _BulkWait:
    """One future for many tasks' final infos: far cheaper than a future per task for wait_many."""

    __slots__ = ("future", "infos", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.future: asyncio.Future[None] = loop.create_future()
        self.infos: list[task_pb2.TaskInfo | None] = [None] * count
        self.remaining = count


class _Slot:
    """One task's place in a _BulkWait; quacks like the future a single wait uses."""

    __slots__ = ("bulk", "index")

    def __init__(self, bulk: _BulkWait, index: int) -> None:
        self.bulk = bulk
        self.index = index

    def done(self) -> bool:
        return self.bulk.future.done() or self.bulk.infos[self.index] is not None

    def set_result(self, info: task_pb2.TaskInfo) -> None:
        bulk = self.bulk
        bulk.infos[self.index] = info
        bulk.remaining -= 1
        if bulk.remaining == 0 and not bulk.future.done():
            bulk.future.set_result(None)

    def set_exception(self, error: BaseException) -> None:
        if not self.bulk.future.done():
            self.bulk.future.set_exception(error)


#: What waits for one task's final info: a future (wait) or a slot of a bulk wait (wait_many).
_Listener = asyncio.Future[task_pb2.TaskInfo] | _Slot


def _after_seen(changes: list[TaskInfo], seen: tuple[TaskState, int]) -> list[TaskInfo]:
    """The changes after the one that made a task's state ``seen`` (state, attempts); all of them if none did.

    A task takes each (state, attempts) pair once in its life (a retry's PENDING comes with the count
    of the attempt before it), so the pair names the change a snapshot was taken after.
    """
    for index in range(len(changes) - 1, -1, -1):
        change = changes[index]
        if (change.state, change.attempts) == seen:
            return changes[index + 1 :]
    return changes


def _outcome_unknown(outcome: str | FastworkerError) -> bool:
    """Whether a submission that ended in this (an id: accepted; an error) may have been accepted all the same."""
    return (
        isinstance(outcome, ControlPlaneUnavailable)
        and outcome.may_have_arrived
        and not isinstance(outcome, ClientClosed)
    )


def _maybe_accepted_workflow(error: ControlPlaneUnavailable, workflow_id: str) -> ControlPlaneUnavailable:
    """A workflow submission's ControlPlaneUnavailable that may hide an accepted workflow: named, with what to do.

    Sending the workflow again would run it twice (its steps get new ids); looking it up by its id
    says whether it was accepted, and its steps' ids and outputs.
    """
    if not _outcome_unknown(error):
        return error
    named = ControlPlaneUnavailable(
        f"{error}; workflow {workflow_id} may have been accepted: look it up with workflow({workflow_id!r}) before"
        " sending it again (sent again, its steps would run twice)"
    )
    named.may_have_arrived = True
    named.workflow_id = workflow_id
    return named


def _maybe_accepted(error: FastworkerError, task_id: str) -> FastworkerError:
    """A submission's ControlPlaneUnavailable that may hide an accepted task: named, with what to do.

    The control plane got an attempt and did not answer (a stall, a crash): the task may be queued
    and run. Submitting it again under its id is safe (an id is queued at most once); under a new
    id it would run twice.
    """
    if not _outcome_unknown(error):
        return error
    named = ControlPlaneUnavailable(
        f"{error}; task {task_id} may have been accepted: look it up with status, or submit it again with"
        f" task_id={task_id!r} (an id is queued at most once)"
    )
    named.may_have_arrived, named.task_id = True, task_id
    return named


def _batch_error(results: list[str | FastworkerError], sent_ids: list[str]) -> FastworkerError | None:
    """What a ``delay_many`` raises for its calls' outcomes (None: all accepted), with ``task_ids`` set.

    ``task_ids`` holds, in call order, the id of every call accepted (the id it was answered with)
    or not refused (the id it went under, whether the request reached the control plane or not:
    a client closed under it cannot tell), None for a call the control plane refused: the batch
    sent again under those ids queues each call at most once. When an outcome is
    unknown that is what is raised, a ControlPlaneUnavailable saying how many calls it concerns.
    """
    errors = [result for result in results if not isinstance(result, str)]
    if not errors:
        return None
    unknown = [sent_id for result, sent_id in zip(results, sent_ids, strict=True) if _outcome_unknown(result)]
    task_ids: list[str | None] = [
        result if isinstance(result, str) else sent_id if isinstance(result, ControlPlaneUnavailable) else None
        for result, sent_id in zip(results, sent_ids, strict=True)
    ]
    if not unknown:
        raised = errors[0]
    else:
        first = next(error for error in errors if _outcome_unknown(error))
        raised = ControlPlaneUnavailable(
            f"{first}; {len(unknown)} of the {len(results)} calls may have been accepted (the first is task"
            f" {unknown[0]}): error.task_ids lists the id of each call not refused (None: refused); look them"
            " up with wait_many or status, or send the same calls again with"
            " delay_many(calls, task_ids=error.task_ids), which queues each call at most once"
        )
        raised.may_have_arrived, raised.task_id = True, unknown[0]
    raised.task_ids = task_ids  # type: ignore[attr-defined]
    return raised


class Client(AdminMethods):
    """Submits tasks to a FastWorker control plane and reads their results (asyncio).

    Args:
        address: The control plane's discovery address; defaults to ``FASTWORKER_CONTROL_PLANE``,
            then ``tcp://127.0.0.1:5550``. The client learns every other endpoint from it. A
            malformed one (not ``tcp://HOST:PORT``, ``tls+tcp://``, ``ipc://`` or ``inproc://``)
            is a ValueError naming it.
        secret: Shared secret: every frame is sealed with it and every reply checked; required
            when the control plane has one. A :class:`~fastworker.client.SecretFiles` is read again
            when its files change (rotation). Default: the file named by ``FASTWORKER_SECRET_FILE``
            (with ``FASTWORKER_SECRET_FALLBACKS_FILE``; ValueError if one cannot be used), else
            ``FASTWORKER_SECRET``.
        connect_timeout: Seconds to wait for the control plane's announcement.
        request_timeout: Seconds one request may take, retries included, before
            ``ControlPlaneUnavailable``.
        allow_pickle: Encode and decode payloads with pickle (unsafe; both sides must opt in).
        max_frame_size: Largest frame sent or accepted, in bytes.
        tls: CA bundle (and, for mutual TLS, certificate and key) for a ``tls+tcp://`` control
            plane; defaults to ``FASTWORKER_TLS_CA`` / ``_CERT`` / ``_KEY``.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        secret: Secret | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        allow_pickle: bool = False,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        tls: TlsFiles | None = None,
    ) -> None:
        self.address = address or os.environ.get(ENV_CONTROL_PLANE) or DEFAULT_CONTROL_PLANE
        parse_address(self.address)  # a malformed address is a ValueError naming it here, not at the first dial
        self.secret = secret if secret is not None else secret_from_env()
        #: TLS files for ``tls+tcp://`` control planes (default: the ``FASTWORKER_TLS_*`` env vars).
        self.tls = tls if tls is not None else TlsFiles.from_env()
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.allow_pickle = allow_pickle
        self.max_frame_size = max_frame_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: RequestChannel | None = None
        self._requester: Requester | None = None
        self._subscription: Subscription | None = None
        self._announced: asyncio.Event | None = None
        self._announcements: AnnouncementReader | None = None
        self._instance_id = ""
        self._closed = False
        # Coalesced submissions: (spec, future) waiting for a batch slot.
        self._submit_backlog: list[tuple[task_pb2.TaskSpec, asyncio.Future[str]]] = []
        self._submits_in_flight = 0
        self._flush_scheduled = False
        # Coalesced waits: futures per task id, and ids not covered by a request in flight.
        self._awaited: dict[str, list[_Listener]] = {}
        self._unsent: dict[str, None] = {}
        self._waits_in_flight = 0
        #: Bulk wait requests out per task id: a failed one leaves the waiters of an id to a later one.
        self._asked: dict[str, int] = {}
        self._pump_scheduled = False
        self._background: set[asyncio.Task[Any]] = set()
        # Tokens of `async with` blocks that made this the current client (handles.current_client).
        self._current_tokens: list[contextvars.Token[Any]] = []

    # ------------------------------------------------------------------------------------- lifecycle

    def _on_own_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, which must be the one this client was first used on (its sockets serve that one).

        Raises:
            CallContextError: another loop runs (a second ``asyncio.run``).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop and self._loop is not None:
            raise CallContextError(
                "this Client was first used on another event loop (each asyncio.run() makes a new one), which its"
                " connection belongs to: make one Client per event loop, or keep one loop (e.g. one asyncio.run)"
            )
        return loop

    def __repr__(self) -> str:
        return f"<Client {self.address} {'closed' if self._closed else 'open'}>"

    async def __aenter__(self) -> Client:
        """Connect, and make this the current client of the block (for typed ``add.delay(...)``)."""
        await self.connect()
        self._current_tokens.append(handles._push(self))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._current_tokens:
            handles._reset(self._current_tokens.pop())
        await self.aclose()

    async def connect(self) -> None:
        """Find the control plane through discovery and connect (done lazily by every call).

        Raises:
            ControlPlaneUnavailable: no announcement arrived within ``connect_timeout``.
            AuthenticationError: the control plane's announcements fail this client's secret check
                (a missing or wrong secret): raised at the first one, not after ``connect_timeout``.
        """
        await self._connect(None)

    async def _connect(self, within: float | None) -> None:
        """``connect``, giving up after the call's own timeout (``within``, at least MIN_TAKEN_WITHIN) when shorter."""
        if self._closed:  # first: a closed client keeps its channel object, and a wait on it would never end
            raise ClientClosed("the client is closed")
        loop = self._on_own_loop()  # before the fast return: its sockets serve that loop
        if self._channel is not None and self._instance_id:
            return
        if self._loop is None:
            self._loop = loop
            self._announced = asyncio.Event()
        assert self._announced is not None
        if self._subscription is None:  # no await before it is set: the first caller makes it, alone
            auth = FrameAuth(self.secret) if self.secret else None
            self._announcements = AnnouncementReader(auth, max_frame_size=self.max_frame_size)
            self._channel = RequestChannel(loop, max_frame_size=self.max_frame_size, tls=self.tls)
            self._requester = Requester(
                self._channel, max_frame_size=self.max_frame_size, auth=auth, instance=_instance_of(weakref.ref(self))
            )
            self._subscription = Subscription(
                loop,
                self.address,
                DISCOVERY_TOPIC,
                _weak_method(self._on_discovery),  # the loop's reader must not keep this client alive
                max_frame_size=self.max_frame_size,
                tls=self.tls,
            )
            # A client dropped unclosed (one per request, never closed) would keep its sockets, and
            # nng its redials, for the life of the process: they close when it is collected.
            finalizer = weakref.finalize(self, _close_transports, loop, self._channel, self._subscription)
            finalizer.atexit = False  # at exit the process lets them go
        # Every caller waits for the one announcement side by side, each for connect_timeout from its
        # own start (waiting in turn behind a lock, the k-th of many failed after k timeouts).
        bound = self.connect_timeout if within is None else min(self.connect_timeout, max(within, MIN_TAKEN_WITHIN))
        try:
            async with asyncio.timeout(bound):
                while True:
                    await self._announced.wait()
                    if self._instance_id:
                        break
                    # Woken by an announcement this client cannot accept (a missing or wrong
                    # secret): that is the answer, not a reason to wait out connect_timeout.
                    problem = self._announcements.problem if self._announcements is not None else ""
                    if problem:
                        raise AuthenticationError(f"{problem} (control plane on {self.address})")
                    self._announced.clear()  # (accepted since: the next one is waited for)
        except TimeoutError:
            problem = self._announcements.problem if self._announcements is not None else ""
            if problem:
                raise AuthenticationError(f"{problem} (control plane on {self.address})") from None
            reached = self._subscription is not None and self._subscription.reached
            raise ControlPlaneUnavailable(
                f"no control plane announced itself within {bound:g} s: "
                + why_unheard(
                    self.address,
                    reached=reached,
                    tls=is_tls(self.address),
                    incompatible=self._announcements.incompatible if self._announcements is not None else "",
                    shutting_down=self._announcements.shutting_down if self._announcements is not None else "",
                )
            ) from None

    def _on_discovery(self, data: bytes) -> None:
        announcement = self._announcements.announcement(data) if self._announcements is not None else None
        if announcement is None or not announcement.client_address or self._channel is None:
            if self._announcements is not None and self._announcements.problem and not self._instance_id:
                if self._announced is not None:
                    self._announced.set()  # refused: wake the callers of connect() to say why at once
            return
        if announcement.instance_id != self._instance_id:
            if self._instance_id:
                logger.info("control plane changed (%s -> %s)", self._instance_id, announcement.instance_id)
            self._instance_id = announcement.instance_id
        self._channel.dial(announcement.client_address)
        if self._announced is not None:
            self._announced.set()

    async def aclose(self) -> None:
        """Close the connection; pending calls fail with ControlPlaneUnavailable."""
        if self._closed:
            return
        self._closed = True
        await cancel_all(self._background)
        unavailable = ClientClosed("the client was closed")
        for _, future in self._submit_backlog:
            if not future.done():
                future.set_exception(unavailable)
        for futures in self._awaited.values():
            for wait_future in futures:
                if not wait_future.done():
                    wait_future.set_exception(unavailable)
        self._submit_backlog.clear()
        self._awaited.clear()
        if self._subscription is not None:
            self._subscription.close()
        if self._channel is not None:
            self._channel.close()

    # ------------------------------------------------------------------------------------ transport

    async def _request(
        self,
        build: Callable[[Envelope], None] | Envelope,
        *,
        hold: float = 0.0,
        within: float | None = None,
        task_id: str = "",
        task_name: str = "",
    ) -> Envelope:
        """Send a request and return the reply, connecting first if needed (see ``Requester.request``).

        A request the control plane may hold (``hold``: a wait) fails after ``request_timeout``, not
        ``request_timeout`` plus its hold, when no control plane is up to take it (an absent one
        holds nothing); and after the call's own timeout (``within``, at least MIN_TAKEN_WITHIN)
        when that is shorter.

        Raises:
            ControlPlaneUnavailable: no control plane took the request within that bound, or one
                took it and gave no reply within request_timeout plus hold.
            FastworkerError: the control plane answered with an error (typed).
        """
        if not self._instance_id:
            await self._connect(within)
        else:
            self._on_own_loop()
        requester = self._requester
        assert requester is not None
        return await requester.request(
            build,
            timeout=self.request_timeout,
            hold=hold,
            taken_within=_taken_within(self.request_timeout, hold, within),
            task_id=task_id,
            task_name=task_name,
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        spawn(coroutine, self._background)

    # ------------------------------------------------------------------------------------ submission

    def _spec(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: SubmitOptions,
        into: task_pb2.TaskSpec | None = None,
    ) -> task_pb2.TaskSpec:
        """The TaskSpec of one call: every submission path builds its spec here (batches fill theirs in place).

        Raises:
            ValueError: a bad task name.
            PayloadError: the arguments cannot be encoded.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("task name must be a non-empty string")
        spec = task_pb2.TaskSpec() if into is None else into
        spec.name = name
        spec.arguments.CopyFrom(encode_arguments(args, kwargs, allow_pickle=self.allow_pickle))
        options.apply(spec)
        tracing.inject_send(spec)
        if hooks.REGISTERED.submit:
            hooks.call_submit(name, spec.task_id, args, kwargs, options)
        return spec

    async def delay(self, name: str, /, *args: Any, **kwargs: Any) -> str:
        """Queue task ``name`` with the given arguments; returns its task id once accepted.

        The keyword arguments named like a :class:`~fastworker.client.options.SubmitOptions` field
        (``SUBMIT_OPTION_NAMES``: ``priority``, ``queue``, ``countdown``, ``eta``, ``expires``,
        ``task_id``, ``unique_key``, ``depends_on``) are submission options; the others go to the
        task, ``timeout`` included (use :meth:`send` for a task parameter named like an option).

        Raises:
            ValueError: a bad option value (nothing was sent).
            PayloadError: an argument cannot be encoded (nothing was sent).
            UnknownTask: no task is registered under name.
            QueueFull: the control plane's queue is at its bound.
            ControlPlaneUnavailable: the control plane did not answer.
        """
        options, kwargs = SubmitOptions.split(kwargs)
        return await self._enqueue(self._spec(name, args, kwargs, options))

    async def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> str:
        """Like delay, with arguments passed explicitly (for tasks whose parameters collide with options)."""
        return await self._enqueue(self._spec(name, args, kwargs or {}, SubmitOptions(**options)))

    async def _enqueue(self, spec: task_pb2.TaskSpec) -> str:
        await self.connect()
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._submit_backlog.append((spec, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_submits)
        return await future

    def _flush_submits(self) -> None:
        self._flush_scheduled = False
        backlog = self._submit_backlog
        while backlog and self._submits_in_flight < _MAX_SUBMITS_IN_FLIGHT:
            count = size = 0
            for spec, _ in backlog:
                size += spec.ByteSize()
                count += 1
                if size >= _BATCH_BYTES or count >= _MAX_BATCH:
                    break
            batch = backlog[:count]
            del backlog[:count]
            self._submits_in_flight += 1
            self._spawn(self._send_submits(batch))

    async def _send_submits(self, batch: list[tuple[task_pb2.TaskSpec, asyncio.Future[str]]]) -> None:
        try:
            if len(batch) == 1:
                spec, future = batch[0]

                def build_one(envelope: Envelope) -> None:
                    envelope.submit.task.CopyFrom(spec)

                try:
                    reply = await self._request(build_one, task_id=spec.task_id, task_name=spec.name)
                except FastworkerError as exc:
                    if not future.done():
                        future.set_exception(_maybe_accepted(exc, spec.task_id))
                    return
                if not future.done():
                    future.set_result(reply.submit_reply.task_id)
                return

            def build_batch(envelope: Envelope) -> None:
                envelope.submit_batch.tasks.extend(spec for spec, _ in batch)

            try:
                reply = await self._request(build_batch)
            except FastworkerError as exc:
                for spec, future in batch:
                    if not future.done():
                        future.set_exception(_maybe_accepted(exc, spec.task_id))
                return
            outcomes = reply.submit_batch_reply.outcomes
            if len(outcomes) != len(batch):
                error = ProtocolError("batch reply does not match the request")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            for (spec, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if outcome.WhichOneof("outcome") == "accepted":
                    future.set_result(outcome.accepted.task_id)
                else:
                    future.set_exception(
                        _maybe_accepted(_error_from_wire(outcome.error, spec.name, spec.task_id), spec.task_id)
                    )
        except asyncio.CancelledError:  # aclose() cancelled the send: its callers must not wait for ever
            closed = ClientClosed("the client was closed")
            for _, future in batch:
                if not future.done():
                    future.set_exception(closed)
            raise
        finally:
            self._submits_in_flight -= 1
            if self._submit_backlog and not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_submits)

    async def delay_many(
        self,
        calls: Iterable[BatchCall],
        *,
        task_ids: Sequence[str | None] | None = None,
        **options: Unpack[BatchOptionArgs],
    ) -> list[str]:
        """Queue many tasks at once, each ``(name, args)`` or ``(name, args, kwargs)``; returns their ids in order.

        Every call is encoded before anything is sent. The returned ids are those of accepted tasks.
        The options (``priority``, ``countdown``, ``eta``, ``expires``, ...) apply to every task;
        each task gets its own id, ``task_ids[i]`` for call i when given (None: a fresh one).

        An error lists in ``error.task_ids`` the id of every call that was accepted or may have been
        (None for one the control plane refused): ``delay_many(calls, task_ids=error.task_ids)`` sends
        the same calls again, and queues each at most once (an id is queued at most once).

        Raises:
            ValueError: a bad option value, an option that names one task, a malformed call, or
                ``task_ids`` not one per call (``InvalidOptions``; nothing was sent).
            PayloadError: an argument cannot be encoded (naming the call; nothing was sent).
            ControlPlaneUnavailable: a request got no answer, or the control plane could not
                vouch for a call after a restart: those calls may have been accepted
                (``may_have_arrived``), whatever else was refused.
            UnknownTask, QueueFull: the first refused call's error; the others were accepted or
                refused independently.
        """
        batches: list[Envelope] = []
        batch: Envelope | None = None
        size = 0
        for index, name, args, kwargs, call_options in batch_calls(calls, SubmitOptions(**options), task_ids):
            if batch is None or size >= _BATCH_BYTES or len(batch.submit_batch.tasks) >= _MAX_BATCH:
                batch = Envelope()
                batches.append(batch)
                size = 0
            try:
                spec = self._spec(name, args, kwargs, call_options, into=batch.submit_batch.tasks.add())
            except PayloadError as exc:
                raise call_payload_error(index, name, exc) from None
            size += len(spec.arguments.data) + len(name) + 64
        if not batches:
            return []
        await self.connect()
        gate = asyncio.Semaphore(_MAX_SUBMITS_IN_FLIGHT)

        async def send(prepared: Envelope) -> list[str | FastworkerError]:
            specs = prepared.submit_batch.tasks
            try:
                async with gate:
                    reply = await self._request(prepared)
            except FastworkerError as exc:  # this batch's calls only: the others' ids are still reported
                return [exc] * len(specs)
            outcomes = reply.submit_batch_reply.outcomes
            if len(outcomes) != len(specs):
                raise ProtocolError("batch reply does not match the request")
            return [
                outcome.accepted.task_id
                if outcome.WhichOneof("outcome") == "accepted"
                else _error_from_wire(outcome.error, spec.name, spec.task_id)
                for spec, outcome in zip(specs, outcomes, strict=True)
            ]

        results = [result for chunk in await asyncio.gather(*map(send, batches)) for result in chunk]
        error = _batch_error(results, [spec.task_id for prepared in batches for spec in prepared.submit_batch.tasks])
        if error is not None:
            raise error
        return cast("list[str]", results)

    async def submit(self, name: str, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Queue task ``name`` and wait for its result, in one round trip when it finishes quickly.

        Takes the submission options as :meth:`delay` does; ``timeout`` bounds the wait.

        Raises:
            TaskFailed: the task ended in FAILURE or CANCELLED.
            TaskTimeout: timeout passed first (the task goes on).
            ValueError, PayloadError, UnknownTask, QueueFull, ControlPlaneUnavailable: as for delay.
        """
        options, kwargs = SubmitOptions.split(kwargs)
        return await self._submit_and_wait(self._spec(name, args, kwargs, options), timeout)

    async def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> Any:
        """Like submit, with arguments passed explicitly (the waiting twin of send; typed ``submit`` uses it)."""
        return await self._submit_and_wait(self._spec(name, args, kwargs or {}, SubmitOptions(**options)), timeout)

    async def _submit_and_wait(self, spec: task_pb2.TaskSpec, timeout: float | None) -> Any:
        """Submit spec, asking the control plane to hold the reply until the task ends (up to a bound)."""
        started = time.monotonic()
        hold = _SERVER_WAIT if timeout is None else max(0.0, min(timeout, _SERVER_WAIT))

        def build(envelope: Envelope) -> None:
            envelope.submit.task.CopyFrom(spec)
            envelope.submit.wait = hold

        try:
            reply = await self._request(build, hold=hold, within=timeout, task_id=spec.task_id, task_name=spec.name)
        except FastworkerError as exc:
            raise _maybe_accepted(exc, spec.task_id) from None
        body = reply.submit_reply
        if body.HasField("task"):
            return self._value_of(task_info_from_wire(body.task, allow_pickle=self.allow_pickle))
        remaining = None if timeout is None else timeout - (time.monotonic() - started)
        try:
            return await self.result(body.task_id, timeout=remaining)
        except TaskTimeout:
            raise TaskTimeout(body.task_id, timeout or 0.0) from None

    # ------------------------------------------------------------------------------------------ reads

    async def status(self, task_id: str) -> TaskInfo:
        """The task's current state and, when final, its result or error.

        A result this client cannot decode (pickled, and pickle not enabled here) raises nothing:
        ``result`` is None and ``result_error`` says why (so for ``wait``, ``wait_many``, ``watch``).

        Raises:
            TaskNotFound: the control plane does not know the id.
        """
        task_id = id_arg(task_id)

        def build(envelope: Envelope) -> None:
            envelope.status.task_ids.append(task_id)

        reply = await self._request(build)
        body = reply.status_reply
        if not body.tasks:
            raise TaskNotFound(task_id)
        return task_info_from_wire(body.tasks[0], allow_pickle=self.allow_pickle)

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the task to finish and return its value.

        Raises:
            TaskFailed: the task ended in FAILURE or CANCELLED.
            TaskTimeout: timeout passed first (the task goes on).
            TaskNotFound: the control plane does not know the id.
            PayloadError: it succeeded, but its result cannot be decoded here (pickled, and pickle
                not enabled on this client); the message names the task.
        """
        info = await self.wait(task_id, timeout=timeout)
        return self._value_of(info)

    def _value_of(self, info: TaskInfo) -> Any:
        if info.state is TaskState.SUCCESS:
            return result_of(info)
        raise TaskFailed(info)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is final and return its TaskInfo (without raising for FAILURE).

        Raises:
            TaskTimeout: timeout passed first.
            TaskNotFound: the control plane does not know the id.
            ControlPlaneUnavailable: the control plane did not answer within ``request_timeout``
                (a restart it comes back from within that time is waited through).
            ValueError: a NaN timeout (a negative one is 0: a deadline already past).
        """
        task_id = id_arg(task_id)
        bound = _wait_bound(timeout)
        await self._connect(bound)
        future: asyncio.Future[task_pb2.TaskInfo] = asyncio.get_running_loop().create_future()
        self._awaited.setdefault(task_id, []).append(future)
        self._unsent[task_id] = None
        self._schedule_pump()
        try:
            if bound is None:
                info = await future
            else:
                try:
                    async with asyncio.timeout(bound):
                        info = await future
                except TimeoutError:
                    # The bound may pass before the first answer (timeout=0): a task final by then is
                    # no timeout. One quick look, bounded too: an unreachable control plane times out.
                    try:
                        async with asyncio.timeout(_LAST_LOOK):
                            last = await self.status(task_id)
                    except (TimeoutError, ControlPlaneUnavailable):
                        last = None
                    if last is not None and last.state.is_final:
                        return last
                    if last is None:
                        self._raise_if_gone(task_id, bound)
                    raise TaskTimeout(task_id, bound) from None
        finally:
            self._forget_waiter(task_id, future)
        return task_info_from_wire(info, allow_pickle=self.allow_pickle)

    def _raise_if_gone(self, task_id: str, bound: float) -> None:
        """At a wait's timeout, raise ControlPlaneUnavailable if the control plane that answered before is gone.

        Nobody could have answered: "the task did not finish" (``TaskTimeout``) would be a guess,
        and a wrong one for a task that finished before the control plane went away. (A first
        connection still being made is no sign of that: ``timeout=0`` right after connecting.)
        """
        channel = self._channel
        if channel is not None and channel.gone:
            raise ControlPlaneUnavailable(
                f"no control plane connected: the state of task {shown_id(task_id)} is unknown after {bound:g} s"
            )

    def _forget_waiter(self, task_id: str, future: _Listener) -> None:
        """Stop waiting on task_id for this caller; the id leaves the next wait requests if nobody else waits."""
        futures = self._awaited.get(task_id)
        if futures is None:
            return
        try:
            futures.remove(future)
        except ValueError:
            pass
        if not futures:
            del self._awaited[task_id]
            self._unsent.pop(task_id, None)

    async def wait_many(self, task_ids: Sequence[str], *, timeout: float | None = None) -> list[TaskInfo]:
        """Wait until every task is final; returns their TaskInfos in order (cheaper than many ``wait`` calls).

        Raises:
            TaskTimeout: timeout passed first (naming the first task still unfinished).
            TaskNotFound: the control plane does not know one of the ids.
        """
        task_ids = ids_arg(task_ids)
        bound = _wait_bound(timeout)
        await self._connect(bound)
        bulk = _BulkWait(asyncio.get_running_loop(), len(task_ids))
        slots = [_Slot(bulk, index) for index in range(len(task_ids))]
        for task_id, slot in zip(task_ids, slots, strict=True):
            self._awaited.setdefault(task_id, []).append(slot)
            self._unsent[task_id] = None
        self._schedule_pump()
        try:
            if task_ids:
                try:
                    async with asyncio.timeout(bound):
                        await bulk.future
                except TimeoutError:
                    first = next(i for i, info in enumerate(bulk.infos) if info is None)
                    self._raise_if_gone(task_ids[first], timeout or 0.0)
                    raise TaskTimeout(task_ids[first], timeout or 0.0) from None
        finally:
            for task_id, slot in zip(task_ids, slots, strict=True):
                self._forget_waiter(task_id, slot)
        return [task_info_from_wire(info, allow_pickle=self.allow_pickle) for info in bulk.infos if info is not None]

    async def results(self, task_ids: Sequence[str], *, timeout: float | None = None) -> list[Any]:
        """The values of many tasks, in order, once all are final.

        Raises:
            TaskFailed: one of the tasks ended in FAILURE or CANCELLED (the first in order).
            PayloadError: one succeeded with a result this client cannot decode (the first in
                order, named in the message); ``wait_many`` still reads every task's state.
            TaskTimeout, TaskNotFound: as for wait_many.
        """
        return [self._value_of(info) for info in await self.wait_many(task_ids, timeout=timeout)]

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump_waits)

    def _pump_waits(self) -> None:
        self._pump_scheduled = False
        while self._unsent and self._waits_in_flight < _MAX_WAITS_IN_FLIGHT:
            ids: list[str] = []
            for task_id in self._unsent:
                ids.append(task_id)
                if len(ids) >= _MAX_IDS_PER_WAIT:
                    break
            for task_id in ids:
                del self._unsent[task_id]
            self._ask(ids)

    def _ask(self, ids: list[str]) -> None:
        """Send one bulk wait for these ids (counted per id until it ends)."""
        asked = self._asked
        for task_id in ids:
            asked[task_id] = asked.get(task_id, 0) + 1
        self._waits_in_flight += 1
        self._spawn(self._send_wait(ids))

    async def _send_wait(self, ids: list[str]) -> None:
        try:
            all_final = self._one_bulk_wait(ids)

            def build(envelope: Envelope) -> None:
                envelope.wait.task_ids.extend(ids)
                envelope.wait.timeout = _SERVER_WAIT
                envelope.wait.all_final = all_final

            try:
                reply = await self._request(build, hold=_SERVER_WAIT)
            except Exception as exc:
                # ControlPlaneUnavailable too (no answer within request_timeout beyond the hold; a
                # restart within it is waited through): a wait without a timeout must not outlive a
                # control plane that is gone for good. Any other error reaches the waiters as well:
                # nobody else would ever answer them. An id asked again since (a later call waits on
                # it) is left to that request, whose deadline counts from that call, not this one.
                for task_id in ids:
                    if self._asked.get(task_id, 0) > 1 or task_id in self._unsent:
                        continue
                    for future in self._awaited.get(task_id, ()):
                        if not future.done():
                            future.set_exception(exc)
                return
            body = reply.wait_reply
            for info in body.finished:
                for future in self._awaited.get(info.task_id, ()):
                    if not future.done():
                        future.set_result(info)
            for task_id in body.missing:
                for future in self._awaited.get(task_id, ()):
                    if not future.done():
                        future.set_exception(TaskNotFound(task_id))
            remaining = [task_id for task_id in body.pending if task_id in self._awaited]
            if remaining and not self._closed:
                # Ask again for the rest as one chunk: tasks submitted together finish together,
                # and a chunk kept whole is answered in few rounds.
                self._ask(remaining)
        finally:
            self._waits_in_flight -= 1
            asked = self._asked
            for task_id in ids:
                if asked.get(task_id, 1) > 1:
                    asked[task_id] -= 1
                else:
                    asked.pop(task_id, None)
            if self._unsent and not self._closed:
                self._schedule_pump()

    def _one_bulk_wait(self, ids: list[str]) -> bool:
        """True if one ``wait_many`` call alone waits on these ids: it needs them all.

        The control plane may then answer once all are final: a partial answer would only come back
        as another wait. Ids shared with other waits keep the early answers those need.
        """
        bulk: _BulkWait | None = None
        for task_id in ids:
            waiters = self._awaited.get(task_id, ())
            if len(waiters) != 1:
                return False
            (waiter,) = waiters
            if not isinstance(waiter, _Slot) or (bulk is not None and waiter.bulk is not bulk):
                return False
            bulk = waiter.bulk
        return bulk is not None

    # --------------------------------------------------------------------------------------- events

    async def events(
        self, after: int = 0, *, timeout: float = 5.0, task_ids: Sequence[str] = (), limit: int = 1000
    ) -> EventBatch:
        """Events with a sequence above ``after`` (long poll: waits up to timeout for the first one).

        ``after=0`` starts from the oldest event the control plane still keeps; pass the previous
        batch's ``next_after`` to follow the stream (its ``last_sequence`` is the newest event, which
        skips what a batch cut at ``limit`` left out). ``task_ids`` keeps only those tasks' events.
        """

        def build(envelope: Envelope) -> None:
            body = envelope.events
            body.after_sequence = after
            body.timeout = timeout
            body.limit = limit
            body.task_ids.extend(ids_arg(task_ids))

        reply = await self._request(build, hold=timeout, within=timeout)
        body = reply.events_reply
        return EventBatch(
            events=[self._event_from_wire(event) for event in body.events],
            last_sequence=body.last_sequence,
            gap=body.gap,
            more=len(body.events) >= limit,
        )

    def _event_from_wire(self, event: Any) -> TaskEvent:
        kind = events_pb2.EventKind.Name(event.kind).removeprefix("EVENT_KIND_").lower()
        task = task_info_from_wire(event.task, allow_pickle=self.allow_pickle) if event.HasField("task") else None
        return TaskEvent(event.sequence, kind, event.at, task, event.worker_id, event.detail)

    async def watch(self, task_id: str, *, timeout: float | None = None) -> AsyncGenerator[TaskInfo, None]:
        """Yield the task's info at once and then at every state change, ending with its final state.

        Raises:
            TaskNotFound: the control plane does not know the id.
            TaskTimeout: timeout passed before the task was final.
        """
        task_id = id_arg(task_id)
        bound = _wait_bound(timeout)
        deadline = None if bound is None else time.monotonic() + bound
        instance = self._instance_id
        after, info = await self._watch_from(task_id)
        yield info
        last_state = info.state
        # The events since ``after`` may include those that led to ``info`` (the task changed between
        # the two reads): those are older than what was yielded, and are skipped.
        seen: tuple[TaskState, int] | None = (info.state, info.attempts)
        while not last_state.is_final:
            remaining = _SERVER_WAIT if deadline is None else min(_SERVER_WAIT, deadline - time.monotonic())
            if remaining <= 0:
                raise TaskTimeout(task_id, timeout or 0.0)
            if self._instance_id != instance:
                # The control plane restarted: its event stream is another, numbered afresh (a sequence
                # from the old one may be valid there, naming other events), and without a journal
                # it forgot the task: read the state itself (TaskNotFound then) and follow the new stream.
                instance = self._instance_id
                after, current = await self._watch_from(task_id)
                changes, seen = [current], (current.state, current.attempts)
            else:
                try:
                    batch = await self.events(after=after, timeout=remaining, task_ids=[task_id])
                except ControlPlaneUnavailable:
                    if self._closed or self._instance_id == instance:
                        raise
                    continue  # the poll went to an instance that stopped: read the task from the new one
                after = batch.next_after
                if batch.gap:  # events were dropped: read the state itself
                    changes = [await self.status(task_id)]
                else:
                    changes = [e.task for e in batch.events if e.task is not None]
                    if seen is not None:
                        changes = _after_seen(changes, seen)
                seen = None
            for change in changes:
                if change.state is not last_state:
                    last_state = change.state
                    yield change
                    if last_state.is_final:
                        return

    async def _watch_from(self, task_id: str) -> tuple[int, TaskInfo]:
        """Where a watch starts: the stream's sequence now, then the task's state (no change missed between)."""
        after = (await self.events(after=0, timeout=0, limit=1, task_ids=[task_id])).last_sequence
        return after, await self.status(task_id)

    def on_complete(
        self, task_id: str, callback: Callable[[TaskInfo], Any], *, timeout: float | None = None
    ) -> asyncio.Task[None]:
        """Call ``callback(info)`` (a function or coroutine function) once the task is final; returns the watcher.

        Errors of the wait (unknown id, timeout) and of the callback are logged; cancel the returned
        task to stop waiting.

        Raises:
            CallContextError: at once, on another event loop than the one this client was first used on.
        """
        task_id = id_arg(task_id)
        self._on_own_loop()  # (else only a logged error, the callback never called)

        async def run() -> None:
            try:
                info = await self.wait(task_id, timeout=timeout)
                outcome = callback(info)
                if asyncio.iscoroutine(outcome):
                    await outcome
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("on_complete for task %s failed", task_id)

        return spawn(run(), self._background)

    # -------------------------------------------------------------------------------------- control

    # ------------------------------------------------------------------------------------ workflows

    async def delay_workflow(self, workflow: Workflow) -> WorkflowHandle:
        """Queue a workflow (a chain, group, chord or signature): all its steps at once, or none.

        The control plane holds the graph and queues each step when the steps it depends on
        succeeded (docs/workflows.md).

        Raises:
            ValueError: an empty workflow, or a bad option on a step (nothing was sent).
            PayloadError: a step's arguments cannot be encoded (nothing was sent).
            UnknownTask: a step names a task nobody defines (nothing was queued).
            QueueFull: the control plane's queue cannot take every step.
        """
        from fastworker.client.workflows import WorkflowHandle, plan_workflow, step_specs

        steps, output_ids, output_is_list = plan_workflow(workflow)
        workflow_id = new_task_id()
        specs = step_specs(steps, self._spec)

        def build(envelope: Envelope) -> None:
            envelope.submit_workflow.workflow_id = workflow_id
            envelope.submit_workflow.steps.extend(specs)

        try:
            reply = await self._request(build)
        except FrameTooLarge as exc:  # before anything was sent: a payload problem, as for one task's arguments
            raise PayloadError(
                f"the workflow's {len(specs)} steps do not fit in one frame ({exc}): every step is sent at once,"
                " so pass smaller arguments (ids, not documents) or split the work into several workflows"
            ) from None
        except ControlPlaneUnavailable as exc:
            raise _maybe_accepted_workflow(exc, workflow_id) from None
        body = reply.submit_workflow_reply
        return WorkflowHandle(body.workflow_id, tuple(body.task_ids), output_ids, output_is_list, self)

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        """A workflow's state and its steps' (``WorkflowInfo``).

        Raises:
            TaskNotFound: the control plane does not know the workflow (never seen, or its steps left the result cache).
        """
        return await self._workflow_request(workflow_id, cancel=False)

    async def cancel_workflow(self, workflow_id: str) -> int:
        """Cancel a workflow's waiting and running steps; returns how many were cancelled.

        Raises:
            TaskNotFound: the control plane does not know the workflow.
        """
        reply = await self._workflow_reply(workflow_id, cancel=True)
        return reply.workflow_reply.cancelled

    async def _workflow_reply(self, workflow_id: str, *, cancel: bool) -> Envelope:
        workflow_id = id_arg(workflow_id, "workflow_id")
        try:
            return await self._request(lambda envelope: _workflow_body(envelope, workflow_id, cancel=cancel))
        except TaskNotFound:
            raise TaskNotFound(workflow_id, what="workflow") from None

    async def _workflow_request(self, workflow_id: str, *, cancel: bool) -> WorkflowInfo:
        from fastworker.client.workflows import WorkflowInfo

        reply = await self._workflow_reply(workflow_id, cancel=cancel)
        info = reply.workflow_reply.workflow
        steps: list[TaskInfo] = []
        forgotten: list[str] = []
        for step in info.steps:
            if step.state == task_pb2.TASK_STATE_UNSPECIFIED:  # the control plane sends such a step's id only
                forgotten.append(step.task_id)
            else:
                steps.append(task_info_from_wire(step, allow_pickle=self.allow_pickle))
        return WorkflowInfo(
            id=info.workflow_id,
            state=TaskState.from_wire(info.state),
            steps=steps,
            created_at=info.created_at,
            output_ids=tuple(info.output_ids),
            output_is_list=info.output_is_list,
            forgotten=tuple(forgotten),
        )

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task; says whether it was cancelled and what state it was in.

        Raises:
            TaskNotFound: the control plane does not know the id.
        """
        task_id = id_arg(task_id)

        def build(envelope: Envelope) -> None:
            envelope.cancel.task_id = task_id

        reply = await self._request(build, task_id=task_id)
        body = reply.cancel_reply
        return CancelResult(cancelled=body.cancelled, previous_state=TaskState.from_wire(body.previous_state))

    async def retry(self, task_id: str) -> TaskState:
        """Re-queue a FAILURE or CANCELLED task under the same id; returns its new state.

        Raises:
            TaskNotFound: the control plane does not know the id.
        """
        task_id = id_arg(task_id)

        def build(envelope: Envelope) -> None:
            envelope.retry.task_id = task_id

        reply = await self._request(build, task_id=task_id)
        return TaskState.from_wire(reply.retry_reply.state)


def _workflow_body(envelope: Envelope, workflow_id: str, *, cancel: bool) -> None:
    envelope.workflow.workflow_id = workflow_id
    envelope.workflow.cancel = cancel


def _weak_method(method: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``method``, called only while its object lives (a callback that does not keep it alive)."""
    ref = weakref.WeakMethod(method)

    def call(data: bytes) -> None:
        alive = ref()
        if alive is not None:
            alive(data)

    return call


def _instance_of(client: weakref.ref[Client]) -> Callable[[], str]:
    """The requester's view of the instance its client talks to (weak: no cycle holds the client until a full GC)."""

    def instance() -> str:
        alive = client()
        return alive._instance_id if alive is not None else ""

    return instance


def _close_transports(loop: asyncio.AbstractEventLoop, *transports: RequestChannel | Subscription) -> None:
    """Close a collected client's sockets on its loop's thread, at its next turn (now, if the loop closed).

    Never at once on the loop: a collection runs inside whatever code allocated, a socket's own
    callback included.
    """

    def close() -> None:
        for transport in transports:
            transport.close()

    if loop.is_closed():
        close()
        return
    try:
        loop.call_soon_threadsafe(close)
    except RuntimeError:  # closed meanwhile
        close()
