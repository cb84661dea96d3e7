"""The exceptions a client raises, under the protocol's FastworkerError root.

FastworkerError                 (fastworker.protocol)
├── ProtocolError               (fastworker.protocol) a frame the client cannot accept
├── PayloadError                (fastworker.protocol) arguments/result the codec cannot encode
├── AuthenticationError         (fastworker.protocol) missing or wrong secret
├── DuplicateTaskName           two different functions registered under one task name
├── NoCurrentTask               a call that only works inside a running task (report_progress, current_task) made outside one
└── ClientError                 a request the control plane refused, or could not serve
├── CallContextError        a typed call made where it cannot work (nothing was submitted)
├── ControlPlaneUnavailable no control plane answered in time
├── UnknownTask             no task is registered under that name
├── QueueFull               the control plane's queue is at its bound
├── InvalidRequest          the control plane refused a request as invalid (also a ValueError)
├── TaskNotFound            the task id is unknown (never seen, or evicted)
├── TaskTimeout             the wait bound expired before the task finished
└── TaskFailed              the task ended in FAILURE or CANCELLED
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fastworker.protocol.errors import AuthenticationError, FastworkerError, PayloadError, ProtocolError
from fastworker.protocol.ids import shown, shown_id

if TYPE_CHECKING:
    from fastworker.client.models import TaskInfo

__all__ = [
    "AuthenticationError",
    "CallContextError",
    "ClientClosed",
    "ClientError",
    "ControlPlaneUnavailable",
    "DuplicateTaskName",
    "FastworkerError",
    "InvalidRequest",
    "NoCurrentTask",
    "PayloadError",
    "ProtocolError",
    "QueueFull",
    "Retry",
    "SoftTimeLimitExceeded",
    "TaskFailed",
    "TaskNotFound",
    "TaskTimeout",
    "TimeLimitExceeded",
    "UnknownTask",
]


class Retry(FastworkerError):
    """Raised by a task to ask for another attempt (counted against its ``retries``), after ``delay`` seconds.

    Control flow, not a failure: the task goes to RETRYING and runs again. Without a ``delay``
    (or with 0) it waits the task's ``retry_backoff``, doubled per retry, as after a failure.

    Raised while handling an exception (``except ConnectionError: raise Retry()``, or
    ``raise Retry() from exc``), the attempt's error is that exception's type and message (the
    traceback shows both); so when no retries are left the task ends in FAILURE with the task's
    own error. A bare ``Retry`` (or ``raise Retry() from None``) ends it with error type ``Retry``.
    """

    def __init__(self, delay: float | None = None, message: str = "") -> None:
        if delay is not None and not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"Retry delay must be a finite number of seconds, 0 or more, got {delay!r}")
        super().__init__(message or ("retry requested" + (f" in {delay:g} s" if delay is not None else "")))
        self.delay = delay


class SoftTimeLimitExceeded(FastworkerError):
    """Raised inside a task when its ``soft_timeout`` passes: clean up and return, or let it propagate.

    In a sync task on a subworker it arrives as an exception at the running line (SIGALRM in the
    task's child process); in an async task its coroutine is cancelled. Either way the task ends in
    FAILURE with error type ``SoftTimeLimitExceeded`` unless it handles the exception and returns.
    """


class TaskInterrupted(BaseException):
    """Raised inside a running sync task's thread to stop it: its run was cancelled, or (``--pool threads``) passed its hard limit.

    A BaseException, so that ``except Exception`` in the task lets it by; ``finally`` blocks still
    run. The run has ended already (CANCELLED, or FAILURE with ``TimeLimitExceeded``): what the task
    does or returns after catching it is dropped. Sync tasks in a subworker's child processes are
    stopped by killing the child instead, and async tasks by cancelling their coroutine.
    """


class TaskCancelled(TaskInterrupted):
    """The :class:`TaskInterrupted` of a cancel (client, CLI, dashboard): on the control plane's own slots and ``--pool threads``."""


class TimeLimitExceeded(FastworkerError):
    """The error type of a task stopped by its hard ``timeout`` (the task cannot catch it)."""


class NoCurrentTask(FastworkerError, RuntimeError):
    """Called outside a running task something that only works inside one (``report_progress``, ``current_task``).

    Task code runs inside a task when a worker, the control plane's own slots or the eager client
    execute it; a plain call of the function (a unit test calling it directly) does not.
    """


class ClientError(FastworkerError):
    """A request the control plane refused or could not serve, or one the client refused before sending it."""


class CallContextError(ClientError, RuntimeError):
    """A typed task call made where it cannot work; nothing was submitted, and the message names the call that works.

    ``add.delay(...)``/``add.submit(...)`` return a coroutine for ``await``: called in a thread with
    no running event loop (a Django or Flask view, a script) they raise this at once instead of
    returning a coroutine nobody awaits. ``add.delay_sync(...)``/``add.submit_sync(...)`` block:
    called on a thread that runs an event loop they raise this instead of stalling the loop.
    Also a ``RuntimeError``, as asyncio's own "no running event loop" is.
    """


class ForkedProcessError(ClientError, RuntimeError):
    """A client used in a process forked from one that had already used a client; nothing was sent.

    nng, the transport, cannot run at all in such a child (it would abort the process), and the
    parent's clients have no thread there. Make the first call after the fork (gunicorn without
    ``--preload``, no submission at import), or start children with the ``spawn`` or
    ``forkserver`` method. Also a ``RuntimeError``.
    """


class ControlPlaneUnavailable(ClientError):
    """No control plane answered within the allowed time.

    ``may_have_arrived``: an attempt reached a control plane that did not answer (a stall, a crash):
    what it asked may have been done. For a submission, ``task_id`` then names the task, which may
    have been accepted: look it up, or submit it again under that id (an id is queued at most once).
    For ``delay_many``, ``task_ids`` lists the id of every call not refused (None: refused by
    the control plane): ``delay_many(calls, task_ids=error.task_ids)`` queues each at most once.
    For a workflow, ``workflow_id`` names it: look it up with ``workflow(id)`` before sending it again.
    """

    #: Whether an unanswered attempt reached a control plane.
    may_have_arrived: bool = False
    #: The submitted task's id when the submission may have been accepted, else None.
    task_id: str | None = None
    #: The submitted workflow's id when ``delay_workflow`` may have been accepted, else None.
    workflow_id: str | None = None


class ClientClosed(ControlPlaneUnavailable, RuntimeError):
    """A call on a ``Client`` or ``SyncClient`` that was closed; nothing was sent. Also a ``RuntimeError``."""


class UnknownTask(ClientError):
    """No task is registered under the requested name."""

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"unknown task {shown(name)}")
        self.name = name


