"""The ``@task`` decorator, the options it validates, and the registry every decorated task joins.

Decorating a function wraps it in a :class:`TaskFunction` (calling it still runs the function
directly, so tasks stay unit-testable) and registers it in :data:`default_registry` at once, so
that two different functions claiming one task name fail when their module is imported.
Decorating does no I/O; a TaskFunction's typed ``delay``/``submit`` (for ``await``, in async
code) and ``delay_sync``/``submit_sync`` (blocking, in sync code) go through the current client
(:mod:`fastworker.client.handles`). Each refuses at once, with
:class:`~fastworker.client.CallContextError` naming the other, to run where it cannot work: an
awaitable call in a thread without an event loop would make a coroutine nobody awaits (a
submission silently lost), a blocking call on an event loop's thread would stall the loop. An
awaitable call in sync code that made a SyncClient current (``with SyncClient(...)``, a default
sync client) submits through it instead, as the blocking twin does.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    ParamSpec,
    Protocol,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    overload,
)

from fastworker.client.errors import CallContextError, DuplicateTaskName
from fastworker.client.handles import (
    SyncTaskBackend,
    SyncTaskHandle,
    TaskBackend,
    TaskHandle,
    _chosen_sync_client,
    current_client,
    current_sync_client,
    event_loop_running,
)
from fastworker.client.limits import Rate, check_concurrency
from fastworker.client.models import Priority
from fastworker.client.options import SUBMIT_OPTION_NAMES, SubmitOptionArgs, SubmitOptions
from fastworker.protocol.ids import shown
from fastworker.protocol.queues import check_queue_name
from fastworker.protocol.v1.task_pb2 import TaskDefinition

if TYPE_CHECKING:
    from fastworker.client.workflows import Signature

__all__ = [
    "AsyncTaskFunction",
    "BoundTask",
    "SyncTaskFunction",
    "TaskDecorator",
    "TaskFunction",
    "TaskOptionArgs",
    "TaskOptions",
    "TaskRegistry",
    "default_registry",
    "task",
]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

#: Largest value of an ``int32`` wire field (``TaskDefinition.retries``).
_INT32_MAX = 2**31 - 1

#: Shortest ``every`` accepted, in seconds: ten runs a second at most. A typo such as ``every=0.001``
#: queued a thousand runs a second, flooding the result cache and the log; the sub-second intervals
#: of tests and demos (``every=0.5``) keep working.
MIN_EVERY = 0.1


class TaskOptionArgs(TypedDict, total=False):
    """``@task``'s keyword options as a user gives them: :class:`TaskOptions`' fields, and ``name``.

    The one list of them besides ``TaskOptions`` itself (a test keeps the two equal).
    """

    name: str | None
    priority: Priority | str
    retries: int
    retry_backoff: float
    retry_backoff_max: float
    timeout: float | None
    soft_timeout: float | None
    every: float | None
    cron: str | None
    retry_on: Iterable[type[BaseException] | str] | type[BaseException]
    allow_overlap: bool
    unique: bool
    unique_ttl: float | None
    rate_limit: str | None
    max_concurrency: int | None
    queue: str | None
    result_ttl: float | None
    timezone: str | None


#: The keyword options ``@task`` accepts.
TASK_OPTION_NAMES: frozenset[str] = frozenset(TaskOptionArgs.__annotations__)


#: The one-word cron schedules accepted besides 5 fields.
CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


def check_timezone(name: object) -> str:
    """An IANA time zone name this machine knows (``ValueError`` naming it otherwise); returns it."""
    if not isinstance(name, str):
        raise TypeError(f"timezone must be an IANA time zone name, not {type(name).__qualname__}")
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
        raise ValueError(
            f"unknown timezone {shown(name)}: give an IANA name such as 'Europe/Paris' "
            "(pip install tzdata where the system has no time zone database)"
        ) from None
    return name


#: The five cron fields: (name, lowest value, highest value); 7 is Sunday as 0 is.
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))


def cron_shape_problem(expr: str) -> str | None:
    """Why ``expr`` is not shaped like a cron schedule, or None.

    5 fields (or an alias such as ``@hourly``), every number within its field's range (checked here,
    at import, in every process that defines the task: a subworker's schedule is otherwise only
    checked when it registers), and no step beyond its field's range: ``*/90`` in the minute field
    matches minute 0 alone (hourly), surely not what "every 90 minutes" meant. Names (``mon``,
    ``jan``) and the extensions croniter reads (``L``, ``#``) are left to the control plane's check.
    """
    fields = expr.split()
    if len(fields) == 1 and fields[0].lower() in CRON_ALIASES:
        return None
    if len(fields) != 5:
        return f"cron must have 5 fields (minute hour day-of-month month day-of-week), got {len(fields)} in {expr!r}"
    for field, (name, lowest, highest) in zip(fields, _CRON_FIELDS, strict=True):
        for part in field.split(","):
            values, slash, step = part.partition("/")
            if slash and step.isdigit() and int(step) > highest:
                return (
                    f"cron {expr!r}: the {name} step /{step} is beyond the field's range (at most {highest}), so it"
                    " would match once per cycle only; for a longer interval use every=SECONDS"
                )
            for value in values.partition("#")[0].split("-"):
                if value.isdigit() and not lowest <= int(value) <= highest:
                    return f"cron {expr!r}: {value} is out of the {name} field's range ({lowest}-{highest})"
    return None


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """A task's validated defaults, as given to ``@task``; every submission may override some of them.

    Attributes:
        priority: Default dispatch level.
        retries: Re-runs allowed after the first attempt fails.
        retry_backoff: First retry delay in seconds, doubled per retry.
        retry_backoff_max: Upper bound of the retry delay in seconds.
        timeout: Hard time limit in seconds, or None for none.
        soft_timeout: Soft time limit in seconds (raises inside the task), or None for none.
        every: Run periodically every this many seconds, or None.
        cron: Run periodically on this cron expression, or None.
        retry_on: Exception classes (or type names, e.g. ``"TimeLimitExceeded"``) that trigger a
            retry; empty means any exception. Retries match on the type's name, as the wire does.
        allow_overlap: For periodic tasks: start a run even while the previous one is unfinished.
        unique: A submission with the same arguments as a live (unfinished) one returns that one's id.
        unique_ttl: Longest a uniqueness key holds, in seconds (None: one hour); also bounds
            ``unique_key`` submissions of this task.
        rate_limit: Fleet-wide start rate, ``"N/s"``, ``"N/m"`` or ``"N/h"`` (None: none), normalised.
        max_concurrency: Most tasks of this name running at once across the fleet (None: no limit).
        queue: The named queue its submissions wait in unless they name another (None: ``"default"``).
        result_ttl: Seconds its final results are kept (None: the control plane's ``--result-ttl``).
        timezone: The IANA time zone its ``cron`` is read in (``"Europe/Paris"``; None: UTC), daylight
            saving time included.

    Raises:
        ValueError: A value is out of range, or both ``every`` and ``cron`` are set.
        TypeError: A value has the wrong type.
    """

    priority: Priority = Priority.NORMAL
    retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 600.0
    timeout: float | None = None
    soft_timeout: float | None = None
    every: float | None = None
    cron: str | None = None
    retry_on: tuple[type[BaseException] | str, ...] = ()
    allow_overlap: bool = False
    unique: bool = False
    unique_ttl: float | None = None
    rate_limit: str | None = None
    max_concurrency: int | None = None
    queue: str | None = None
    result_ttl: float | None = None
    timezone: str | None = None

    @classmethod
    def from_args(cls, options: TaskOptionArgs) -> TaskOptions:
        """The options as ``@task(...)`` takes them (a priority's name, one exception class), validated.

        Raises:
            TypeError: an unknown option, or a value of the wrong type.
            ValueError: a value out of range.
        """
        unknown = sorted(options.keys() - TASK_OPTION_NAMES)
        if unknown:
            raise TypeError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        values: dict[str, Any] = {key: value for key, value in options.items() if key != "name"}
        if "priority" in values:
            values["priority"] = Priority.parse(values["priority"])
        if "retry_on" in values:
            values["retry_on"] = _retry_on_tuple(values["retry_on"])
        return cls(**values)

    def __post_init__(self) -> None:
        if not isinstance(self.priority, Priority):
            raise TypeError(f"priority must be a Priority, not {type(self.priority).__qualname__}")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool):
            raise TypeError(f"retries must be an int, not {type(self.retries).__qualname__}")
        if not 0 <= self.retries <= _INT32_MAX:
            raise ValueError(f"retries must be between 0 and {_INT32_MAX}, got {self.retries}")
        _set(self, "retry_backoff", _seconds("retry_backoff", self.retry_backoff, allow_zero=True))
        _set(self, "retry_backoff_max", _seconds("retry_backoff_max", self.retry_backoff_max, allow_zero=True))
        if self.timeout is not None:
            _set(self, "timeout", _seconds("timeout", self.timeout))
        if self.soft_timeout is not None:
            _set(self, "soft_timeout", _seconds("soft_timeout", self.soft_timeout))
            if self.timeout is not None and self.soft_timeout >= self.timeout:
                raise ValueError(
                    f"soft_timeout ({self.soft_timeout:g} s) must be less than timeout ({self.timeout:g} s), "
                    f"or it never fires"
                )
        if self.every is not None:
            _set(self, "every", check_every(self.every))
        if self.cron is not None:
            if not isinstance(self.cron, str):
                raise TypeError(f"cron must be a str, not {type(self.cron).__qualname__}")
            if not self.cron.strip():
                raise ValueError("cron must be a non-empty cron expression")
            problem = cron_shape_problem(self.cron)
            if problem is not None:
                raise ValueError(problem)  # the control plane checks the fields' values (croniter)
            if self.every is not None:
                raise ValueError("every and cron are mutually exclusive: give one schedule, not both")
        if self.timezone is not None:
            if self.cron is None:
                raise ValueError("timezone applies to a cron schedule: give cron too (every counts seconds)")
            check_timezone(self.timezone)
        if not isinstance(self.unique, bool):
            raise TypeError(f"unique must be a bool, not {type(self.unique).__qualname__}")
        if self.unique_ttl is not None:
            _set(self, "unique_ttl", _seconds("unique_ttl", self.unique_ttl))
        if self.rate_limit is not None:
            _set(self, "rate_limit", Rate.parse(self.rate_limit).text)
        if self.max_concurrency is not None:
            _set(self, "max_concurrency", check_concurrency(self.max_concurrency))
        if self.queue is not None:
            check_queue_name(self.queue)
        if self.result_ttl is not None:
            _set(self, "result_ttl", _seconds("result_ttl", self.result_ttl))
        if not isinstance(self.retry_on, tuple):
            raise TypeError(f"retry_on must be a tuple, not {type(self.retry_on).__qualname__}")
        for entry in self.retry_on:
            if isinstance(entry, str):
                if not entry.isidentifier():
                    raise ValueError(f"retry_on entries must be exception type names, got {entry!r}")
            elif not (isinstance(entry, type) and issubclass(entry, BaseException)):
                raise TypeError(f"retry_on entries must be exception classes or their names, got {entry!r}")

    @property
    def is_periodic(self) -> bool:
        """True when the task has a schedule (``every`` or ``cron``)."""
        return self.every is not None or self.cron is not None

    @property
    def retry_on_names(self) -> tuple[str, ...]:
        """The ``retry_on`` entries as type names, the form retries match on."""
        return tuple(entry if isinstance(entry, str) else entry.__name__ for entry in self.retry_on)


def _set(options: TaskOptions, field: str, value: object) -> None:
    """Store a normalized value on a frozen TaskOptions during validation."""
    object.__setattr__(options, field, value)


def check_every(value: object) -> float:
    """A periodic interval in seconds, at least :data:`MIN_EVERY` (``ValueError`` naming both otherwise); as a float."""
    seconds = _seconds("every", value)
    if seconds < MIN_EVERY:
        raise ValueError(
            f"every must be at least {MIN_EVERY:g} s (a periodic task runs at most ten times a second), got {value!r}"
        )
    return seconds


def _seconds(field: str, value: object, *, allow_zero: bool = False) -> float:
    """Validate a duration in seconds and return it as a float."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{field} must be a number of seconds, not {type(value).__qualname__}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{field} must be a finite number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{field} must be {bound} seconds, got {value!r}")
    return seconds


def _qualified_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a function, for messages and same-function checks."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{qualname}"


class TaskFunction(Generic[P, R]):
    """A function registered as a task: its name, its validated options and the function itself.

    ``R`` is the type the task produces: the return type of a ``def``, the awaited type of an
    ``async def``. Calling a TaskFunction calls the original function directly (an ``async``
    task returns its coroutine), so tasks stay unit-testable; :class:`SyncTaskFunction` and
    :class:`AsyncTaskFunction` type that call precisely.

    Args:
        fn: The decorated function.
        name: The registered task name.
        options: The task's validated defaults.

    Attributes:
        name: The registered task name.
        fn: The original function.
        options: The task's validated defaults.
        is_async: True for coroutine functions (``async def``).
    """

    is_async: ClassVar[bool] = False

    fn: Callable[P, Any]
    name: str
    options: TaskOptions
    # Copied from the function by functools.update_wrapper:
    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, Any]

    def __init__(self, fn: Callable[P, Any], name: str, options: TaskOptions) -> None:
        functools.update_wrapper(self, fn)  # __name__, __doc__, __wrapped__ (so inspect.signature works)
        self.fn = fn
        self.name = name
        self.options = options

    @property
    def qualified_name(self) -> str:
        """The function's ``module.qualname``, as error messages name it."""
        return _qualified_name(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Call the original function directly, in this process."""
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[object, object, TaskHandle[R]]:
        """Queue this task through the current client, in async code: ``await add.delay(1, 2)``.

        Returns a coroutine to await (alone, in ``asyncio.gather``, ...), whose value is a handle
        typed by the task's result; it is typed ``Coroutine[object, object, ...]``, not ``Any, Any``,
        with which mypy infers ``Any`` for a ``gather`` over tasks of different result types.
        Arguments are checked against the function's signature by type checkers. Submission
        options go through :meth:`with_options`: ``await add.with_options(priority="high").delay(1, 2)``.
        Sync code calls :meth:`delay_sync`; called in sync code inside ``with SyncClient(...)`` (or
        with a default sync client set, or a SyncClient given with ``with_options``), this submits
        through that client and returns what ``delay_sync`` does, a blocking handle (the type says
        coroutine: typed sync code calls ``delay_sync``).

        Raises:
            CallContextError: at once, when this thread runs no event loop (sync code) and no
                SyncClient is current: nothing is submitted, no coroutine is made, and the message
                names ``delay_sync``.
            ClientError: there is no current client (see :func:`~fastworker.client.current_client`).
            PayloadError, UnknownTask, QueueFull, ControlPlaneUnavailable: as for ``Client.delay``.
        """
        return BoundTask(self)._delay(_label(self), args, kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[object, object, R]:
        """Queue this task through the current client and return its value once it finished, in async code.

        Returns a coroutine to await. Waits without bound unless ``with_options(timeout=...)``
        gives one. Sync code calls :meth:`submit_sync` (inside ``with SyncClient(...)`` this call does
        the same, as :meth:`delay` does).

        Raises:
            CallContextError: at once, when this thread runs no event loop (sync code) and no
                SyncClient is current; names ``submit_sync``.
            TaskFailed: the task ended in FAILURE or CANCELLED.
            TaskTimeout: the ``with_options`` timeout passed first.
            ClientError, PayloadError, UnknownTask, QueueFull, ControlPlaneUnavailable: as for delay.
        """
        return BoundTask(self)._submit(_label(self), args, kwargs)

    def delay_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncTaskHandle[R]:
        """Queue this task from sync code (a Django or Flask view, a script); blocks until it is accepted.

        Submits through the current sync client (:func:`~fastworker.client.current_sync_client`:
        the innermost ``with SyncClient(...)`` block, else the default sync client, else one
        ``SyncClient`` made from the environment on first use) and returns a handle whose methods
        block, typed by the task's result.

        Raises:
            CallContextError: at once, when this thread runs an event loop (async code), which the
                call would stall: nothing is submitted; the message names ``await ....delay(...)``.
            PayloadError, UnknownTask, QueueFull, ControlPlaneUnavailable: as for ``SyncClient.delay``.
        """
        return BoundTask(self)._delay_sync(_label(self), args, kwargs)

    def submit_sync(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Queue this task from sync code and return its value once it finished (blocks).

        Waits without bound unless ``with_options(timeout=...)`` gives one.

        Raises:
            CallContextError: at once, when this thread runs an event loop; names ``await ....submit(...)``.
            TaskFailed: the task ended in FAILURE or CANCELLED.
            TaskTimeout: the ``with_options`` timeout passed first.
            PayloadError, UnknownTask, QueueFull, ControlPlaneUnavailable: as for delay_sync.
        """
        return BoundTask(self)._submit_sync(_label(self), args, kwargs)

    def with_options(
        self,
        *,
        timeout: float | None = None,
        client: TaskBackend | SyncTaskBackend | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> BoundTask[P, R]:
        """This task with submission options, for typed ``delay``/``submit`` and ``delay_sync``/``submit_sync``.

        Args:
            timeout: How long ``submit``/``submit_sync`` wait for the result before ``TaskTimeout``.
            client: The client to submit through, instead of the current one: a ``Client`` (or
                another async :class:`~fastworker.client.TaskBackend`) for ``delay``/``submit``, a
                ``SyncClient`` for ``delay_sync``/``submit_sync`` (the other kind is a ``TypeError``).
            **options: The :class:`~fastworker.client.options.SubmitOptions` (``priority``, ``queue``,
                ``countdown``, ``eta``, ``expires``, ``task_id``, ``unique_key``, ``depends_on``).

        Raises:
            ValueError: a bad option value (the message names the option).
        """
        return BoundTask(self, SubmitOptions(**options), timeout=timeout, client=client)

    def handle(self, task_id: str, *, client: TaskBackend | None = None) -> TaskHandle[R]:
        """A typed handle for a task of this kind submitted earlier (e.g. an id a web request carries)."""
        return TaskHandle(task_id, self.name, client)

    def handle_sync(self, task_id: str, *, client: SyncTaskBackend | None = None) -> SyncTaskHandle[R]:
        """A typed handle whose methods block, for a task of this kind submitted earlier (sync code)."""
        return SyncTaskHandle(task_id, self.name, client)

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature of this task for a workflow; in a chain the previous result is prepended to ``args``."""
        return _signature(self.name, args, kwargs, None, False)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """An immutable signature: exactly these arguments, whatever the previous step returned."""
        return _signature(self.name, args, kwargs, None, True)

    def to_definition(self) -> TaskDefinition:
        """The task as the wire announces it (a fresh message on every call)."""
        options = self.options
        return TaskDefinition(
            name=self.name,
            priority=options.priority.to_wire(),
            retries=options.retries,
            retry_backoff=options.retry_backoff,
            retry_backoff_max=options.retry_backoff_max,
            timeout=options.timeout or 0.0,
            soft_timeout=options.soft_timeout or 0.0,
            is_async=self.is_async,
            every=options.every or 0.0,
            cron=options.cron or "",
            retry_on=options.retry_on_names,
            allow_overlap=options.allow_overlap,
            unique=options.unique,
            unique_ttl=options.unique_ttl or 0.0,
            rate_limit=options.rate_limit or "",
            max_concurrency=options.max_concurrency or 0,
            queue=options.queue or "",
            result_ttl=options.result_ttl or 0.0,
            timezone=options.timezone or "",
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.qualified_name}>"


@dataclass(frozen=True, slots=True)
class BoundTask(Generic[P, R]):
    """A task with submission options (made by :meth:`TaskFunction.with_options`): typed ``delay``/``submit``.

    Attributes:
        task: The task function.
        options: The submission options (priority, queue, countdown, eta, expires, task_id, ...).
        timeout: How long ``submit``/``submit_sync`` wait for the result, or None for no bound.
        client: The client to submit through (async for ``delay``/``submit``, sync for
            ``delay_sync``/``submit_sync``), or None for the current one.
    """

    task: TaskFunction[P, R]
    options: SubmitOptions = SubmitOptions()
    timeout: float | None = None
    client: TaskBackend | SyncTaskBackend | None = None

    def with_options(
        self,
        *,
        timeout: float | None = None,
        client: TaskBackend | SyncTaskBackend | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> BoundTask[P, R]:
        """These options with the ones given here (not None) replacing them (see :meth:`SubmitOptions.merged`)."""
        return BoundTask(
            self.task,
            self.options.replace(**options),
            timeout=self.timeout if timeout is None else timeout,
            client=self.client if client is None else client,
        )

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[object, object, TaskHandle[R]]:
        """Queue the task with these options, in async code; see :meth:`TaskFunction.delay`."""
        return self._delay(_bound_label(self.task), args, kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[object, object, R]:
        """Queue the task with these options and return its value, in async code; see :meth:`TaskFunction.submit`."""
        return self._submit(_bound_label(self.task), args, kwargs)

    def delay_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncTaskHandle[R]:
        """Queue the task with these options from sync code (blocks); see :meth:`TaskFunction.delay_sync`."""
        return self._delay_sync(_bound_label(self.task), args, kwargs)

    def submit_sync(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Queue the task with these options and return its value, from sync code; see :meth:`TaskFunction.submit_sync`."""
        return self._submit_sync(_bound_label(self.task), args, kwargs)

    # Each public call checks where it runs *before* making a coroutine or a request, so that a
    # call that cannot work raises at once and nothing is submitted (or left un-awaited).

    def _delay(
        self, label: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[object, object, TaskHandle[R]]:
        if kwargs and not _OPTION_WORDS.isdisjoint(kwargs):
            _refuse_options_as_arguments(self.task, label, kwargs)
        if not event_loop_running():
            # Sync code: through the SyncClient it made current, a blocking handle (typed: delay_sync).
            self._require_sync_client(label, "delay")
            return cast(Coroutine[object, object, TaskHandle[R]], self._delay_sync(label, args, kwargs))
        return self._send(self._async_client(label, "delay"), args, kwargs)

    def _submit(self, label: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Coroutine[object, object, R]:
        if kwargs and not _OPTION_WORDS.isdisjoint(kwargs):
            _refuse_options_as_arguments(self.task, label, kwargs)
        if not event_loop_running():
            self._require_sync_client(label, "submit")
            return cast(Coroutine[object, object, R], self._submit_sync(label, args, kwargs))
        return self._send_and_wait(self._async_client(label, "submit"), args, kwargs)

    def _require_sync_client(self, label: str, method: str) -> None:
        """In sync code, an awaitable call needs a SyncClient made current or given; else CallContextError."""
        if self.client is not None and not _is_async_backend(self.client):
            return
        if self.client is None and _chosen_sync_client() is not None:
            return
        _refuse_sync_code(label, method)

    async def _send(self, client: TaskBackend | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskHandle[R]:
        backend = client if client is not None else current_client()
        task_id = await backend.send(self.task.name, args, kwargs, **self.options.as_kwargs())
        return TaskHandle(task_id, self.task.name, backend)

    async def _send_and_wait(self, client: TaskBackend | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        backend = client if client is not None else current_client()
        value = await backend.send_and_wait(
            self.task.name, args, kwargs, timeout=self.timeout, **self.options.as_kwargs()
        )
        return cast(R, value)

    def _delay_sync(self, label: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SyncTaskHandle[R]:
        if kwargs and not _OPTION_WORDS.isdisjoint(kwargs):
            _refuse_options_as_arguments(self.task, label, kwargs)
        _refuse_event_loop(label, "delay")
        backend = self._sync_client(label, "delay")
        task_id = backend.send(self.task.name, args, kwargs, **self.options.as_kwargs())
        return SyncTaskHandle(task_id, self.task.name, backend)

    def _submit_sync(self, label: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        if kwargs and not _OPTION_WORDS.isdisjoint(kwargs):
            _refuse_options_as_arguments(self.task, label, kwargs)
        _refuse_event_loop(label, "submit")
        backend = self._sync_client(label, "submit")
        value = backend.send_and_wait(self.task.name, args, kwargs, timeout=self.timeout, **self.options.as_kwargs())
        return cast(R, value)

    def _async_client(self, label: str, method: str) -> TaskBackend | None:
        """The explicit client for an awaitable call (None: the current one); a blocking one is refused."""
        if self.client is None:
            return None
        if not _is_async_backend(self.client):
            raise TypeError(
                f"{label}.{method}(...): the client given with with_options(client=...) is a blocking "
                f"{type(self.client).__name__}; call {label}.{method}_sync(...) with it, or give an async "
                f"Client (nothing was submitted)"
            )
        return cast(TaskBackend, self.client)

    def _sync_client(self, label: str, method: str) -> SyncTaskBackend:
        """The client for a blocking call: the explicit one (an async one is refused), else the current sync client."""
        if self.client is None:
            return current_sync_client()
        if _is_async_backend(self.client):
            raise TypeError(
                f"{label}.{method}_sync(...): the client given with with_options(client=...) is an async "
                f"{type(self.client).__name__}; `await {label}.{method}(...)` with it, or give a SyncClient "
                f"(nothing was submitted)"
            )
        return cast(SyncTaskBackend, self.client)

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature of this task with these options; see :meth:`TaskFunction.s`."""
        return _signature(self.task.name, args, kwargs, self.options, False)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """An immutable signature of this task with these options; see :meth:`TaskFunction.si`."""
        return _signature(self.task.name, args, kwargs, self.options, True)


class SyncTaskFunction(TaskFunction[P, R]):
    """A task made from a plain ``def``; calling it returns the function's value."""

    is_async: ClassVar[bool] = False

    fn: Callable[P, R]

    def __init__(self, fn: Callable[P, R], name: str, options: TaskOptions) -> None:
        super().__init__(fn, name, options)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the original function directly, in this process."""
        return self.fn(*args, **kwargs)


class AsyncTaskFunction(TaskFunction[P, R]):
    """A task made from an ``async def``; calling it returns the function's coroutine."""

    is_async: ClassVar[bool] = True

    fn: Callable[P, Coroutine[Any, Any, R]]

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]], name: str, options: TaskOptions) -> None:
        super().__init__(fn, name, options)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Call the original function directly: returns its coroutine, to be awaited."""
        return self.fn(*args, **kwargs)


class TaskRegistry:
    """Tasks by name. Iterating yields the TaskFunctions in registration order.

    Registration is thread-safe; lookups take no lock.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, TaskFunction[Any, Any]] = {}
        self._lock = threading.Lock()

    def register(self, tf: TaskFunction[P, R]) -> TaskFunction[P, R]:
        """Add a task under its name and return it.

        Registering the same function again (same ``__module__`` and ``__qualname__``, as when
        its module is reloaded) replaces the earlier registration silently.

        Raises:
            DuplicateTaskName: A different function is already registered under that name.
        """
        with self._lock:
            existing = self._tasks.get(tf.name)
            if existing is not None and existing is not tf:
                existing_name, new_name = existing.qualified_name, tf.qualified_name
                if existing_name != new_name:
                    raise DuplicateTaskName(tf.name, existing_name, new_name)
            self._tasks[tf.name] = tf
        return tf

    def unregister(self, name: str) -> TaskFunction[Any, Any] | None:
        """Remove the task registered under name and return it, or None when there is none."""
        with self._lock:
            return self._tasks.pop(name, None)

    def get(self, name: str) -> TaskFunction[Any, Any] | None:
        """The task registered under name, or None."""
        return self._tasks.get(name)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._tasks)

    def definitions(self) -> list[TaskDefinition]:
        """Every task's wire definition, sorted by name."""
        return [tf.to_definition() for _, tf in sorted(self._tasks.items())]

    def __contains__(self, item: object) -> bool:
        """True for a registered name, or for a TaskFunction that is the one registered under its name."""
        if isinstance(item, TaskFunction):
            return self._tasks.get(item.name) is item
        return item in self._tasks

    def __iter__(self) -> Iterator[TaskFunction[Any, Any]]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"<TaskRegistry of {len(self._tasks)} tasks: {', '.join(self.names())}>"


#: The registry that ``@task`` registers every task into, at decoration time.
default_registry = TaskRegistry()


class TaskDecorator(Protocol):
    """What ``@task(...)`` returns: a decorator turning a function into a registered task."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTaskFunction[P, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...


@overload
def task(fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTaskFunction[P, R]: ...  # type: ignore[overload-overlap]
@overload
def task(fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...
@overload
def task(**options: Unpack[TaskOptionArgs]) -> TaskDecorator: ...
def task(fn: object = None, /, **options: Unpack[TaskOptionArgs]) -> TaskFunction[..., Any] | TaskDecorator:
    """Register a function as a task, as ``@task`` or ``@task(...)``.

    The task joins :data:`default_registry` at once, so a second, different function under the
    same name fails its module's import with :class:`DuplicateTaskName`.

    Args:
        fn: The function, when used as bare ``@task``.
        name: The task name; defaults to the function's ``__name__``.
        priority: Default priority, a :class:`Priority` or its name.
        retries: Re-runs allowed after the first attempt fails.
        retry_backoff: First retry delay in seconds, doubled per retry.
        retry_backoff_max: Upper bound of the retry delay in seconds.
        timeout: Hard time limit in seconds (FAILURE with ``TimeLimitExceeded``), or None.
        soft_timeout: Soft time limit in seconds (``SoftTimeLimitExceeded``), or None; less than ``timeout``.
        every: Run periodically every this many seconds; excludes ``cron``.
        cron: Run periodically on this cron expression; excludes ``every``.
        retry_on: Exception classes, or type names, that trigger a retry; empty means any exception.
        allow_overlap: For periodic tasks: start a run even while the previous one is unfinished.
        unique: A submission with the same arguments as a live (unfinished) one returns that one's
            id instead of queuing (the key: the name and the encoded arguments).
        unique_ttl: Longest a uniqueness key holds, in seconds (None: one hour).
        rate_limit: Fleet-wide start rate, ``"N/s"``, ``"N/m"`` or ``"N/h"``; see docs/flow-control.md.
        max_concurrency: Most tasks of this name running at once across the fleet.
        queue: The named queue its submissions wait in unless they name another (default ``"default"``);
            only workers serving it (``--queues``) run them.
        result_ttl: Seconds its final results are kept (default: the control plane's ``--result-ttl``).
        timezone: The IANA time zone ``cron`` is read in (default UTC), e.g. ``"Europe/Paris"``: "0 3 * * *"
            is then 03:00 there, summer and winter.

    Returns:
        A :class:`TaskFunction` (bare form), or a decorator that makes one.

    Raises:
        ValueError: An option is out of range, the name is empty, or both ``every`` and ``cron`` are set.
        TypeError: An option has the wrong type, or the decorated object is not callable.
        DuplicateTaskName: A different function is already registered under the name.
    """

    def decorate(function: object) -> TaskFunction[..., Any]:
        if not callable(function):
            hint = " (give the name as @task(name=...))" if isinstance(function, str) else ""
            raise TypeError(f"@task decorates a function, not {type(function).__qualname__}{hint}")
        label = _qualified_name(function)
        try:
            task_options = TaskOptions.from_args(options)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"@task for {label}: {exc}") from None
        return default_registry.register(_make_task(function, label, options.get("name"), task_options))

    if fn is None:
        return decorate  # type: ignore[return-value]  # the overloads give the decorator its precise type
    return decorate(fn)


def _retry_on_tuple(
    retry_on: Iterable[type[BaseException] | str] | type[BaseException],
) -> tuple[type[BaseException] | str, ...]:
    if isinstance(retry_on, type):
        return (retry_on,)
    if isinstance(retry_on, str):
        return (retry_on,)
    try:
        return tuple(retry_on)
    except TypeError:
        raise TypeError(
            f"retry_on must be exception classes or their names, not {type(retry_on).__qualname__}"
        ) from None


def _make_task(fn: Callable[..., Any], label: str, name: str | None, options: TaskOptions) -> TaskFunction[..., Any]:
    """Validate what depends on the function itself, and wrap it."""
    if isinstance(fn, TaskFunction):
        raise TypeError(f"{fn!r} is already a task; apply @task once")
    if name is None:
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"@task for {label}: the callable has no __name__; give one with @task(name=...)")
    elif not isinstance(name, str):
        raise TypeError(f"@task for {label}: name must be a str, not {type(name).__qualname__}")
    if not name or name != name.strip():
        raise ValueError(f"@task for {label}: name must be non-empty, without surrounding whitespace, got {name!r}")
    if options.is_periodic:
        _check_callable_without_arguments(fn, label)
    if inspect.iscoroutinefunction(fn):
        return AsyncTaskFunction(fn, name, options)
    return SyncTaskFunction(fn, name, options)


def _check_callable_without_arguments(fn: Callable[..., Any], label: str) -> None:
    """A periodic task is run with no arguments: refuse one whose function requires some."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have no signature: trust them
        return
    required = [
        p.name
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ValueError(
            f"@task for {label}: a periodic task runs without arguments, but the function requires {', '.join(required)}"
        )


def _label(task: TaskFunction[Any, Any]) -> str:
    """How code names the task in messages: the decorated function's name (``add``), else the task name."""
    name = getattr(task, "__name__", None)
    return name if isinstance(name, str) and name else task.name


def _bound_label(task: TaskFunction[Any, Any]) -> str:
    return f"{_label(task)}.with_options(...)"


#: Words that are submission options on ``Client.delay`` but task arguments on a typed call.
_OPTION_WORDS = SUBMIT_OPTION_NAMES | {"timeout", "client"}


def _refuse_options_as_arguments(task: TaskFunction[Any, Any], label: str, kwargs: dict[str, Any]) -> None:
    """Refuse option words given as keyword arguments to a typed call whose function does not take them.

    ``add.delay(1, 2, countdown=5)`` passes ``countdown`` to the task (as Celery's ``delay`` does);
    a task without such a parameter would be accepted and then fail with ``TypeError`` at run time,
    the option silently lost. Refused here instead, naming ``with_options``; nothing is submitted.
    """
    try:
        parameters = inspect.signature(task.fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): let the run say
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    taken = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    options = sorted(name for name in kwargs if name in _OPTION_WORDS and name not in taken)
    if options:
        given = ", ".join(f"{name}=..." for name in options)
        raise TypeError(
            f"{label}() got {given}, which {task.qualified_name} does not take: submission options go through "
            f"{_label(task)}.with_options({given}) (nothing was submitted)"
        )


def _is_async_backend(client: object) -> bool:
    """True for a client whose calls are awaited (``Client``, ``EagerClient``), False for a blocking one."""
    return inspect.iscoroutinefunction(getattr(client, "send", None))


def _refuse_sync_code(label: str, method: str) -> None:
    """Refuse an awaitable call in sync code that made no SyncClient current: its coroutine would never run."""
    raise CallContextError(
        f"{label}.{method}(...) was called in sync code (no event loop runs in this thread) with no SyncClient "
        f"current: it returns a coroutine that only `await` would run, so nothing was submitted. From sync code "
        f"(a Django or Flask view, a script) call {label}.{method}_sync(...), which blocks and submits through a "
        f"SyncClient, or call it inside `with SyncClient(...):`; in async code, `await {label}.{method}(...)`."
    )


def _refuse_event_loop(label: str, method: str) -> None:
    """Refuse a blocking call on a thread that runs an event loop: it would stall every coroutine of the loop."""
    if event_loop_running():
        raise CallContextError(
            f"{label}.{method}_sync(...) blocks, and this thread runs an event loop that it would stall: "
            f"nothing was submitted. In async code, `await {label}.{method}(...)`; run blocking code in "
            f"a thread (`await asyncio.to_thread(...)`)."
        )


def _signature(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: SubmitOptions | None, immutable: bool
) -> Signature[Any]:
    """A workflow step; the canvas module loads on the first one (``import fastworker.client`` skips it)."""
    from fastworker.client.workflows import Signature

    return Signature(name, args, kwargs, SubmitOptions() if options is None else options, immutable=immutable)
