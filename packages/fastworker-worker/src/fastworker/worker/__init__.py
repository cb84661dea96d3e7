"""FastWorker's worker side: loads task modules and executes tasks (also inside the control plane).

The public names load on first use (PEP 562), so that ``import fastworker.worker.cli`` starts
the daemon without importing the runtime first: its first lines must run early enough to keep a
container's SIGTERM (``fastworker.worker._pid1``).
"""

from typing import TYPE_CHECKING

from fastworker.worker.version import __version__

if TYPE_CHECKING:
    from fastworker.worker.errors import TaskLoadError
    from fastworker.worker.executor import Outcome, failure, prepare, run_async, run_sync
    from fastworker.worker.loader import load_task_modules
    from fastworker.worker.pool import ProcessPool
    from fastworker.worker.runtime import Worker, WorkerSettings, WorkerState

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

_LAZY = {
    "TaskLoadError": "fastworker.worker.errors",
    **dict.fromkeys(("Outcome", "failure", "prepare", "run_async", "run_sync"), "fastworker.worker.executor"),
    "load_task_modules": "fastworker.worker.loader",
    "ProcessPool": "fastworker.worker.pool",
    **dict.fromkeys(("Worker", "WorkerSettings", "WorkerState"), "fastworker.worker.runtime"),
}


if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise accept any misspelt name

    def __getattr__(name):
        """Import a lazily loaded public name's module once, then keep the name here (PEP 562)."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) - {"TYPE_CHECKING"} | set(_LAZY))
