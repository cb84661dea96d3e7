"""``report_progress``, and the context variable through which it reaches whatever runs the task.

The runtime that executes a task binds a *sink* (:data:`SINK`): around each run of an async task
(a contextvar set and reset is all a run that never reports pays), and once per thread where one
thread runs task after task (a pool child, a control-plane slot: that sink forwards to the run
under way, and raises :class:`NoCurrentTask` between runs). ``report_progress`` checks its
arguments and hands the sink a :class:`~fastworker.client.models.Progress`. Sinks keep only the
latest value and pass it on at most a few times a second (``fastworker.worker.progress``), so a
task may call it as often as it likes.

A contextvar follows ``async`` tasks and the coroutines they await (and tasks they create), and
stays with the thread of a sync task; a thread the task starts itself does not inherit it (run the
thread's code in ``contextvars.copy_context()`` to report from there, while the task runs).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import SupportsIndex

from fastworker.client.errors import NoCurrentTask
from fastworker.client.models import Progress

__all__ = [
    "MAX_COUNT",
    "MAX_MESSAGE_LENGTH",
    "SINK",
    "ProgressSink",
    "bind",
    "no_current_task",
    "report_progress",
    "unbind",
]

#: Receives a running task's progress (from the task's own thread or coroutine).
ProgressSink = Callable[[Progress], None]

#: Longest progress message kept; a longer one is cut to this many characters (ending in "…").
MAX_MESSAGE_LENGTH = 200
#: Largest ``done`` or ``total`` (the wire carries unsigned 64-bit counts; kept signed-safe).
MAX_COUNT = 2**63 - 1

#: The running task's sink in this context; runtimes on a hot path set and reset it directly.
SINK: ContextVar[ProgressSink | None] = ContextVar("fastworker_progress_sink", default=None)


def bind(sink: ProgressSink) -> Token[ProgressSink | None]:
    """Send the progress reported in this context to ``sink`` (until :func:`unbind` with the token)."""
    return SINK.set(sink)


def unbind(token: Token[ProgressSink | None]) -> None:
    """Undo a :func:`bind` (in the context that made it)."""
    SINK.reset(token)


def _count(name: str, value: object) -> int:
    if type(value) is int:
        number = value
    elif isinstance(value, SupportsIndex) and not isinstance(value, bool):  # numpy ints and the like
        number = operator.index(value)
    else:
        raise TypeError(f"report_progress: {name} must be an int, not {type(value).__qualname__}")
    if not 0 <= number <= MAX_COUNT:
        raise ValueError(f"report_progress: {name} must be 0 or more (and below 2**63), got {number}")
    return number


def report_progress(done: int, total: int | None = None, message: str = "") -> None:
    """Tell the control plane how far the running task got: ``done`` of ``total`` units, doing ``message``.

    Works in sync and async tasks, on the control plane's own slots and on subworkers. Call it as
    often as you like: only the latest value is kept, and it goes out at most a few times a second
    per task (the last one always arrives, before the task's outcome). Clients read it as
    ``TaskInfo.progress`` (``Progress(done, total, message)``); a finished task keeps its last one,
    a retry starts without any.

    Args:
        done: Units of work done so far (0 or more).
        total: Units of work in all (at least ``done``), or None when unknown.
        message: What the task is doing now; cut to 200 characters.

    Raises:
        TypeError: ``done`` or ``total`` is not an int, or ``message`` not a str.
        ValueError: a count is negative, or ``done`` is above ``total``.
        NoCurrentTask: called outside a running task (e.g. by calling the task function directly).
    """
    done = _count("done", done)
    if total is not None:
        total = _count("total", total)
        if done > total:
            raise ValueError(f"report_progress: done ({done}) cannot be above total ({total})")
    if not isinstance(message, str):
        raise TypeError(f"report_progress: message must be a str, not {type(message).__qualname__}")
    if len(message) > MAX_MESSAGE_LENGTH:
        message = message[: MAX_MESSAGE_LENGTH - 1] + "…"
    sink = SINK.get()
    if sink is None:
        raise no_current_task()
    sink(Progress(done, total, message, time.time()))


def no_current_task() -> NoCurrentTask:
    """The error of a report made outside a running task (also raised by sinks bound between runs)."""
    return NoCurrentTask(
        "report_progress() was called outside a running task: it only works in task code run by a "
        "worker, the control plane or the eager client"
    )
