"""FastWorker's client: submit tasks to a control plane and read their results.

What defines tasks (``task``, the models, the errors) is imported with the package; what submits
them (``Client`` and the transport, asyncio and nng under it), ``SyncClient``'s thread, progress
reporting and the workflow canvas load on first use, so a module of task definitions or a
command's start-up does not pay for them (bench scenario ``import_time``).
"""

from typing import TYPE_CHECKING

from fastworker.client.context import TaskContext, current_task
from fastworker.client.errors import (
    AuthenticationError,
    CallContextError,
    ClientClosed,
    ClientError,
    ControlPlaneUnavailable,
    DuplicateTaskName,
    FastworkerError,
    ForkedProcessError,
    InvalidOptions,
    InvalidRequest,
    NoCurrentTask,
    PayloadError,
    ProtocolError,
    QueueFull,
    Retry,
    SoftTimeLimitExceeded,
    TaskCancelled,
    TaskFailed,
    TaskInterrupted,
    TaskNotFound,
    TaskTimeout,
    TimeLimitExceeded,
    UnknownTask,
)
from fastworker.client.handles import (
    SyncTaskBackend,
    SyncTaskHandle,
    TaskBackend,
    TaskHandle,
    current_client,
    current_sync_client,
    set_default_client,
    set_default_sync_client,
    use_client,
    use_sync_client,
)
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
from fastworker.client.options import SubmitOptions
from fastworker.client.task import BoundTask, TaskFunction, TaskOptions, TaskRegistry, task
from fastworker.client.version import __version__

if TYPE_CHECKING:
    from fastworker.client import hooks
    from fastworker.client._async import Client
    from fastworker.client._progress import report_progress
    from fastworker.client._sync import SyncClient
    from fastworker.client.secretfile import SecretFiles
    from fastworker.client.workflows import (
        Chain,
        Chord,
        Group,
        Signature,
        SyncWorkflowHandle,
        WorkflowHandle,
        WorkflowInfo,
        chain,
        chord,
        group,
        signature,
    )

#: Public names loaded on first use -> the module that defines them (a submodule: itself).
_LAZY = {
    "Client": "fastworker.client._async",
    "hooks": "fastworker.client.hooks",
    "SyncClient": "fastworker.client._sync",
    "SecretFiles": "fastworker.client.secretfile",
    "report_progress": "fastworker.client._progress",
    **dict.fromkeys(
        (
            "Chain",
            "Chord",
            "Group",
            "Signature",
            "SyncWorkflowHandle",
            "WorkflowHandle",
            "WorkflowInfo",
            "chain",
            "chord",
            "group",
            "signature",
        ),
        "fastworker.client.workflows",
    ),
}


if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise accept any misspelt name

    def __getattr__(name):
        """Import a lazily loaded public name's module once, then keep the name here (PEP 562)."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        value = importlib.import_module(module)
        if module != f"{__name__}.{name}":
            value = getattr(value, name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) - {"TYPE_CHECKING"} | set(_LAZY))


__all__ = [
    "AuthenticationError",
    "BoundTask",
    "CallContextError",
    "CancelResult",
    "Chain",
    "Chord",
    "Client",
    "ClientClosed",
    "ClientError",
    "ControlPlaneUnavailable",
    "DuplicateTaskName",
    "EventBatch",
    "FastworkerError",
    "ForkedProcessError",
    "Group",
    "InvalidOptions",
    "InvalidRequest",
    "NoCurrentTask",
    "PayloadError",
    "Priority",
    "Progress",
    "ProtocolError",
    "QueueFull",
    "Retry",
    "SecretFiles",
    "Signature",
    "SoftTimeLimitExceeded",
    "SubmitOptions",
    "SyncClient",
    "SyncTaskBackend",
    "SyncTaskHandle",
    "SyncWorkflowHandle",
    "TaskBackend",
    "TaskCancelled",
    "TaskContext",
    "TaskDetail",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskFunction",
    "TaskHandle",
    "TaskInfo",
    "TaskInterrupted",
    "TaskLimits",
    "TaskNotFound",
    "TaskOptions",
    "TaskPage",
    "TaskRegistry",
    "TaskState",
    "TaskTimeout",
    "TimeLimitExceeded",
    "UnknownTask",
    "WorkflowHandle",
    "WorkflowInfo",
    "__version__",
    "chain",
    "chord",
    "current_client",
    "current_sync_client",
    "current_task",
    "group",
    "hooks",
    "report_progress",
    "set_default_client",
    "set_default_sync_client",
    "signature",
    "task",
    "use_client",
    "use_sync_client",
]
