"""A task's record on the control plane, and the result cache that keeps finished records (LRU + TTL)."""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastworker.protocol.ids import LOCAL_WORKER_ID as LOCAL_WORKER_ID  # the reserved id lives with the id rule
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.protocol.v1 import task_pb2

if TYPE_CHECKING:
    from fastworker.controlplane.flow import Gate

PENDING = task_pb2.TASK_STATE_PENDING
SCHEDULED = task_pb2.TASK_STATE_SCHEDULED
RUNNING = task_pb2.TASK_STATE_RUNNING
RETRYING = task_pb2.TASK_STATE_RETRYING
SUCCESS = task_pb2.TASK_STATE_SUCCESS
FAILURE = task_pb2.TASK_STATE_FAILURE
CANCELLED = task_pb2.TASK_STATE_CANCELLED
FINAL_STATES = frozenset({SUCCESS, FAILURE, CANCELLED})
#: Error type of a task that was running when the control plane stopped and is not run again.
CONTROL_PLANE_LOST = "ControlPlaneLost"
#: Where a task's error is shown among many (a page of tasks, an event), it keeps its type and the
#: start of its message (this many characters), never its traceback: a page of 500 tasks or the
#: 10,000 events kept could otherwise hold tens of KiB each. Readers ask for the task for the rest.
BRIEF_ERROR_MESSAGE = 1024


def brief_error(error: task_pb2.TaskError | None) -> task_pb2.TaskError | None:
    """An error as shown among many (see BRIEF_ERROR_MESSAGE): itself when already that short."""
    if error is None or (not error.traceback and len(error.message) <= BRIEF_ERROR_MESSAGE):
        return error
    return task_pb2.TaskError(type=error.type, message=error.message[:BRIEF_ERROR_MESSAGE])


