"""FastWorker's client: submit tasks to a control plane and read their results."""

from fastworker.client._async import Client
from fastworker.client._sync import SyncClient
from fastworker.client.errors import (
    AuthenticationError,
    ClientError,
    ControlPlaneUnavailable,
    DuplicateTaskName,
    FastworkerError,
    PayloadError,
    ProtocolError,
    QueueFull,
    Retry,
    SoftTimeLimitExceeded,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    TimeLimitExceeded,
    UnknownTask,
)
from fastworker.client.models import (
    CancelResult,
    EventBatch,
    Priority,
    TaskDetail,
    TaskError,
    TaskEvent,
    TaskInfo,
    TaskPage,
    TaskState,
)
from fastworker.client.task import TaskFunction, TaskOptions, TaskRegistry, task
from fastworker.client.version import __version__

__all__ = [
    "AuthenticationError",
    "CancelResult",
    "Client",
    "ClientError",
    "ControlPlaneUnavailable",
    "DuplicateTaskName",
    "EventBatch",
    "FastworkerError",
    "PayloadError",
    "Priority",
    "ProtocolError",
    "QueueFull",
    "Retry",
    "SoftTimeLimitExceeded",
    "SyncClient",
    "TaskDetail",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskFunction",
    "TaskInfo",
    "TaskPage",
    "TaskNotFound",
    "TaskOptions",
    "TaskRegistry",
    "TaskState",
    "TaskTimeout",
    "TimeLimitExceeded",
    "UnknownTask",
    "__version__",
    "task",
]
