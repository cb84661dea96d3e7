"""Fixtures that drive a real Coordinator on the test's event loop with small in-process tasks, and request channels."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pynng
import pytest

from fastworker.client._transport import RequestChannel
from fastworker.client.models import Priority
from fastworker.client.task import AsyncTaskFunction, SyncTaskFunction, TaskFunction, TaskOptions, TaskRegistry
from fastworker.controlplane.coordinator import Coordinator
from fastworker.controlplane.records import TaskRecord
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import task_pb2

#: Bound on every wait a test makes for the coordinator, in seconds.
WAIT_BOUND = 10.0


class Harness:
    """Builds tasks, specs and coordinators for one test, and cleans all of them up afterwards.

    Tasks are made directly as Sync/AsyncTaskFunction and registered in the harness's own registry,
    so nothing leaks into ``default_registry``.
    """

    def __init__(self) -> None:
        self.registry = TaskRegistry()
        self.coordinators: list[Coordinator] = []
        self.gates: list[threading.Event] = []

    def task(self, fn: Callable[..., Any], name: str | None = None, **options: Any) -> TaskFunction[Any, Any]:
        """Register fn as a task in the harness registry."""
        if "priority" in options:
            options["priority"] = Priority.parse(options["priority"])
        opts = TaskOptions(**options)
        task_name = name or fn.__name__
        tf: TaskFunction[Any, Any]
        if inspect.iscoroutinefunction(fn):
            tf = AsyncTaskFunction(fn, task_name, opts)
        else:
            tf = SyncTaskFunction(fn, task_name, opts)
        return self.registry.register(tf)

    def gate(self) -> threading.Event:
        """A threading.Event that teardown sets, so no blocked task thread outlives the test."""
        event = threading.Event()
        self.gates.append(event)
        return event

    def coordinator(self, **kwargs: Any) -> Coordinator:
        """A Coordinator on the running loop; closed in teardown."""
        settings: dict[str, Any] = {"local_concurrency": 2, "result_cache_size": 1000, "result_ttl": 3600.0}
        settings.update(kwargs)
        coordinator = Coordinator(asyncio.get_running_loop(), self.registry, **settings)
        self.coordinators.append(coordinator)
        return coordinator

    @staticmethod
    def spec(
        name: str,
        *args: Any,
        task_id: str | None = None,
        priority: int = 0,
        eta: float = 0.0,
        unique_key: str = "",
        **kwargs: Any,
    ) -> task_pb2.TaskSpec:
        """A TaskSpec for name called with args and kwargs."""
        return task_pb2.TaskSpec(
            task_id=task_id or str(uuid.uuid4()),
            name=name,
            arguments=encode_arguments(args, kwargs),
            priority=priority,  # type: ignore[arg-type]
            eta=eta,
            unique_key=unique_key,
        )

    @staticmethod
    async def wait(
        coordinator: Coordinator, task_ids: list[str], timeout: float
    ) -> tuple[list[TaskRecord], list[str], list[str]]:
        """One Coordinator.wait call, awaited: (finished, pending, missing)."""
        future: asyncio.Future[tuple[list[TaskRecord], list[str], list[str]]] = (
            asyncio.get_running_loop().create_future()
        )

        def callback(done: list[TaskRecord], pending: list[str], missing: list[str]) -> None:
            if not future.done():
                future.set_result((list(done), list(pending), list(missing)))

        coordinator.wait(task_ids, timeout, callback)
        async with asyncio.timeout(timeout + WAIT_BOUND):
            return await future

    async def final(self, coordinator: Coordinator, task_id: str, bound: float = WAIT_BOUND) -> TaskRecord:
        """Wait (through Coordinator.wait) until task_id is final and return its record."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"task {task_id} did not finish within {bound} s")
            finished, pending, missing = await self.wait(coordinator, [task_id], remaining)
            assert not missing, f"task {task_id} is unknown to the coordinator"
            if finished:
                return finished[0]

    def release_all(self) -> None:
        for gate in self.gates:
            gate.set()

    def close(self) -> None:
        self.release_all()
        for coordinator in self.coordinators:
            coordinator.close()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    """A Harness whose coordinators are closed (and blocked tasks released) after the test."""
    h = Harness()
    try:
        yield h
    finally:
        h.close()
        # Let completions that the slots posted before closing run on this loop, not a closed one.
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------ dispatch channel rig
# A real Coordinator (no local slots: only subworkers run tasks) + Fleet + Dispatcher + WorkerApi,
# driven in-process with fake dispatch-channel requests and a clock the test moves by hand.


