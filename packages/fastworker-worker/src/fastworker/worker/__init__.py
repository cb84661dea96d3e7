"""FastWorker's worker side: task loading and execution, and the subworker daemon."""

from fastworker.worker.version import __version__

__all__ = ["__version__"]
