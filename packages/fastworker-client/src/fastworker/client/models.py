"""The client's public value types, translated from protobuf so that apps never touch ``_pb2`` classes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from fastworker.protocol.errors import PayloadError
from fastworker.protocol.ids import shown_id
from fastworker.protocol.payload import decode_value
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.protocol.v1 import task_pb2


class Priority(enum.StrEnum):
    """Dispatch levels, strictly ordered: critical before high before normal before low.

    Two levels compare by importance, not as their names would: ``Priority.CRITICAL >
    Priority.HIGH > Priority.NORMAL > Priority.LOW`` (so ``max`` is the most urgent, and
    ``sorted(levels, reverse=True)`` lists them in the order they start); against any other string
    a level compares as the string it is.
    """

    #: Runs before anything else that is waiting.
    CRITICAL = "critical"
    #: Runs before normal and low tasks.
    HIGH = "high"
    #: The default level.
    NORMAL = "normal"
    #: Runs only when nothing of a higher level waits.
    LOW = "low"

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Priority):
            return _IMPORTANCE[self] < _IMPORTANCE[other]
        return str.__lt__(self, other)  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        if isinstance(other, Priority):
            return _IMPORTANCE[self] <= _IMPORTANCE[other]
        return str.__le__(self, other)  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        if isinstance(other, Priority):
            return _IMPORTANCE[self] > _IMPORTANCE[other]
        return str.__gt__(self, other)  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        if isinstance(other, Priority):
            return _IMPORTANCE[self] >= _IMPORTANCE[other]
        return str.__ge__(self, other)  # type: ignore[operator]

    def to_wire(self) -> task_pb2.Priority.ValueType:
        """The protobuf enum value for this level."""
        return _PRIORITY_TO_WIRE[self]

    @classmethod
    def from_wire(cls, value: int) -> Priority:
        """The level for a protobuf enum value; UNSPECIFIED reads as NORMAL."""
        return _PRIORITY_FROM_WIRE.get(value, Priority.NORMAL)

    @classmethod
    def parse(cls, value: Priority | str) -> Priority:
        """Accept a Priority or its name in any case.

        Raises:
            ValueError: value names no level.
        """
        if isinstance(value, Priority):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"unknown priority {value!r}: expected one of {', '.join(p.value for p in cls)}") from None


_PRIORITY_TO_WIRE: dict[Priority, task_pb2.Priority.ValueType] = {
    Priority.CRITICAL: task_pb2.PRIORITY_CRITICAL,
    Priority.HIGH: task_pb2.PRIORITY_HIGH,
    Priority.NORMAL: task_pb2.PRIORITY_NORMAL,
    Priority.LOW: task_pb2.PRIORITY_LOW,
}
_PRIORITY_FROM_WIRE: dict[int, Priority] = {int(v): k for k, v in _PRIORITY_TO_WIRE.items()}
#: Each level's importance: the last defined (low) least, the first (critical) most.
_IMPORTANCE: dict[Priority, int] = {level: -rank for rank, level in enumerate(Priority)}


class TaskState(enum.StrEnum):
    """Where a task is in its life; SUCCESS, FAILURE and CANCELLED are final."""

    #: Accepted and waiting in the priority queue.
    PENDING = "PENDING"
    #: Held until its countdown, ETA or periodic slot is due.
    SCHEDULED = "SCHEDULED"
    #: Executing on the control plane or a subworker.
    RUNNING = "RUNNING"
    #: Waiting between two attempts.
    RETRYING = "RETRYING"
    #: Final: returned a value.
    SUCCESS = "SUCCESS"
    #: Final: raised, timed out, or its worker was lost.
    FAILURE = "FAILURE"
    #: Final: cancelled by a client, an operator, or expiry.
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        """True for SUCCESS, FAILURE and CANCELLED."""
        return self in _FINAL_STATES

    def to_wire(self) -> task_pb2.TaskState.ValueType:
        """The protobuf enum value for this state."""
        return _STATE_TO_WIRE[self]

    @classmethod
    def from_wire(cls, value: int) -> TaskState:
        """The state for a protobuf enum value.

        Raises:
            ValueError: the value is UNSPECIFIED or unknown.
        """
        try:
            return _STATE_FROM_WIRE[value]
        except KeyError:
            raise ValueError(f"unknown task state {value}") from None


_FINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED})
_STATE_TO_WIRE: dict[TaskState, task_pb2.TaskState.ValueType] = {
    TaskState.PENDING: task_pb2.TASK_STATE_PENDING,
    TaskState.SCHEDULED: task_pb2.TASK_STATE_SCHEDULED,
    TaskState.RUNNING: task_pb2.TASK_STATE_RUNNING,
    TaskState.RETRYING: task_pb2.TASK_STATE_RETRYING,
    TaskState.SUCCESS: task_pb2.TASK_STATE_SUCCESS,
    TaskState.FAILURE: task_pb2.TASK_STATE_FAILURE,
    TaskState.CANCELLED: task_pb2.TASK_STATE_CANCELLED,
}
_STATE_FROM_WIRE: dict[int, TaskState] = {int(v): k for k, v in _STATE_TO_WIRE.items()}


@dataclass(frozen=True)
class TaskError:
    """A failure as the client reads it: the exception type, its message and the remote traceback."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class Progress:
    """How far a running task got, as it last said with :func:`~fastworker.client.report_progress`.

    ``total`` is None when the task does not know how much work there is. ``reported_at`` (Unix
    seconds, the executing host's clock) takes no part in comparisons: ``Progress(3, 10, "x")``
    equals what a task reported with ``report_progress(3, 10, "x")``.
    """

    #: Units of work done so far.
    done: int
    #: Units of work in all; None when unknown.
    total: int | None = None
    #: What the task is doing now (at most 200 characters).
    message: str = ""
    #: When the task reported it (Unix seconds); 0 when unknown.
    reported_at: float = field(default=0.0, compare=False)

    @property
    def fraction(self) -> float | None:
        """``done / total`` in 0..1, or None when the total is unknown (1.0 for a total of 0)."""
        if self.total is None:
            return None
        if self.total <= 0:
            return 1.0
        return min(1.0, self.done / self.total)

    def remaining(self, started_at: float | None, now: float | None = None) -> float | None:
        """Seconds still to go at the rate so far, or None when unknown (no total, no start, nothing done).

        The rate is ``done`` units over the time from ``started_at`` to ``now`` (to the report when
        ``now`` is None): a task that stops reporting sees its estimate grow, not run out.
        """
        if self.total is None or not started_at:
            return None
        if self.done >= self.total:
            return 0.0
        until = self.reported_at if now is None else max(now, self.reported_at)
        elapsed = until - started_at
        if self.done <= 0 or elapsed <= 0:
            return None
        return (self.total - self.done) * elapsed / self.done

    def __str__(self) -> str:
        """``3/10 (30%) rendering``, or ``3 rendering`` without a total."""
        fraction = self.fraction
        count = str(self.done) if self.total is None else f"{self.done}/{self.total} ({fraction or 0.0:.0%})"
        return f"{count} {self.message}" if self.message else count

    def to_wire(self) -> task_pb2.Progress:
        """The protobuf message for this value."""
        wire = task_pb2.Progress(done=self.done, message=self.message, reported_at=self.reported_at)
        if self.total is not None:
            wire.total = self.total
        return wire

    @classmethod
    def from_wire(cls, wire: task_pb2.Progress) -> Progress:
        """The value of a protobuf message."""
        return cls(wire.done, wire.total if wire.HasField("total") else None, wire.message, wire.reported_at)


