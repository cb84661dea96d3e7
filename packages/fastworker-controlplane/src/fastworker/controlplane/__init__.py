"""FastWorker's control plane: the coordinator daemon that queues, dispatches and remembers tasks."""

from fastworker.controlplane.version import __version__

__all__ = ["__version__"]
