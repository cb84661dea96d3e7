"""Run one task and turn what it returned or raised into wire types (the hot path: no logging, no copies).

Callers decode the arguments with :func:`prepare`, then call :func:`run_sync` (from a worker
thread) or await :func:`run_async` (on the event loop), and send the :class:`Outcome` on. A caller
that passes a progress sink gets the task's ``report_progress`` calls (it is bound around the run),
and one that passes a :class:`~fastworker.client.context.TaskContext` lets the task read it with
``current_task()`` (and the task's log records carry its fields).
Any ``Exception`` a task raises, and ``SystemExit``, becomes a failed Outcome; a task cannot
stop the process. ``KeyboardInterrupt`` and ``asyncio.CancelledError`` propagate.
"""

from __future__ import annotations

import asyncio
import traceback as _traceback
from collections.abc import Mapping
from dataclasses import dataclass
from time import time
from types import TracebackType
from typing import Any

from fastworker.client._progress import SINK, ProgressSink
from fastworker.client._tracing import ProcessSpan
from fastworker.client.context import CURRENT, ContextSource
from fastworker.client.errors import Retry
from fastworker.client.models import Progress
from fastworker.client.task import TaskFunction
from fastworker.protocol.errors import PayloadError
from fastworker.protocol.payload import DEFAULT_MAX_PAYLOAD_SIZE, decode_arguments, encode_value
from fastworker.protocol.v1.task_pb2 import Payload, TaskError

__all__ = ["Outcome", "failure", "prepare", "run_async", "run_async_limited", "run_sync"]


@dataclass(slots=True)
class Outcome:
    """How one execution ended: a result payload on success, a TaskError on failure.

    Attributes:
        succeeded: True when the task returned and its result encoded.
        result: The encoded return value; None on failure.
        error: What went wrong; None on success.
        started_at: Wall-clock time (``time.time()``) when execution started.
        finished_at: Wall-clock time when the outcome was complete.
        retry_delay: Set when the task raised ``Retry``: the delay it asked for (0 for none given:
            the policy's backoff then).
        progress: The last progress the run reported, once its runtime took it (None: none).
    """

    succeeded: bool
    result: Payload | None
    error: TaskError | None
    started_at: float
    finished_at: float
    retry_delay: float | None = None
    progress: Progress | None = None


def failure(type_: str, message: str, traceback: str = "", *, started_at: float | None = None) -> Outcome:
    """A failed Outcome that finished now: the one way every failure of the worker is built.

    Args:
        type_: The error type name, as clients read it in ``TaskError.type``.
        message: The human-readable message.
        traceback: A formatted traceback; empty for system errors.
        started_at: When the execution started; None for a failure that never started one (now).
    """
    now = time()
    error = TaskError(type=type_, message=message, traceback=traceback)
    return Outcome(False, None, error, now if started_at is None else started_at, now)


def prepare(
    tf: TaskFunction[Any, Any],
    arguments: Payload,
    *,
    allow_pickle: bool = False,
    max_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
) -> tuple[tuple[Any, ...], dict[str, Any]] | Outcome:
    """Decode a task's arguments, or say why they cannot be.

    Args:
        tf: The task the arguments are for.
        arguments: The ``[args, kwargs]`` payload from the TaskSpec.
        allow_pickle: Accept pickle payloads (an explicit opt-in).
        max_size: Largest accepted payload, in bytes.

    Returns:
        ``(args, kwargs)``, or a failed Outcome of type ``PayloadError`` when the payload is
        corrupt, too large, not an ``[args, kwargs]`` pair, or pickled while pickle is refused.
    """
    try:
        return decode_arguments(arguments, allow_pickle=allow_pickle, max_size=max_size)
    except PayloadError as exc:
        return failure("PayloadError", f"cannot decode the arguments of task {tf.name!r}: {exc}")


