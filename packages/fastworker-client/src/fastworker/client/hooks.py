"""Task hooks: code of yours that runs around every task run and every submission (Celery's signals, typed).

Register a plain function with a decorator; it runs in this process, for every task this process
runs or submits, in registration order::

    from fastworker.client import hooks

    @hooks.before_task
    def open_session(ctx: TaskContext) -> None: ...

    @hooks.after_task
    def close_session(ctx: TaskContext, outcome: hooks.RunOutcome) -> None: ...

Executing side (called by :mod:`fastworker.worker.executor`, in the thread or event loop where the
task runs, with ``current_task()`` bound): :func:`before_task`, :func:`after_task`,
:func:`on_failure`, :func:`on_retry`. Client side (called where a client builds a submission):
:func:`on_submit`. :func:`remove` takes a hook out again.

A hook that raises is logged on the ``fastworker.hooks`` logger (ERROR, with its traceback) and
changes nothing else: the task runs and ends as it would have, the submission is sent, and the
later hooks run. Hooks are sync functions only (an ``async def`` is refused when registered):
they run in sync tasks' threads and child processes, where no event loop runs, and a hook awaited
inside an async task would run under the task's time limit and cancellation, so it could delay or
break the task it only watches. A hook that needs to do async work in an async task can hand it to
the loop (``asyncio.get_running_loop().create_task(...)``).

Docs: docs/hooks.md.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from fastworker.client.context import TaskContext

if TYPE_CHECKING:
    from fastworker.client.options import SubmitOptions

__all__ = [
    "LOGGER_NAME",
    "RunOutcome",
    "Submission",
    "after_task",
    "before_task",
    "on_failure",
    "on_retry",
    "on_submit",
    "remove",
]

#: The logger a failing hook is reported on.
LOGGER_NAME = "fastworker.hooks"

logger = logging.getLogger(LOGGER_NAME)


class RunOutcome(NamedTuple):
    """How one run of a task ended, as ``after_task`` hooks see it (immutable).

    Named tuples, like :class:`TaskContext`: one is made per hooked run, at a third of a frozen
    dataclass's cost, and the module defines them without dataclass machinery at import.

    Attributes:
        succeeded: The task returned and its value was encoded as its result.
        value: What the task returned (None unless it succeeded).
        error: What the run ended with (None if it succeeded): the task's exception (for a
            ``Retry`` raised while handling an error, that error, as the task's info reports it),
            ``TimeLimitExceeded``/``SoftTimeLimitExceeded`` for an async task stopped at its limit,
            a ``PayloadError`` for a result that could not be encoded, or the interrupt that
            stopped the run from outside (a cancel, a sync task's hard time limit in a thread).
        runtime: Seconds the task ran (wall clock, hooks not included).
    """

    succeeded: bool
    value: Any
    error: BaseException | None
    runtime: float


class Submission(NamedTuple):
    """One task a client is about to send, as ``on_submit`` hooks see it (read-only: the spec is already built).

    Attributes:
        name: The task name.
        task_id: The id it is submitted under.
        args: The positional arguments, as given.
        kwargs: The keyword arguments, as given.
        options: The submission's options (priority, queue, countdown, eta, expires, ...); a
            workflow step's or a batch's own.
    """

    name: str
    task_id: str
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    options: SubmitOptions


# Hooks return None: so a type checker refuses an ``async def`` hook too (it returns a coroutine).
BeforeHook = Callable[[TaskContext], None]
AfterHook = Callable[[TaskContext, RunOutcome], None]
ErrorHook = Callable[[TaskContext, BaseException], None]
SubmitHook = Callable[[Submission], None]

B = TypeVar("B", bound=BeforeHook)
A = TypeVar("A", bound=AfterHook)
E = TypeVar("E", bound=ErrorHook)
S = TypeVar("S", bound=SubmitHook)


class Registered:
    """The hooks of this process, one tuple per kind (replaced, never mutated: a run reads them without a lock).

    ``running`` is true while any executing-side hook is registered: with none, the executor
    checks that one attribute per run and takes its unhooked path.
    """

    __slots__ = ("after", "before", "failure", "retry", "running", "submit")

    def __init__(self) -> None:
        self.before: tuple[BeforeHook, ...] = ()
        self.after: tuple[AfterHook, ...] = ()
        self.failure: tuple[ErrorHook, ...] = ()
        self.retry: tuple[ErrorHook, ...] = ()
        self.submit: tuple[SubmitHook, ...] = ()
        self.running = False


#: This process's hooks (read by the executor and the clients; change them with the functions below).
REGISTERED = Registered()
_KINDS = ("before", "after", "failure", "retry", "submit")
_lock = threading.Lock()


def _add(kind: str, fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"a hook must be callable, not {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        raise TypeError(
            f"hook {qualified_name(fn)} is async: hooks are plain functions, called in the thread or loop that "
            "runs the task (schedule async work from it with asyncio.get_running_loop().create_task(...))"
        )
    with _lock:
        current: tuple[Any, ...] = getattr(REGISTERED, kind)
        if fn not in current:  # registering the same function again (a re-imported module) adds nothing
            setattr(REGISTERED, kind, (*current, fn))
            _update_running()


def _update_running() -> None:
    REGISTERED.running = bool(REGISTERED.before or REGISTERED.after or REGISTERED.failure or REGISTERED.retry)


def before_task(fn: B) -> B:
    """Register ``fn(ctx)`` to run before each task run (Celery's ``task_prerun``); returns ``fn``.

    It runs after the context is bound and before the task function is called; if it raises,
    the task runs all the same.
    """
    _add("before", fn)
    return fn


def after_task(fn: A) -> A:
    """Register ``fn(ctx, outcome)`` to run after each task run, whatever its outcome (``task_postrun``); returns ``fn``.

    It runs after ``on_failure``/``on_retry`` hooks, still in the run's thread or loop with
    ``current_task()`` bound: the place to close what ``before_task`` opened.
    """
    _add("after", fn)
    return fn


def on_failure(fn: E) -> E:
    """Register ``fn(ctx, error)`` for a run that raised and will not be retried (``task_failure``); returns ``fn``.

    ``error`` is the exception the task's info reports (for a ``Retry`` raised while handling an
    error, that error). See docs/hooks.md for how "will not be retried" is decided.
    """
    _add("failure", fn)
    return fn


def on_retry(fn: E) -> E:
    """Register ``fn(ctx, error)`` for a run that raised and will be retried (``task_retry``); returns ``fn``.

    Called when the task raised ``Retry``, or an exception its ``retry_on`` accepts, and
    ``ctx.retries_left`` is above 0.
    """
    _add("retry", fn)
    return fn


def on_submit(fn: S) -> S:
    """Register ``fn(submission)`` to run when a client has built a submission, before it is sent; returns ``fn``.

    Runs for every task a ``Client``, ``SyncClient`` or ``EagerClient`` of this process submits
    (one call per task of a batch or workflow), where the spec is built: in the submitting
    coroutine, or on ``SyncClient``'s own loop thread (with the caller's context variables). It
    does not mean the control plane accepted the task.
    """
    _add("submit", fn)
    return fn


def remove(fn: Callable[..., object]) -> bool:
    """Take ``fn`` out of every kind of hook it was registered as; False if it was not registered."""
    found = False
    with _lock:
        for kind in _KINDS:
            current: tuple[Any, ...] = getattr(REGISTERED, kind)
            if fn in current:
                setattr(REGISTERED, kind, tuple(hook for hook in current if hook != fn))
                found = True
        _update_running()
    return found


def qualified_name(fn: object) -> str:
    """``module.qualname`` of a hook, for the log (a callable object without them: its repr)."""
    name = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) else name


def _raised(kind: str, hook: object, what: str) -> None:
    """Log a hook that raised (called in its ``except``: the record carries the traceback)."""
    logger.exception("%s hook %s raised for %s", kind, qualified_name(hook), what)


def _returned(kind: str, hook: object, result: object, what: str) -> None:
    """Log a hook that returned an awaitable (an async callable that slipped by registration) and close it."""
    if not inspect.isawaitable(result):
        return  # a value: ignored, as hooks return nothing
    if inspect.iscoroutine(result):
        result.close()  # no "never awaited" warning on top of this error
    logger.error(
        "%s hook %s returned an awaitable for %s; hooks must be plain functions", kind, qualified_name(hook), what
    )


# The three callers below loop inline (no helper call per hook): with hooks registered they run for
# every task run, and the task's name for a log line is only made when a hook misbehaves.


def call_before(ctx: TaskContext) -> None:
    """Run the ``before_task`` hooks for a run (each one's failure logged)."""
    for hook in REGISTERED.before:
        try:
            result: object = hook(ctx)
        except (Exception, SystemExit):
            _raised("before_task", hook, _named(ctx))
            continue
        if result is not None:
            _returned("before_task", hook, result, _named(ctx))


def call_after(ctx: TaskContext, outcome: RunOutcome, will_retry: bool | None) -> None:
    """Run ``on_retry`` (``will_retry``) or ``on_failure`` (False) hooks, then ``after_task`` hooks.

    ``will_retry`` None: the run succeeded, or was stopped from outside (only ``after_task`` runs).
    """
    error = outcome.error
    if will_retry is not None and error is not None:
        kind, error_hooks = ("on_retry", REGISTERED.retry) if will_retry else ("on_failure", REGISTERED.failure)
        for error_hook in error_hooks:
            try:
                told: object = error_hook(ctx, error)
            except (Exception, SystemExit):
                _raised(kind, error_hook, _named(ctx))
                continue
            if told is not None:
                _returned(kind, error_hook, told, _named(ctx))
    for hook in REGISTERED.after:
        try:
            result: object = hook(ctx, outcome)
        except (Exception, SystemExit):
            _raised("after_task", hook, _named(ctx))
            continue
        if result is not None:
            _returned("after_task", hook, result, _named(ctx))


def call_submit(
    name: str, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: SubmitOptions
) -> None:
    """Run the ``on_submit`` hooks for one built submission (each one's failure logged; the submission goes ahead)."""
    submission = Submission(name, task_id, args, kwargs, options)
    for hook in REGISTERED.submit:
        try:
            result: object = hook(submission)
        except (Exception, SystemExit):
            _raised("on_submit", hook, f"task {name}[{task_id}]")
            continue
        if result is not None:
            _returned("on_submit", hook, result, f"task {name}[{task_id}]")


def _named(ctx: TaskContext) -> str:
    return f"task {ctx.name}[{ctx.id}]"
