"""FastWorker's client: submit tasks to a control plane and read their results."""

from fastworker.client.errors import (
    AuthenticationError,
    ClientError,
    ControlPlaneUnavailable,
    FastworkerError,
    PayloadError,
    ProtocolError,
    QueueFull,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    UnknownTask,
)
from fastworker.client.models import CancelResult, Priority, TaskError, TaskInfo, TaskState
from fastworker.client.version import __version__

__all__ = [
    "AuthenticationError",
    "CancelResult",
    "ClientError",
    "ControlPlaneUnavailable",
    "FastworkerError",
    "PayloadError",
    "Priority",
    "ProtocolError",
    "QueueFull",
    "TaskError",
    "TaskFailed",
    "TaskInfo",
    "TaskNotFound",
    "TaskState",
    "TaskTimeout",
    "UnknownTask",
    "__version__",
]