class QueueFull(ClientError):
    """The control plane's queue is at --max-queue; try again later."""


class InvalidRequest(ClientError, ValueError):
    """The control plane refused a request as invalid; the message names what (an unknown ``depends_on`` id, ...)."""


class InvalidOptions(ClientError, ValueError):
    """An option refused before anything is sent; the message names it. Also a ``ValueError``.

    A bad priority, queue, countdown, eta, expires, task id, unique key, rate limit or concurrency.
    """


class TaskNotFound(ClientError):
    """The control plane does not know the task id (never seen, or evicted from the result cache).

    Also raised for an unknown workflow id (``what="workflow"``): the id is in ``task_id`` then too.
    """

    def __init__(self, task_id: str, what: str = "task") -> None:
        super().__init__(f"{what} {shown_id(task_id)} is not known to the control plane")
        self.task_id = task_id
        self.what = what


class TaskTimeout(ClientError):
    """The wait bound expired before the task reached a final state (the task itself goes on)."""

    def __init__(self, task_id: str, timeout: float) -> None:
        timeout = max(0.0, timeout)  # a negative bound is a deadline already past: 0
        super().__init__(f"task {task_id} did not finish within {timeout:g} s")
        self.task_id = task_id
        self.timeout = timeout


class TaskFailed(ClientError):
    """The task ended in FAILURE or CANCELLED; ``info`` holds its final state and error."""

    def __init__(self, info: TaskInfo) -> None:
        error = info.error
        detail = f"{error.type}: {error.message}" if error else info.state.value
        super().__init__(f"task {info.id} ({info.name}) ended in {info.state.value}: {detail}")
        self.info = info

    @property
    def remote_traceback(self) -> str:
        """The traceback formatted where the task raised, or an empty string."""
        return self.info.error.traceback if self.info.error else ""


class DuplicateTaskName(FastworkerError):
    """Two different functions were registered under one task name.

    Args:
        name: The task name both functions claim.
        existing: The qualified name (``module.qualname``) of the function registered first.
        new: The qualified name of the function whose registration was refused.
    """

    def __init__(self, name: str, existing: str, new: str) -> None:
        super().__init__(
            f"task name {name!r} is already registered by {existing}; cannot also register {new} "
            f"(give one of them another name with @task(name=...))"
        )
        self.name = name
        self.existing = existing
        self.new = new
