"""The client's public value types, translated from protobuf so that apps never touch ``_pb2`` classes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from fastworker.protocol.errors import PayloadError
from fastworker.protocol.payload import decode_value
from fastworker.protocol.v1 import task_pb2


class Priority(enum.StrEnum):
    """Dispatch levels, strictly ordered: critical before high before normal before low."""

    #: Runs before anything else that is waiting.
    CRITICAL = "critical"
    #: Runs before normal and low tasks.
    HIGH = "high"
    #: The default level.
    NORMAL = "normal"
    #: Runs only when nothing of a higher level waits.
    LOW = "low"

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
class TaskInfo:
    """Everything a client may read about one task (``id`` first, as in the CLI's JSON)."""

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


def task_info_from_wire(info: task_pb2.TaskInfo, *, allow_pickle: bool = False, lenient: bool = False) -> TaskInfo:
    """Translate a TaskInfo message into the client's TaskInfo (the result decoded).

    With ``lenient`` (operator views), a result that cannot be decoded here becomes a short note
    instead of an error.

    Raises:
        PayloadError: the result cannot be decoded here (e.g. pickle not enabled), unless lenient.
    """
    result: Any = None
    if info.HasField("result"):
        try:
            result = decode_value(info.result, allow_pickle=allow_pickle)
        except PayloadError as exc:
            if not lenient:
                raise
            result = f"<result not decodable here: {exc}>"
    error = TaskError(info.error.type, info.error.message, info.error.traceback) if info.HasField("error") else None
    return TaskInfo(
        id=info.task_id,
        name=info.name,
        state=TaskState.from_wire(info.state),
        priority=Priority.from_wire(info.priority),
        attempts=info.attempts,
        worker=info.worker or None,
        queued_at=info.queued_at or None,
        started_at=info.started_at or None,
        finished_at=info.finished_at or None,
        result=result,
        error=error,
    )


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
    """Events after a sequence number, the newest sequence at reply time, and whether some were dropped."""

    events: list[TaskEvent]
    last_sequence: int
    gap: bool


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
