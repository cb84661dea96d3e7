"""The subworkers the control plane knows: their capacity, their tasks, what they hold (leases), their liveness."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastworker.controlplane.records import TaskRecord
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.protocol.v1 import task_pb2, worker_pb2
from fastworker.worker.policy import definition_policy

if TYPE_CHECKING:
    import asyncio

    from fastworker.controlplane.replyserver import Request


#: What a worker that names no queue serves.
DEFAULT_QUEUES = frozenset({DEFAULT_QUEUE})

#: Most tasks a worker may hold beyond its capacity, per slot.
MAX_PREFETCH_PER_SLOT = 16


class WorkerRecord:
    """One registered subworker."""

    __slots__ = (
        "capacity",
        "definitions",
        "disconnected",
        "drain_order",
        "draining",
        "failed",
        "grants",
        "heard_at",
        "host",
        "incarnation",
        "last_seen",
        "leases",
        "pid",
        "run_limits",
        "pipe_id",
        "prefetch",
        "processed",
        "queues",
        "cancels",
        "pull",
        "pull_correlation",
        "pull_timer",
        "rss_bytes",
        "task_names",
        "version",
        "worker_id",
    )

    def __init__(
        self, request: worker_pb2.RegisterRequest, pipe_id: int, now: float, heard_at: float, max_capacity: int
    ) -> None:
        self.worker_id = request.worker_id
        #: The worker process (random per process): a registration with the same one resumes this record.
        self.incarnation = request.incarnation
        self.leases: dict[str, TaskRecord] = {}
        self.describe(request, pipe_id, max_capacity)
        #: Wall-clock time of the worker's latest request, for operators.
        self.last_seen = now
        #: Monotonic time the control plane took in the worker's latest request: the lease clock
        #: (``fastworker.protocol.lease``), immune to wall-clock jumps.
        self.heard_at = heard_at
        self.draining = False
        #: Tasks the worker would hold beyond its capacity now (from its latest work request).
        self.prefetch = 0
        #: Seconds the worker may take to drain, once an operator asked it to; None if nobody asked.
        self.drain_order: float | None = None
        self.processed = 0
        self.failed = 0
        self.rss_bytes = 0
        #: Prefetched tasks this worker may start (its granted claims), sent with its next dispatch.
        self.grants: list[str] = []
        #: Running tasks to tell the worker to stop, on its next reply.
        self.cancels: set[str] = set()
        #: The worker's outstanding WorkRequest, answered when tasks are dispatched to it.
        self.pull: Request | None = None
        self.pull_correlation = 0
        self.pull_timer: asyncio.TimerHandle | None = None

    def describe(self, request: worker_pb2.RegisterRequest, pipe_id: int, max_capacity: int) -> None:
        """Take what a (re-)registration says: connection, capacity (capped), tasks, and who it is."""
        self.host = request.host
        self.pid = request.pid
        self.capacity = min(max(1, request.capacity), max_capacity)
        self.version = request.version
        self.definitions: dict[str, task_pb2.TaskDefinition] = {d.name: d for d in request.tasks}
        #: The run limits the worker's own definitions give (``TaskPolicy.run_limits``), by task name.
        self.run_limits = {d.name: definition_policy(d).run_limits for d in request.tasks}
        self.task_names = frozenset(self.definitions)
        #: The named queues it takes tasks from.
        self.queues = frozenset(request.queues) if request.queues else DEFAULT_QUEUES
        self.pipe_id = pipe_id
        #: Its connection closed and it has not registered again since (it may have died, or been cut off).
        self.disconnected = False

    @property
    def free(self) -> int:
        """Slots free for new tasks."""
        return self.capacity - len(self.leases)

    def ask_prefetch(self, prefetch: int, max_tasks: int) -> None:
        """Take the prefetch a work request asks for, within what one worker may hold (``max_tasks``)."""
        self.prefetch = max(0, min(prefetch, MAX_PREFETCH_PER_SLOT * self.capacity, max_tasks - self.capacity))

    @property
    def load(self) -> float:
        """Share of its slots in use: least-loaded means the lowest share, whatever a worker's size."""
        return len(self.leases) / self.capacity

    @property
    def room(self) -> int:
        """Tasks it may be sent now: free slots plus the prefetch it asked for."""
        return self.capacity + self.prefetch - len(self.leases)

    @property
    def accepting(self) -> bool:
        """True while tasks may be sent to it: a work request is open and it is not draining."""
        return self.pull is not None and not self.draining

    def serves(self, record: TaskRecord) -> bool:
        """True if this worker runs the task's name and serves its queue (whatever its load)."""
        return record.name in self.task_names and record.queue in self.queues

    def can_take(self, record: TaskRecord) -> bool:
        """True if the task could start here now (a free slot, not just prefetch room)."""
        return self.accepting and self.free > 0 and self.serves(record)


class Fleet:
    """The registered subworkers, by worker id and by connection."""

    def __init__(self) -> None:
        self._workers: dict[str, WorkerRecord] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def __iter__(self) -> Iterator[WorkerRecord]:
        return iter(list(self._workers.values()))

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._workers

    def get(self, worker_id: str) -> WorkerRecord | None:
        """The worker registered under worker_id, if any."""
        return self._workers.get(worker_id)

    def add(self, worker: WorkerRecord) -> None:
        """Register a worker (the caller has dropped any previous one with the same id)."""
        self._workers[worker.worker_id] = worker

    def remove(self, worker_id: str) -> WorkerRecord | None:
        """Forget a worker."""
        return self._workers.pop(worker_id, None)

    def on_pipe(self, pipe_id: int) -> list[WorkerRecord]:
        """The workers whose messages came in on this connection."""
        return [w for w in self._workers.values() if w.pipe_id == pipe_id]

    def task_names(self) -> set[str]:
        """Every task name some registered worker runs."""
        names: set[str] = set()
        for worker in self._workers.values():
            names |= worker.task_names
        return names

    def definition(self, name: str) -> task_pb2.TaskDefinition | None:
        """A worker's definition of a task (defaults such as retries), if any worker has it."""
        for worker in self._workers.values():
            definition = worker.definitions.get(name)
            if definition is not None:
                return definition
        return None

    def has_free_slot_for(self, record: TaskRecord) -> bool:
        """True if some worker could start this task now."""
        if not self._workers:
            return False  # the common case of a control plane alone: asked once per local task
        return any(worker.can_take(record) for worker in self._workers.values())