class TaskRecord:
    """Everything the control plane knows about one task; the spec keeps the encoded arguments.

    A waiting or finished task keeps its spec encoded (:meth:`compact`): a parsed spec costs
    about 400 bytes, its encoding about 100, and 100,000 queued tasks are the case to size for.
    It is parsed again on first use (:attr:`spec`); dispatch copies the encoding as it is.
    """

    __slots__ = (
        "_encoded",
        "_linked",
        "_spec",
        "attempts",
        "entry",
        "error",
        "eta",
        "expires",
        "finished_at",
        "gate",
        "held",
        "name",
        "priority",
        "progress",
        "queue",
        "queued_at",
        "ready_at",
        "result",
        "started_at",
        "state",
        "task_id",
        "unique_key",
        "worker",
    )

    def __init__(
        self,
        spec: task_pb2.TaskSpec,
        priority: int,
        queued_at: float,
        *,
        encoded: bytes = b"",
        queue: str = DEFAULT_QUEUE,
        task_id: str = "",
        name: str = "",
    ) -> None:
        """A PENDING record; ``encoded``, when given, is ``spec``'s encoding, kept instead of the parsed spec.

        ``queue``: the named queue it waits in, as the caller resolved it (``spec.queue`` is not read
        here: the accept path has read it already, and each read makes a new string); likewise
        ``task_id`` and ``name``, when given, are the spec's.
        """
        self._spec: task_pb2.TaskSpec | None = None if encoded else spec
        #: The spec's encoding once made; b"" while the parsed spec may differ from it.
        self._encoded = encoded
        self.task_id = task_id or spec.task_id
        self.name = sys.intern(name or spec.name)  # one string per task name, not one per task
        #: A step of a workflow or a task with dependencies: its info carries them (read from the spec).
        self._linked = bool(spec.workflow_id) or spec.HasField("dependencies")
        self.expires = spec.expires or 0.0  # "or 0.0": the shared constant, not a new float per task
        self.priority = priority
        #: The named queue it waits in (one shared string per name); the coordinator writes a task's
        #: non-default queue into its spec when it accepts it, so a journal replay finds it there.
        self.queue = queue
        self.state: int = PENDING
        self.attempts = 0
        self.worker = ""
        self.queued_at = queued_at
        #: When the current attempt could first run (queued, released at its eta or retry due,
        #: re-queued): the start of its queue wait.
        self.ready_at = queued_at
        self.started_at = 0.0
        self.finished_at = 0.0
        self.eta = spec.eta or 0.0
        self.result: task_pb2.Payload | None = None
        self.error: task_pb2.TaskError | None = None
        #: The latest progress of the current attempt (kept once final; cleared for a retry), or None.
        self.progress: task_pb2.Progress | None = None
        #: Dispatched into a worker's prefetch room and not started there yet: RUNNING inside the
        #: control plane (leased), shown as PENDING to clients until the worker says it started.
        self.held = False
        #: Identifies the live queue or schedule entry; a stale entry (cancelled, then re-queued) is skipped.
        self.entry = 0
        #: The uniqueness key this task holds while live (see ``Coordinator``), or "".
        self.unique_key = ""
        #: The flow-control gate (``flow.Gate``) counting this task as running, or None.
        self.gate: Gate | None = None

    @property
    def spec(self) -> task_pb2.TaskSpec:
        """The task's spec, parsed again if compacted. Read it; change it only through :meth:`edit_spec`."""
        spec = self._spec
        if spec is None:
            spec = self._spec = task_pb2.TaskSpec.FromString(self._encoded)
        return spec

    def edit_spec(self) -> task_pb2.TaskSpec:
        """The spec, to change: its encoding is made again from it when next needed."""
        spec = self.spec
        self._encoded = b""
        self._linked = True  # the caller may add a workflow or dependencies: fill_info looks
        return spec

    def encoded_spec(self) -> bytes:
        """The spec's wire encoding (made once, then kept)."""
        if not self._encoded:
            assert self._spec is not None
            self._encoded = self._spec.SerializeToString()
        return self._encoded

    def compact(self) -> None:
        """Keep only the spec's encoding while nothing reads it (queued, finished)."""
        spec = self._spec
        if spec is not None:
            if not self._encoded:
                self._encoded = spec.SerializeToString()
            self._spec = None

    @property
    def linked(self) -> bool:
        """True for a workflow's step or a task with dependencies (its spec says which)."""
        return self._linked

    @property
    def visible_state(self) -> int:
        """The state clients see: PENDING while held in a worker's prefetch queue, else the state."""
        return PENDING if self.held else self.state

    @property
    def is_final(self) -> bool:
        """True in SUCCESS, FAILURE and CANCELLED."""
        return self.state in FINAL_STATES

    def expired(self, now: float) -> bool:
        """True when its ``expires`` time came and no attempt of it ever started: the one rule for every path.

        A task that ran once is never expired: its retries run whatever the time (``expires`` is
        about starting late, not finishing). A prefetched one's dispatch counted an attempt it has not started.
        """
        expires = self.expires
        return bool(expires) and now >= expires and self.attempts <= (1 if self.held else 0)

    def fill_info(
        self, info: task_pb2.TaskInfo, *, with_arguments: bool = False, with_result: bool = True, brief: bool = False
    ) -> None:
        """Write this record into a TaskInfo message (result and error included when set; ``brief``: see brief_error)."""
        info.task_id = self.task_id
        info.name = self.name
        info.state = self.visible_state  # type: ignore[assignment]
        info.priority = self.priority  # type: ignore[assignment]
        info.queue = self.queue
        info.attempts = self.attempts
        info.worker = self.worker
        info.queued_at = self.queued_at
        info.started_at = self.started_at
        info.finished_at = self.finished_at
        info.eta = self.eta if self.state in (SCHEDULED, RETRYING) else 0.0
        if with_result and self.result is not None:
            info.result.CopyFrom(self.result)
        error = brief_error(self.error) if brief else self.error
        if error is not None:
            info.error.CopyFrom(error)
        if self.progress is not None:
            info.progress.CopyFrom(self.progress)
        if self._linked:
            spec = self.spec
            if spec.workflow_id:
                info.workflow_id = spec.workflow_id
            if spec.HasField("dependencies"):  # not spec.dependencies.task_ids: that would make an empty one
                info.dependencies.CopyFrom(spec.dependencies)
        if with_arguments:
            info.arguments.CopyFrom(self.spec.arguments)


#: Bytes a finished record costs beyond its encoded spec and payloads (the record, its entries), roughly.
RECORD_OVERHEAD = 500
#: Longest time between sweeps of expired results, in seconds.
MAX_SWEEP_INTERVAL = 60.0
#: Shortest time between sweeps that a task's own short ``result_ttl`` can ask for, in seconds.
MIN_TASK_TTL_SWEEP = 1.0


def record_bytes(record: TaskRecord) -> int:
    """An estimate of the memory a finished record holds: overhead, encoded spec (arguments included), result and error."""
    size = RECORD_OVERHEAD + len(record._encoded or record.encoded_spec())
    if record.result is not None:
        size += len(record.result.data)
    if record.error is not None:
        size += len(record.error.message) + len(record.error.traceback)
    return size