def run_sync(
    tf: TaskFunction[Any, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    allow_pickle: bool = False,
    max_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
    progress: ProgressSink | None = None,
    context: ContextSource | None = None,
) -> Outcome:
    """Call a ``def`` task in this thread and encode what it returned or raised.

    Args:
        tf: A task whose ``is_async`` is False.
        args: Positional arguments.
        kwargs: Keyword arguments.
        allow_pickle: Encode the result with pickle (an explicit opt-in).
        max_size: Largest result payload, in bytes; a larger one is a ``PayloadError`` failure.
        progress: Receives what the task reports with ``report_progress`` (None: it may not report).
        context: What ``current_task()`` returns in the task (None: it raises ``NoCurrentTask``).

    Raises:
        TypeError: The task is an ``async def`` (use :func:`run_async`).
        KeyboardInterrupt: Propagated from the task.
    """
    if tf.is_async:
        raise TypeError(f"task {tf.name!r} is async: run it with run_async")
    token = None if progress is None else SINK.set(progress)
    bound = None if context is None else CURRENT.set(context)
    started = time()
    try:
        value = tf.fn(*args, **kwargs)
    except (Exception, SystemExit) as exc:
        return _raised(exc, started)
    finally:
        if token is not None:
            SINK.reset(token)
        if bound is not None:
            CURRENT.reset(bound)
    return _returned(value, started, allow_pickle, max_size)


async def run_async(
    tf: TaskFunction[Any, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    allow_pickle: bool = False,
    max_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
    progress: ProgressSink | None = None,
    context: ContextSource | None = None,
) -> Outcome:
    """Await an ``async def`` task on the running loop and encode what it returned or raised.

    Args:
        tf: A task whose ``is_async`` is True.
        args: Positional arguments.
        kwargs: Keyword arguments.
        allow_pickle: Encode the result with pickle (an explicit opt-in).
        max_size: Largest result payload, in bytes; a larger one is a ``PayloadError`` failure.
        progress: Receives what the task reports with ``report_progress`` (None: it may not report).
        context: What ``current_task()`` returns in the task (None: it raises ``NoCurrentTask``).

    Raises:
        TypeError: The task is a plain ``def`` (use :func:`run_sync`, in a thread).
        asyncio.CancelledError: The awaiting task was cancelled; never turned into an Outcome.
        KeyboardInterrupt: Propagated from the task.
    """
    if not tf.is_async:
        raise TypeError(f"task {tf.name!r} is not async: run it with run_sync, in a thread")
    token = None if progress is None else SINK.set(progress)  # in this coroutine's task's context
    bound = None if context is None else CURRENT.set(context)
    started = time()
    try:
        value = await tf.fn(*args, **kwargs)
    except (Exception, SystemExit) as exc:
        return _raised(exc, started)
    finally:
        if token is not None:
            SINK.reset(token)
        if bound is not None:
            CURRENT.reset(bound)
    return _returned(value, started, allow_pickle, max_size)


def _returned(value: Any, started: float, allow_pickle: bool, max_size: int) -> Outcome:
    try:
        payload = encode_value(value, allow_pickle=allow_pickle, max_size=max_size)
    except PayloadError as exc:
        return failure("PayloadError", _text(exc), started_at=started)
    except Exception as exc:  # a value whose own conversion code raised (a Mapping's __iter__, ...)
        message = f"cannot encode {type(value).__qualname__}: {type(exc).__name__}: {_text(exc)}"
        return failure("PayloadError", message, started_at=started)
    return Outcome(True, payload, None, started, time())


def _raised(exc: BaseException, started: float) -> Outcome:
    # The first traceback entry is run_sync/run_async's own frame: leave it out, so that the
    # traceback starts in the task (and is just the error line for a call with wrong arguments).
    tb: TracebackType | None = exc.__traceback__
    if tb is not None:
        tb = tb.tb_next
    text = "".join(_traceback.format_exception(type(exc), exc, tb))
    if not isinstance(exc, Retry):
        return failure(type(exc).__name__, _text(exc), text, started_at=started)
    # A Retry raised while handling the task's own error stands for that error: the attempt (and,
    # with no retry left, the task) ends with its type and message; the traceback shows both.
    reason = _retry_reason(exc)
    shown = exc if reason is None else reason
    outcome = failure(type(shown).__name__, _text(shown), text, started_at=started)
    outcome.retry_delay = exc.delay or 0.0
    return outcome


def _retry_reason(exc: Retry) -> BaseException | None:
    """The error a ``Retry`` was raised for: its explicit cause, else the exception being handled; None for none."""
    reason = exc.__cause__
    if reason is None and not exc.__suppress_context__:
        reason = exc.__context__
    if reason is None or isinstance(reason, Retry):
        return None
    return reason


def _text(exc: BaseException) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` raises."""
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__} object>"


async def run_async_limited(
    tf: TaskFunction[Any, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    hard: float = 0.0,
    soft: float = 0.0,
    allow_pickle: bool = False,
    progress: ProgressSink | None = None,
    context: ContextSource | None = None,
) -> Outcome:
    """Like run_async, with time limits (0: none): the coroutine is cancelled when one passes.

    The task sees the cancellation at its current ``await`` and may clean up; the outcome names the
    limit that fired (``SoftTimeLimitExceeded`` or ``TimeLimitExceeded``).
    """
    limits = [
        (seconds, kind) for seconds, kind in ((soft, "SoftTimeLimitExceeded"), (hard, "TimeLimitExceeded")) if seconds
    ]
    if not limits:
        return await run_async(tf, args, kwargs, allow_pickle=allow_pickle, progress=progress, context=context)
    seconds, kind = min(limits)
    started = time()
    try:
        async with asyncio.timeout(seconds):
            return await run_async(tf, args, kwargs, allow_pickle=allow_pickle, progress=progress, context=context)
    except TimeoutError:
        which = "soft" if kind == "SoftTimeLimitExceeded" else "hard"
        return failure(kind, f"task {tf.name!r} exceeded its {which} time limit of {seconds:g} s", started_at=started)


def tell_span(span: ProcessSpan, outcome: Outcome, cancelled: bool = False) -> None:
    """Tell a run's tracing span how the run ended (a no-op when tracing is off)."""
    if outcome.succeeded:
        span.ended("success")
        return
    error = outcome.error
    error_type = error.type if error is not None else ""
    if cancelled or error_type == "TaskCancelled":
        kind = "cancelled"
    elif outcome.retry_delay is not None:
        kind = "retry"
    else:
        kind = "failure"
    span.ended(kind, error_type, error.message if error is not None else "")
