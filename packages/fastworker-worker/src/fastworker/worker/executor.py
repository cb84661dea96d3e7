"""Run one task and turn what it returned or raised into wire types (the hot path: no logging, no copies).

Callers decode the arguments with :func:`prepare`, then call :func:`run_sync` (from a worker
thread) or await :func:`run_async` (on the event loop), and send the :class:`Outcome` on. A caller
that passes a progress sink gets the task's ``report_progress`` calls (it is bound around the run),
and one that passes a :class:`~fastworker.client.context.TaskContext` lets the task read it with
``current_task()`` (and the task's log records carry its fields).
Any ``Exception`` a task raises, and ``SystemExit``, becomes a failed Outcome; a task cannot
stop the process. ``KeyboardInterrupt`` and ``asyncio.CancelledError`` propagate.

Every runtime runs tasks through these functions, so they also call this process's task hooks
(:mod:`fastworker.client.hooks`): ``before_task``, then the task, then ``on_retry`` or
``on_failure``, then ``after_task``, in the run's thread or loop with the context bound. With no
hook registered a run pays one attribute check for them; with some it takes ``_run_*_hooked``.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback as _traceback
import types
from collections.abc import Awaitable, Coroutine, Generator, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from time import time
from types import TracebackType
from typing import Any

from fastworker.client._progress import SINK, ProgressSink
from fastworker.client._tracing import ProcessSpan
from fastworker.client.context import CURRENT, ContextSource, TaskContext, resolve
from fastworker.client.errors import Retry, SoftTimeLimitExceeded, TaskInterrupted, TimeLimitExceeded
from fastworker.client.hooks import REGISTERED as HOOKS
from fastworker.client.hooks import RunOutcome, call_after, call_before
from fastworker.client.models import Progress
from fastworker.client.task import TaskFunction
from fastworker.protocol.errors import PayloadError
from fastworker.protocol.payload import DEFAULT_MAX_PAYLOAD_SIZE, decode_arguments, encode_value
from fastworker.protocol.v1.task_pb2 import Payload, TaskError
from fastworker.worker.policy import NOT_RETRIABLE, options_policy

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


#: Longest error type, message and traceback (characters) a failure keeps. Unbounded, one task
#: raising an exception with a 5 MB message stored that twice (in the traceback too), in the result
#: cache and in every event about it, and listings that carry errors outgrew the frame limit.
MAX_ERROR_TYPE = 200
MAX_ERROR_MESSAGE = 16 * 1024
MAX_ERROR_TRACEBACK = 64 * 1024
#: Most base class names a failure keeps (nearest first): an odd class's long MRO is cut there.
MAX_ERROR_BASE_TYPES = 64


def bound_error(error: TaskError) -> TaskError:
    """Cut an error's type, message and traceback to their bounds, in place; returns it.

    The message keeps its start; the traceback its start and, mostly, its end (where the error
    was raised, and its message). Applied where failures are made and where they arrive from
    other processes (a task's child process, a subworker).
    """
    if len(error.type) > MAX_ERROR_TYPE:
        error.type = error.type[:MAX_ERROR_TYPE]
    if len(error.message) > MAX_ERROR_MESSAGE:
        error.message = _cut(error.message, MAX_ERROR_MESSAGE, head=MAX_ERROR_MESSAGE)
    if len(error.traceback) > MAX_ERROR_TRACEBACK:
        error.traceback = _cut(error.traceback, MAX_ERROR_TRACEBACK, head=MAX_ERROR_TRACEBACK // 8)
    bases = error.base_types
    if len(bases) > MAX_ERROR_BASE_TYPES or any(len(name) > MAX_ERROR_TYPE for name in bases):
        kept = [name[:MAX_ERROR_TYPE] for name in bases[:MAX_ERROR_BASE_TYPES]]
        del bases[:]
        bases.extend(kept)
    return error


def base_type_names(kind: type[BaseException]) -> list[str]:
    """The names of an exception class's bases, nearest first (``object`` left out): what ``retry_on`` also matches."""
    return [base.__name__ for base in kind.__mro__[1:] if base is not object]


def _cut(text: str, limit: int, *, head: int) -> str:
    """``text`` in at most about ``limit`` characters: its first ``head`` and its last ``limit - head``."""
    left_out = len(text) - limit
    marker = f"\n... [{left_out} characters left out] ...\n"
    return text[:head] + marker + (text[len(text) - (limit - head) :] if limit > head else "")


def failure(
    type_: str,
    message: str,
    traceback: str = "",
    *,
    started_at: float | None = None,
    base_types: list[str] | None = None,
) -> Outcome:
    """A failed Outcome that finished now: the one way every failure of the worker is built.

    Args:
        type_: The error type name, as clients read it in ``TaskError.type``.
        message: The human-readable message.
        traceback: A formatted traceback; empty for system errors.
        started_at: When the execution started; None for a failure that never started one (now).
        base_types: For an exception the task raised, its bases' names (:func:`base_type_names`).
    """
    now = time()
    error = bound_error(TaskError(type=type_, message=message, traceback=traceback, base_types=base_types))
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


#: What an async task's run lets through: its cancellation, and the interrupt of a cancelled sync run.
_ESCAPES_AN_ASYNC_TASK = (asyncio.CancelledError, TaskInterrupted)


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
    if HOOKS.running:
        return _run_sync_hooked(tf, args, kwargs, allow_pickle, max_size, progress, context)
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

    Anything else the task raises, ``KeyboardInterrupt`` and other ``BaseException`` s included, is
    its failure: raised out of a task on the event loop, it would end the daemon's loop and process
    (a daemon takes its signals as handlers, so an interrupt in a task is always the task's own).
    """
    if not tf.is_async:
        raise TypeError(f"task {tf.name!r} is not async: run it with run_sync, in a thread")
    if HOOKS.running:
        return await _run_async_hooked(tf, args, kwargs, allow_pickle, max_size, progress, context)
    token = None if progress is None else SINK.set(progress)  # in this coroutine's task's context
    bound = None if context is None else CURRENT.set(context)
    started = time()
    try:
        value = await _awaitable(tf, args, kwargs)
    except _ESCAPES_AN_ASYNC_TASK:
        raise
    except BaseException as exc:  # its own KeyboardInterrupt too: raised on the loop, it would stop the process
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
        return failure(type(exc).__name__, _text(exc), text, started_at=started, base_types=base_type_names(type(exc)))
    # A Retry raised while handling the task's own error stands for that error: the attempt (and,
    # with no retry left, the task) ends with its type and message; the traceback shows both.
    reason = _retry_reason(exc)
    shown = exc if reason is None else reason
    outcome = failure(
        type(shown).__name__, _text(shown), text, started_at=started, base_types=base_type_names(type(shown))
    )
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
    if HOOKS.running:
        return await _run_async_hooked(
            tf, args, kwargs, allow_pickle, DEFAULT_MAX_PAYLOAD_SIZE, progress, context, seconds, kind
        )
    started = time()
    try:
        async with asyncio.timeout(seconds) as limit:
            with _watching(limit) as watch:
                outcome = await run_async(
                    tf, args, kwargs, allow_pickle=allow_pickle, progress=progress, context=context
                )
    except TimeoutError:
        return failure(kind, _limit_message(tf, kind, seconds), started_at=started)
    if limit.expired():  # it caught the cancellation and returned later: the limit still failed it
        return failure(kind, _ignored_limit_message(tf, kind, seconds), started_at=started)
    if watch.crossed:  # it kept the loop past the limit, which could not fire meanwhile
        return failure(kind, _overran_limit_message(tf, kind, seconds), started_at=started)
    return outcome


class _StepWatch:
    """Notes whether one of a coroutine's own steps ran across a deadline: the task itself kept the loop past it.

    A run that merely resumed after its deadline (another task blocked the loop meanwhile) did not
    overrun: only a step that started before the deadline and ended after it counts.
    """

    def __init__(self, limit: asyncio.Timeout) -> None:
        self.limit = limit
        self.crossed = False
        self._clock = asyncio.get_running_loop().time

    def _note(self, started: float) -> None:
        deadline = self.limit.when()
        if deadline is not None and started < deadline <= self._clock():
            self.crossed = True

    @types.coroutine
    def drive(self, coro: Coroutine[Any, Any, Any]) -> Generator[Any, Any, Any]:
        """Await ``coro`` step by step (as ``await`` would), timing each step."""
        clock = self._clock
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            started = clock()
            try:
                yielded = coro.send(to_send) if to_throw is None else coro.throw(to_throw)
            except StopIteration as stop:
                self._note(started)
                return stop.value
            except BaseException:
                self._note(started)
                raise
            self._note(started)
            to_send, to_throw = None, None
            try:
                to_send = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancel (the limit's, or a stop order): into the task
                to_throw = exc


#: The step watch of the time-limited run under way in this context, or None (see ``_StepWatch``).
_STEP_WATCH: ContextVar[_StepWatch | None] = ContextVar("fastworker_step_watch", default=None)


@contextlib.contextmanager
def _watching(limit: asyncio.Timeout) -> Iterator[_StepWatch]:
    """Drive the task coroutines started in this block step by step, against ``limit`` (see ``_StepWatch``)."""
    watch = _StepWatch(limit)
    token = _STEP_WATCH.set(watch)
    try:
        yield watch
    finally:
        _STEP_WATCH.reset(token)


def _awaitable(tf: TaskFunction[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Awaitable[Any]:
    """The task's coroutine, driven by the step watch of a time-limited run when there is one."""
    coro = tf.fn(*args, **kwargs)
    watch = _STEP_WATCH.get()
    return coro if watch is None else watch.drive(coro)


def _limit_message(tf: TaskFunction[Any, Any], kind: str, seconds: float) -> str:
    which = "soft" if kind == "SoftTimeLimitExceeded" else "hard"
    return f"task {tf.name!r} exceeded its {which} time limit of {seconds:g} s"


def _overran_limit_message(tf: TaskFunction[Any, Any], kind: str, seconds: float) -> str:
    return (
        f"{_limit_message(tf, kind, seconds)}; it ran past it without giving the event loop a turn (blocking"
        " code in an async task cannot be stopped: run it in a thread, or make it a sync task), its value dropped"
    )


def _ignored_limit_message(tf: TaskFunction[Any, Any], kind: str, seconds: float) -> str:
    return (
        f"{_limit_message(tf, kind, seconds)}; it caught the cancellation (asyncio.CancelledError) and ran on"
        " until it returned, its value dropped: let CancelledError propagate"
    )


# ---------------------------------------------------------------------------------- hooked runs
# The same runs as above with this process's hooks around them, taken only while one is registered.


def _run_sync_hooked(
    tf: TaskFunction[Any, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    allow_pickle: bool,
    max_size: int,
    progress: ProgressSink | None,
    context: ContextSource | None,
) -> Outcome:
    """:func:`run_sync` with hooks: before, the task, on_retry/on_failure, after; an interrupt gets after only."""
    ctx = _hook_context(tf, context)
    token = None if progress is None else SINK.set(progress)
    bound = None if context is None else CURRENT.set(ctx)  # made once: the hooks and the task share it
    try:
        call_before(ctx)
        started = time()
        try:
            value = tf.fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:
            outcome = _raised(exc, started)
            _call_after(tf, ctx, outcome, None, exc)
            return outcome
        except BaseException as exc:  # a cancel or an interrupt from outside: after_task, then on its way
            call_after(ctx, RunOutcome(False, None, exc, max(0.0, time() - started)), None)
            raise
        outcome = _returned(value, started, allow_pickle, max_size)
        _call_after(tf, ctx, outcome, value, None)
        return outcome
    finally:
        if token is not None:
            SINK.reset(token)
        if bound is not None:
            CURRENT.reset(bound)


async def _run_async_hooked(
    tf: TaskFunction[Any, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    allow_pickle: bool,
    max_size: int,
    progress: ProgressSink | None,
    context: ContextSource | None,
    seconds: float = 0.0,
    kind: str = "",
) -> Outcome:
    """:func:`run_async` (with a time limit: :func:`run_async_limited`) with hooks, outside the limit's scope.

    The hooks run before the limit starts and after it ended, so they neither count against it nor
    get cancelled by it; a run stopped at its limit ends with the limit's error, like any failure.
    """
    ctx = _hook_context(tf, context)
    token = None if progress is None else SINK.set(progress)
    bound = None if context is None else CURRENT.set(ctx)
    try:
        call_before(ctx)
        started = time()
        raised: BaseException | None
        try:
            if seconds:
                try:
                    async with asyncio.timeout(seconds) as deadline:
                        with _watching(deadline) as watch:
                            outcome, value, raised = await _await_task(tf, args, kwargs, allow_pickle, max_size)
                    expired = deadline.expired()  # caught by the task, which returned later
                    message = _ignored_limit_message(tf, kind, seconds)
                    if not expired and watch.crossed:
                        expired, message = True, _overran_limit_message(tf, kind, seconds)
                except TimeoutError:  # the task's own errors were caught inside: this is the limit
                    expired, message = True, _limit_message(tf, kind, seconds)
                if expired:
                    outcome, value = failure(kind, message, started_at=started), None
                    limit = SoftTimeLimitExceeded if kind == "SoftTimeLimitExceeded" else TimeLimitExceeded
                    raised = limit(message)
            else:
                outcome, value, raised = await _await_task(tf, args, kwargs, allow_pickle, max_size)
        except BaseException as exc:  # cancelled (or interrupted): after_task, then on its way
            call_after(ctx, RunOutcome(False, None, exc, max(0.0, time() - started)), None)
            raise
        _call_after(tf, ctx, outcome, value, raised)
        return outcome
    finally:
        if token is not None:
            SINK.reset(token)
        if bound is not None:
            CURRENT.reset(bound)


async def _await_task(
    tf: TaskFunction[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], allow_pickle: bool, max_size: int
) -> tuple[Outcome, Any, BaseException | None]:
    """Await the task: (its outcome, what it returned, what it raised); only interrupts escape."""
    started = time()
    try:
        value = await _awaitable(tf, args, kwargs)
    except _ESCAPES_AN_ASYNC_TASK:
        raise
    except BaseException as exc:  # as in run_async
        return _raised(exc, started), None, exc
    return _returned(value, started, allow_pickle, max_size), value, None


def _hook_context(tf: TaskFunction[Any, Any], context: ContextSource | None) -> TaskContext:
    """The context the hooks get: the run's, or (a caller that gave none) one with no id, worker or retries."""
    if context is None:
        return TaskContext("", tf.name, 1, 0, "")
    return resolve(context)


def _call_after(
    tf: TaskFunction[Any, Any], ctx: TaskContext, outcome: Outcome, value: Any, raised: BaseException | None
) -> None:
    """Tell the hooks how a run ended: on_retry or on_failure for a failure, then after_task."""
    runtime = max(0.0, outcome.finished_at - outcome.started_at)
    if outcome.succeeded:
        call_after(ctx, RunOutcome(True, value, None, runtime), None)
        return
    error = _reported_error(outcome, raised)
    call_after(ctx, RunOutcome(False, None, error, runtime), will_retry(tf, ctx, outcome))


def _reported_error(outcome: Outcome, raised: BaseException | None) -> BaseException:
    """The exception a failed run's info reports: the raised one (a Retry's reason), else one for the outcome."""
    if raised is None:  # a result that did not encode: there is only the outcome's text
        return PayloadError(outcome.error.message if outcome.error is not None else "")
    if isinstance(raised, Retry):
        return _retry_reason(raised) or raised
    return raised


def will_retry(tf: TaskFunction[Any, Any], ctx: TaskContext, outcome: Outcome) -> bool:
    """Whether a failed run is run again, as the control plane (and the eager client) decides it, here.

    The rule of ``TaskPolicy.allows_retry``: ``ctx.retries_left`` carries the resolved retry count
    (a submission's own, else the definition's); ``retry_on`` is this process's definition of the
    task, the one the control plane applies unless it resolved the name from another process's
    differing definition (docs/hooks.md).
    """
    error = outcome.error
    error_type = error.type if error is not None else ""
    if ctx.retries_left <= 0 or error_type in NOT_RETRIABLE:
        return False
    if outcome.retry_delay is not None:  # Retry: bypasses retry_on, not the count
        return True
    return options_policy(tf.options).retry_on_matches(error_type, error.base_types if error is not None else ())


def tell_span(
    span: ProcessSpan, outcome: Outcome, *, task: TaskFunction[Any, Any] | None = None, ctx: ContextSource | None = None
) -> None:
    """Tell a run's tracing span how the run ended (a no-op when tracing is off).

    A failed run that will run again (:func:`will_retry`, given the task and its context) ends
    ``retry``; one that raised ``Retry`` with no retry left ends ``failure``, as the task does.
    Without the task and its context, a ``Retry`` ends ``retry`` and any other failure ``failure``.
    """
    if outcome.succeeded:
        span.ended("success")
        return
    error = outcome.error
    error_type = error.type if error is not None else ""
    if error_type == "TaskCancelled":
        kind = "cancelled"
    elif (
        will_retry(task, resolve(ctx), outcome)
        if task is not None and ctx is not None
        else outcome.retry_delay is not None
    ):
        kind = "retry"
    else:
        kind = "failure"
    span.ended(kind, error_type, error.message if error is not None else "")