@dataclass(frozen=True)
class TaskInfo:
    """Everything a client may read about one task (``id`` first, as in the CLI's JSON).

    ``progress`` is the latest the task reported in its current attempt (a finished task keeps its
    last one; a retry starts without any), or None. ``depends_on`` lists the tasks it waits (or
    waited) for; ``workflow_id`` names the workflow it is a step of, or is None.

    A result this side cannot decode (pickled by a side that enabled pickle, read by one that did
    not) leaves ``result`` None and says why in ``result_error``, for this task only: its state
    stays readable, and ``Client.result`` and ``Client.results`` raise ``PayloadError`` naming it.
    """

    id: str
    name: str
    state: TaskState
    priority: Priority
    attempts: int
    worker: str | None
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    result: Any = None
    error: TaskError | None = None
    progress: Progress | None = None
    depends_on: tuple[str, ...] = ()
    workflow_id: str | None = None
    #: The named queue it waits (or waited) in.
    queue: str = DEFAULT_QUEUE
    #: Why its result could not be decoded here (``result`` is None then), or None.
    result_error: str | None = None


def result_of(info: TaskInfo) -> Any:
    """The task's result, or a PayloadError naming the task when it could not be decoded here.

    Raises:
        PayloadError: ``info.result_error`` is set (a pickled result, and pickle not enabled here).
    """
    if info.result_error is not None:
        raise PayloadError(f"the result of task {shown_id(info.id)} cannot be decoded here: {info.result_error}")
    return info.result