class ResultCache:
    """Finished records by task id, bounded by count and by bytes (least recently used goes first) and by age.

    Age counts from when the task finished; a read refreshes recency but not age. A record is kept
    for its task's own TTL (``@task(result_ttl=...)``, given to :meth:`add`) or else the cache's
    ``ttl``; the count and byte bounds hold whatever the TTLs. A record past its TTL is never
    returned (reads check it); :meth:`expire` frees its memory. ``now`` is passed in so tests can
    drive the clock.
    """

    def __init__(self, max_size: int, ttl: float, max_bytes: int = 0) -> None:
        if max_size < 1:
            raise ValueError("result cache size must be at least 1")
        if ttl <= 0:
            raise ValueError("result TTL must be positive")
        if max_bytes < 0:
            raise ValueError("result cache bytes cannot be negative")
        self.max_size = max_size
        self.ttl = ttl
        #: Bound on the estimated memory of the kept records (0: none); the newest record always stays.
        self.max_bytes = max_bytes
        self.bytes = 0
        self._records: OrderedDict[str, TaskRecord] = OrderedDict()
        self._sizes: dict[str, int] = {}
        #: The TTL of each record whose task has its own (only those: a record without one costs nothing more).
        self._ttls: dict[str, float] = {}
        #: The shortest per-task TTL seen so far (inf: none), for :attr:`sweep_interval`.
        self._shortest_ttl = math.inf
        self.hits = 0
        self.misses = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, task_id: str) -> bool:
        """Whether a record is kept for the id, expired or not (see :meth:`peek`)."""
        return task_id in self._records

    def __iter__(self) -> Iterator[TaskRecord]:
        return iter(self._records.values())

    def add(self, record: TaskRecord, now: float, ttl: float = 0.0) -> None:
        """Keep a finished record for ``ttl`` seconds (0: the cache's TTL), evicting the least recently used."""
        task_id = record.task_id
        size = record_bytes(record)
        self.bytes += size - self._sizes.get(task_id, 0)
        self._sizes[task_id] = size
        ttls = self._ttls
        if ttl and ttl != self.ttl:
            ttls[task_id] = ttl
            if ttl < self._shortest_ttl:
                self._shortest_ttl = ttl
        elif ttls:
            ttls.pop(task_id, None)  # kept again (a retried task): its earlier TTL no longer applies
        records = self._records
        records[task_id] = record
        records.move_to_end(task_id)
        while len(records) > self.max_size or (self.max_bytes and self.bytes > self.max_bytes and len(records) > 1):
            old_id, _ = records.popitem(last=False)
            self.bytes -= self._sizes.pop(old_id, 0)
            if ttls:
                ttls.pop(old_id, None)
            self.evicted += 1

    def ttl_of(self, task_id: str) -> float:
        """Seconds the record of ``task_id`` is kept after it finished (its task's TTL, else the cache's)."""
        return self._ttls.get(task_id, self.ttl) if self._ttls else self.ttl

    def get(self, task_id: str, now: float) -> TaskRecord | None:
        """The record if present and within its TTL (an expired one is dropped)."""
        record = self._records.get(task_id)
        if record is None:
            self.misses += 1
            return None
        if now - record.finished_at > (self._ttls.get(task_id, self.ttl) if self._ttls else self.ttl):
            self._drop(task_id)
            self.evicted += 1
            self.misses += 1
            return None
        self._records.move_to_end(task_id)
        self.hits += 1
        return record

    def peek(self, task_id: str, now: float) -> TaskRecord | None:
        """The record if present and unexpired, without counting a hit or refreshing recency."""
        record = self._records.get(task_id)
        if record is None or now - record.finished_at > self.ttl_of(task_id):
            return None
        return record

    def unexpired(self, now: float) -> Iterator[TaskRecord]:
        """The records still within their TTL at ``now``, least recently used first (for listings)."""
        ttls, ttl = self._ttls, self.ttl
        if not ttls:
            cutoff = now - ttl
            return (record for record in self._records.values() if record.finished_at >= cutoff)
        return (
            record for task_id, record in self._records.items() if now - record.finished_at <= ttls.get(task_id, ttl)
        )

    def remove(self, task_id: str) -> TaskRecord | None:
        """Take a record out (e.g. when a finished task is retried)."""
        self.bytes -= self._sizes.pop(task_id, 0)
        self._ttls.pop(task_id, None)
        return self._records.pop(task_id, None)

    def _drop(self, task_id: str) -> None:
        del self._records[task_id]
        self.bytes -= self._sizes.pop(task_id, 0)
        self._ttls.pop(task_id, None)

    @property
    def sweep_interval(self) -> float:
        """Seconds between :meth:`expire` sweeps: the shortest TTL in use, at most 60 (a task's own: at least 1)."""
        return min(MAX_SWEEP_INTERVAL, self.ttl, max(MIN_TASK_TTL_SWEEP, self._shortest_ttl))

    def expire(self, now: float) -> int:
        """Drop every record past its TTL; return how many went (one pass over the cache)."""
        ttls, ttl = self._ttls, self.ttl
        if ttls:
            expired = [tid for tid, rec in self._records.items() if now - rec.finished_at > ttls.get(tid, ttl)]
        else:
            cutoff = now - ttl
            expired = [tid for tid, rec in self._records.items() if rec.finished_at < cutoff]
        for task_id in expired:
            self._drop(task_id)
        self.evicted += len(expired)
        return len(expired)
