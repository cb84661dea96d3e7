"""The exceptions the worker side raises, under the protocol's FastworkerError root.

FastworkerError                 (fastworker.protocol)
└── TaskLoadError               a task module could not be imported, clashed, or defines no tasks
"""

from __future__ import annotations

from fastworker.protocol.errors import FastworkerError

__all__ = ["FastworkerError", "TaskLoadError"]


class TaskLoadError(FastworkerError):
    """A task module could not be loaded; the original exception, if any, is the ``__cause__``.

    Args:
        message: What went wrong, naming the module.
        module: The dotted name of the module that failed.
    """

    def __init__(self, message: str, module: str) -> None:
        super().__init__(message)
        self.module = module
