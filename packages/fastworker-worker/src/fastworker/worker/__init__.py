"""FastWorker's worker side: loads task modules and executes tasks (also inside the control plane)."""

from fastworker.worker.errors import TaskLoadError
from fastworker.worker.executor import Outcome, failure, prepare, run_async, run_sync
from fastworker.worker.loader import load_task_modules
from fastworker.worker.pool import ProcessPool
from fastworker.worker.runtime import Worker, WorkerSettings, WorkerState
from fastworker.worker.version import __version__

__all__ = [
    "Outcome",
    "ProcessPool",
    "TaskLoadError",
    "Worker",
    "WorkerSettings",
    "WorkerState",
    "__version__",
    "failure",
    "load_task_modules",
    "prepare",
    "run_async",
    "run_sync",
]
