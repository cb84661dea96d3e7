"""FastWorker's operator frontends: the web dashboard and fastworker-top."""

from fastworker.dashboard.version import __version__

__all__ = ["__version__"]
