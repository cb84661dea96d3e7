"""FastWorker's client: submit tasks to a control plane and read their results."""

from fastworker.client._async import Client
from fastworker.client._progress import report_progress
from fastworker.client._sync import SyncClient
from fastworker.client.errors import (
    AuthenticationError,
    ClientError,
    ControlPlaneUnavailable,
    DuplicateTaskName,
    FastworkerError,
    NoCurrentTask,
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
from fastworker.client.handles import TaskBackend, TaskHandle, current_client, set_default_client, use_client
from fastworker.client.limits import TaskLimits
from fastworker.client.models import (
    CancelResult,
    EventBatch,
    Priority,
    Progress,
    TaskDetail,
    TaskError,
    TaskEvent,
    TaskInfo,
    TaskPage,
    TaskState,
)
from fastworker.client.task import BoundTask, TaskFunction, TaskOptions, TaskRegistry, task
from fastworker.client.version import __version__

__all__ = [
    "AuthenticationError",
    "BoundTask",
    "CancelResult",
    "Client",
    "ClientError",
    "ControlPlaneUnavailable",
    "DuplicateTaskName",
    "EventBatch",
    "FastworkerError",
    "NoCurrentTask",
    "PayloadError",
    "Priority",
    "Progress",
    "ProtocolError",
    "QueueFull",
    "Retry",
    "SoftTimeLimitExceeded",
    "SyncClient",
    "TaskBackend",
    "TaskDetail",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskFunction",
    "TaskHandle",
    "TaskInfo",
    "TaskLimits",
    "TaskPage",
    "TaskNotFound",
    "TaskOptions",
    "TaskRegistry",
    "TaskState",
    "TaskTimeout",
    "TimeLimitExceeded",
    "UnknownTask",
    "__version__",
    "current_client",
    "report_progress",
    "set_default_client",
    "task",
    "use_client",
]