from fastworker.controlplane.dispatcher import Dispatcher  # noqa: E402
from fastworker.controlplane.fleet import Fleet  # noqa: E402
from fastworker.controlplane.journal import Recovered  # noqa: E402
from fastworker.controlplane.workers_api import WorkerApi  # noqa: E402
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE, decode_frame, encode_frame, new_envelope  # noqa: E402
from fastworker.protocol.payload import encode_value  # noqa: E402
from fastworker.protocol.v1 import worker_pb2  # noqa: E402
from fastworker.protocol.v1.envelope_pb2 import Envelope  # noqa: E402


class FakeClock:
    """A coordinator clock that only moves when the test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeRequest:
    """Stands in for ``replyserver.Request``: records every reply (decoded) and whether it was dropped."""

    def __init__(self, data: bytes, pipe_id: int = 0) -> None:
        self.data = data
        self.pipe_id = pipe_id
        self.replies: list[Envelope] = []  # decoded, in order (more than one is a bug)
        self.dropped = False

    @property
    def answered(self) -> bool:
        return bool(self.replies) or self.dropped

    def reply(self, data: bytes) -> None:
        self.replies.append(decode_frame(data))

    def drop(self) -> None:
        self.dropped = True

    @property
    def envelope(self) -> Envelope:
        """The one reply (fails if there is none, several, or the request was also dropped)."""
        assert not self.dropped, "the request was dropped"
        assert len(self.replies) == 1, f"expected exactly one reply, got {len(self.replies)}"
        return self.replies[0]

    @property
    def tasks(self) -> list[task_pb2.TaskSpec]:
        """The tasks of the one Dispatch reply."""
        envelope = self.envelope
        assert envelope.WhichOneof("body") == "dispatch", f"expected a dispatch, got {envelope.WhichOneof('body')}"
        return list(envelope.dispatch.tasks)


class DispatchRig:
    """Builds the dispatch side of a control plane on the running loop and talks to it like subworkers do."""

    INSTANCE_ID = "cp-under-test"

    def __init__(
        self,
        harness: Harness,
        *,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 15.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_worker_tasks: int = 1024,
        recovered: Recovered | None = None,
        orphan_window: float | None = None,
    ) -> None:
        self.harness = harness
        self.clock = FakeClock()
        self.coordinator = harness.coordinator(local_concurrency=0, clock=self.clock)
        if recovered is not None:  # a journal replay, before the dispatcher starts (as in the server)
            self.coordinator.restore(recovered)
        self.fleet = Fleet()
        self.dispatcher = Dispatcher(
            self.coordinator,
            self.fleet,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            monotonic=self.clock,
            max_worker_tasks=max_worker_tasks,
            orphan_window=orphan_window,
        )
        self.api = WorkerApi(
            self.coordinator,
            self.dispatcher,
            instance_id=self.INSTANCE_ID,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            max_frame_size=max_frame_size,
        )
        self.pipes: dict[str, int] = {}
        self._next_correlation = 100

    def close(self) -> None:
        self.dispatcher.close()

    # -------------------------------------------------------------------------------------- wire

    def correlation(self) -> int:
        self._next_correlation += 1
        return self._next_correlation

    def send_frame(self, data: bytes, pipe_id: int = 0) -> FakeRequest:
        request = FakeRequest(data, pipe_id)
        self.api.handle(request)  # type: ignore[arg-type]
        return request

    def send(self, envelope: Envelope, pipe_id: int = 0) -> FakeRequest:
        return self.send_frame(encode_frame(envelope), pipe_id)

    def envelope(self, correlation_id: int | None = None) -> Envelope:
        return new_envelope(self.correlation() if correlation_id is None else correlation_id)

    # ----------------------------------------------------------------------------- as a subworker

    def register(
        self,
        worker_id: str,
        tasks: dict[str, int] | list[str],
        *,
        capacity: int = 4,
        pipe_id: int | None = None,
        correlation_id: int | None = None,
        incarnation: str = "",
        queues: tuple[str, ...] = (),
        held: tuple[tuple[str, int], ...] = (),
    ) -> FakeRequest:
        """Register a worker running tasks ({name: default retries} or [names], retries 0).

        ``incarnation`` names the worker process (empty: an old worker that sends none);
        ``queues``: the named queues it serves (empty: "default"); ``held``: (task id, attempt) it
        still holds from an earlier control plane instance.
        """
        definitions = tasks if isinstance(tasks, dict) else dict.fromkeys(tasks, 0)
        if pipe_id is None:
            pipe_id = self.pipes.get(worker_id, 1000 + len(self.pipes))
        self.pipes[worker_id] = pipe_id
        envelope = self.envelope(correlation_id)
        body = envelope.register
        body.worker_id = worker_id
        body.host = "host-" + worker_id
        body.pid = 4242
        body.capacity = capacity
        body.version = "0.1.0"
        body.incarnation = incarnation
        body.queues.extend(queues)
        for task_id, attempt in held:
            body.held.add(task_id=task_id, attempt=attempt)
        for name, retries in definitions.items():
            body.tasks.append(task_pb2.TaskDefinition(name=name, retries=retries))
        return self.send(envelope, pipe_id)

    def pull(
        self,
        worker_id: str,
        hold: float = 5.0,
        correlation_id: int | None = None,
        held: list[str] | None = None,
        claims: list[str] | None = None,
        prefetch: int = 0,
    ) -> FakeRequest:
        """A work request; like a real worker, it lists every task it holds (by default: all its leases)."""
        envelope = self.envelope(correlation_id)
        envelope.work_request.worker_id = worker_id
        envelope.work_request.hold = hold
        envelope.work_request.prefetch = prefetch
        envelope.work_request.started_task_ids.extend(claims or [])
        if held is None:
            worker = self.fleet.get(worker_id)
            held = list(worker.leases) if worker is not None else []
        envelope.work_request.held_task_ids.extend(held)
        return self.send(envelope, self.pipes.get(worker_id, 0))

    def report(
        self, worker_id: str, *outcomes: worker_pb2.TaskOutcome, correlation_id: int | None = None
    ) -> FakeRequest:
        envelope = self.envelope(correlation_id)
        envelope.results.worker_id = worker_id
        envelope.results.outcomes.extend(outcomes)
        return self.send(envelope, self.pipes.get(worker_id, 0))

    def heartbeat(self, worker_id: str, correlation_id: int | None = None, **fields: Any) -> FakeRequest:
        envelope = self.envelope(correlation_id)
        envelope.heartbeat.sender_id = worker_id
        for name, value in fields.items():
            setattr(envelope.heartbeat, name, value)
        return self.send(envelope, self.pipes.get(worker_id, 0))

    def deregister(self, worker_id: str, returned: list[str], correlation_id: int | None = None) -> FakeRequest:
        envelope = self.envelope(correlation_id)
        envelope.deregister.worker_id = worker_id
        envelope.deregister.returned_task_ids.extend(returned)
        return self.send(envelope, self.pipes.get(worker_id, 0))

    @staticmethod
    def success(spec: task_pb2.TaskSpec, value: Any, attempt: int | None = None) -> worker_pb2.TaskOutcome:
        return worker_pb2.TaskOutcome(
            task_id=spec.task_id,
            attempt=spec.attempt if attempt is None else attempt,
            state=task_pb2.TASK_STATE_SUCCESS,
            result=encode_value(value),
        )

    @staticmethod
    def failure(
        spec: task_pb2.TaskSpec, error_type: str, message: str, attempt: int | None = None
    ) -> worker_pb2.TaskOutcome:
        return worker_pb2.TaskOutcome(
            task_id=spec.task_id,
            attempt=spec.attempt if attempt is None else attempt,
            state=task_pb2.TASK_STATE_FAILURE,
            error=task_pb2.TaskError(type=error_type, message=message),
        )

    # -------------------------------------------------------------------------------- as a client

    def submit(
        self,
        name: str,
        *args: Any,
        retries: int | None = None,
        priority: int = 0,
        task_id: str | None = None,
        queue: str = "",
    ) -> TaskRecord:
        """Submit like the client does (retries unset: the task's registered default)."""
        spec = self.harness.spec(name, *args, task_id=task_id, priority=priority)
        spec.queue = queue
        if retries is not None:
            spec.retries = retries
        record, duplicate = self.coordinator.submit(spec)
        assert not duplicate
        return record


@pytest.fixture
def flaky() -> Callable[[], int]:
    """A task body named ``flaky``: its first call raises RuntimeError, every later one returns 7."""
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return 7

    return flaky


@pytest.fixture
async def dispatch_rig(harness: Harness) -> AsyncIterator[Callable[..., DispatchRig]]:
    """A factory of DispatchRigs (settings as keyword arguments); their dispatchers are closed after the test."""
    rigs: list[DispatchRig] = []

    def make(**settings: Any) -> DispatchRig:
        rig = DispatchRig(harness, **settings)
        rigs.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            rig.close()


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[str], RequestChannel]]:
    """Makes the client's RequestChannels dialed to an address (to talk to reply servers); closes them after the test."""
    made: list[RequestChannel] = []

    def make(address: str) -> RequestChannel:
        channel = RequestChannel(asyncio.get_running_loop())
        made.append(channel)
        channel.dial(address)
        return channel

    yield make
    for channel in made:
        channel.close()