def task_info_from_wire(info: task_pb2.TaskInfo, *, allow_pickle: bool = False) -> TaskInfo:
    """Translate a TaskInfo message into the client's TaskInfo (the result decoded).

    A result that cannot be decoded here is no error: it is left None and ``result_error`` says
    why, so one such task never hides its state, nor fails a batch that reads others.
    """
    result: Any = None
    result_error: str | None = None
    if info.HasField("result"):
        try:
            result = decode_value(info.result, allow_pickle=allow_pickle)
        except PayloadError as exc:
            result_error = str(exc)
    error = TaskError(info.error.type, info.error.message, info.error.traceback) if info.HasField("error") else None
    # A bulk wait reads thousands of these: the frozen dataclass's __init__ (one object.__setattr__
    # per field, ~5 us) is bypassed by filling the instance's dict at once. Every field is given.
    task_info = object.__new__(TaskInfo)
    task_info.__dict__.update(
        id=info.task_id,
        name=info.name,
        state=TaskState.from_wire(info.state),
        priority=_PRIORITY_FROM_WIRE.get(info.priority, Priority.NORMAL),
        attempts=info.attempts,
        worker=info.worker or None,
        queued_at=info.queued_at or None,
        started_at=info.started_at or None,
        finished_at=info.finished_at or None,
        result=result,
        error=error,
        progress=Progress.from_wire(info.progress) if info.HasField("progress") else None,
        # HasField first: reading an absent repeated field costs a microsecond per task on a bulk wait.
        depends_on=tuple(info.dependencies.task_ids) if info.HasField("dependencies") else (),
        workflow_id=info.workflow_id or None,
        queue=info.queue or DEFAULT_QUEUE,
        result_error=result_error,
    )
    return task_info


@dataclass(frozen=True)
class CancelResult:
    """What a cancel did: whether it cancelled, and the state the task was in."""

    cancelled: bool
    previous_state: TaskState


@dataclass(frozen=True)
class TaskEvent:
    """One entry of the control plane's event stream.

    ``kind`` is ``"task_state"`` (``task`` holds the task's new info), ``"worker_online"``,
    ``"worker_offline"`` or ``"queue_changed"`` (``worker_id`` / ``detail`` say which and why).
    """

    sequence: int
    kind: str
    at: float
    task: TaskInfo | None = None
    worker_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class EventBatch:
    """Events after a sequence number, the newest sequence at reply time, and whether some were dropped.

    To follow the stream, ask next after :attr:`next_after`: ``last_sequence`` is the newest event,
    beyond the last one returned when the batch was cut at its ``limit`` (``more``).
    """

    events: list[TaskEvent]
    last_sequence: int
    gap: bool
    #: The batch holds as many events as were asked for: more may follow at once.
    more: bool = False

    @property
    def next_after(self) -> int:
        """Where the next read continues: the last event returned if the batch was cut at its limit, else ``last_sequence``."""
        if self.more and self.events:
            return self.events[-1].sequence
        return self.last_sequence


@dataclass(frozen=True)
class TaskPage:
    """One page of an operator's task listing, newest first; ``total`` counts every match."""

    tasks: list[TaskInfo]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class TaskDetail:
    """One task in full, for operators: its info plus the arguments it was submitted with.

    Arguments the safe codec cannot decode here (pickled ones, say) leave ``args`` and ``kwargs``
    empty and say why in ``arguments_error``.
    """

    info: TaskInfo
    args: list[Any]
    kwargs: dict[str, Any]
    arguments_error: str | None = None
    #: When a countdown or ETA made it due (Unix seconds), if it had one.
    eta: float | None = None
    #: When it ends CANCELLED (``Expired``) instead if no attempt started by then (Unix seconds),
    #: if it was submitted with ``expires``; None from a control plane too old to say.
    expires: float | None = None

    @property
    def wait_time(self) -> float | None:
        """Seconds between being queued and starting (the last attempt), or None if it has not started."""
        info = self.info
        if info.queued_at is None or info.started_at is None:
            return None
        return max(0.0, info.started_at - info.queued_at)

    @property
    def run_time(self) -> float | None:
        """Seconds between starting and finishing, or None if it has not done both."""
        info = self.info
        if info.started_at is None or info.finished_at is None:
            return None
        return max(0.0, info.finished_at - info.started_at)