# ------------------------------------------------------------------------------------- reply servers

from fastworker.controlplane.admission import ConnectionAdmission, ConnectionEvent  # noqa: E402
from fastworker.controlplane.replyserver import ReplyServer, Request, listener_url  # noqa: E402

ANY_PORT = "tcp://127.0.0.1:0"


class Served:
    """A Rep0 socket on loopback served by a ReplyServer (with admission), recording connection events."""

    def __init__(
        self, handler: Callable[[Request], None], admission: ConnectionAdmission | None, **options: object
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.events: list[ConnectionEvent] = []
        self.requests: list[Request] = []
        self.handler = handler
        self.socket = pynng.Rep0()
        self.admission = admission
        if admission is not None:
            admission.attach(self.socket, self.loop, self.events.append)
        self.url = listener_url(self.socket.listen(ANY_PORT), ANY_PORT)
        self.port = int(self.url.rpartition(":")[2])
        self.server = ReplyServer(
            self.socket,
            self._handle,
            self.loop,
            admission=admission,
            on_event=self.events.append,
            **options,  # type: ignore[arg-type]
        )
        self.server.start()

    def _handle(self, request: Request) -> None:
        self.requests.append(request)
        self.handler(request)

    def close(self) -> None:
        for request in self.requests:
            request.drop()
        self.requests.clear()
        self.server.close()
        self.socket.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(
        handler: Callable[[Request], None], admission: ConnectionAdmission | None = None, **options: object
    ) -> Served:
        served = Served(handler, admission, **options)
        made.append(served)
        return served

    yield make
    for served in made:
        served.close()
