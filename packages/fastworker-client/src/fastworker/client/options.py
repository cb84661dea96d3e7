"""``SubmitOptions``: the per-submission options (priority, queue, countdown, eta, expires, task_id, ...), defined once.

Every way of submitting (``Client``/``SyncClient`` ``delay``/``send``/``submit``, typed
``add.with_options(...)``, the eager test client, ``fastworker submit``) takes these options
through this module: the dataclass validates them, :meth:`SubmitOptions.apply` is the only
place that maps them to ``TaskSpec`` wire fields, :class:`SubmitOptionArgs` types them as
keyword arguments, and :func:`add_submit_arguments` makes one CLI flag per option. Adding an
option means a proto field, a field here (with its flag's help), and the code that acts on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack, cast

from fastworker.client.errors import InvalidOptions, PayloadError
from fastworker.client.models import Priority
from fastworker.protocol.addresses import parse_address
from fastworker.protocol.ids import MAX_SHOWN, new_task_id, shown, task_id_problem
from fastworker.protocol.queues import QueueNameError, check_queue_name, parse_queues
from fastworker.protocol.v1 import task_pb2

if TYPE_CHECKING:  # argparse loads with a command line, not with the client
    import argparse

__all__ = [
    "SUBMIT_OPTION_NAMES",
    "BatchCall",
    "BatchOptionArgs",
    "HasTaskId",
    "SubmitOptionArgs",
    "TaskRef",
    "SubmitOptions",
    "add_submit_arguments",
    "address_argument",
    "batch_calls",
    "call_payload_error",
    "options_from_namespace",
    "parse_when",
    "queue_argument",
    "queues_argument",
    "seconds_argument",
]


class HasTaskId(Protocol):
    """Anything that names a task by its ``id``: a task handle, async or sync (``TaskHandle``, ``SyncTaskHandle``)."""

    @property
    def id(self) -> str:
        """The task's id."""
        ...


#: A task named by its id or by a handle: what ``depends_on`` takes.
TaskRef = str | HasTaskId


@dataclass(frozen=True, slots=True)
class _Flag:
    """How one option appears on the command line (``fastworker submit``)."""

    help: str
    metavar: str | None = None
    parse: Callable[[str], Any] = str
    choices: Sequence[str] | None = None
    #: False for options that name one task (``task_id``): a batch cannot share them.
    batch: bool = True


def _option(flag: _Flag) -> Any:
    """A dataclass field defaulting to None (not given) that carries its CLI flag."""
    return field(default=None, metadata={"flag": flag})


def parse_when(text: str) -> datetime | float:
    """A point in time from the command line: ISO 8601 (naive means UTC), Unix seconds, or ``+SECONDS`` from now.

    Raises:
        argparse.ArgumentTypeError: the text is none of these (argparse reports it as a usage error).
    """
    value = text.strip()
    try:
        if value.startswith("+"):
            seconds = float(value[1:])
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(value)
            return time.time() + seconds
        try:
            seconds = float(value)
        except ValueError:
            return datetime.fromisoformat(value)
        if not math.isfinite(seconds):
            raise ValueError(value)
        return seconds
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time (naive means UTC), Unix seconds or +SECONDS from now, got {text!r}"
        ) from None


def seconds_argument(text: str) -> float:
    """A duration from the command line or environment: finite seconds, 0 or more (argparse names a bad one)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        import argparse

        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return seconds


def positive_seconds_argument(text: str) -> float:
    """A duration that must pass before something can happen (a timeout to find a peer, a poll's period): above 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        import argparse

        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return seconds


def address_argument(text: str) -> str:
    """An nng address to dial, from the command line or environment (``--control-plane``): refused at parse time, naming it."""
    import argparse

    try:
        address = parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if address.port == 0:
        raise argparse.ArgumentTypeError(f"address {text!r}: port 0 can be listened on, not dialled")
    return text


def queue_argument(text: str) -> str:
    """A queue name from the command line (argparse reports a bad one as a usage error naming it)."""
    try:
        return check_queue_name(text.strip())
    except QueueNameError as exc:
        import argparse

        raise argparse.ArgumentTypeError(str(exc)) from None


def queues_argument(text: str) -> tuple[str, ...]:
    """A comma-separated list of queue names from the command line or environment (``--queues``)."""
    try:
        return parse_queues(text)
    except QueueNameError as exc:
        import argparse

        raise argparse.ArgumentTypeError(str(exc)) from None


def _id_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


#: Longest task_id or unique_key accepted (the control plane refuses longer ids).
MAX_KEY_LENGTH = 200
#: Most characters of a malformed ``delay_many`` call an error message quotes.
MAX_SHOWN_CALL = 200


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """How one submission is queued; None means "not given" (the task's or control plane's default).

    Attributes:
        priority: Dispatch level (a :class:`Priority` or its name; stored as a Priority).
        queue: The named queue to wait in instead of the task's own (only workers serving it run it).
        countdown: Seconds (or a ``timedelta``) to hold the task as SCHEDULED before it is queued
            (0 or less: queued at once, as an eta in the past); excludes eta.
        eta: When to queue it: a datetime (naive means UTC) or Unix seconds; excludes countdown.
        expires: When an unstarted task is cancelled instead: a datetime (naive means UTC), Unix
            seconds, or a ``timedelta`` from the submission (Celery's ``expires=60`` is
            ``timedelta(seconds=60)`` here: a number under 10⁹, a time before 2001, is refused).
        task_id: The id to submit under instead of a fresh UUID4 (a resubmitted id is not run twice).
        unique_key: While a live (unfinished) task has this key, a submission with it returns that
            task's id instead of queuing another (see ``@task(unique=..., unique_ttl=...)``).
        depends_on: Task ids (or handles) that must succeed first: the task waits SCHEDULED until
            they are final, then runs, or fails with ``DependencyFailed`` if one did not succeed.

    Raises:
        InvalidOptions: an option has a bad value (the message names the option; also a ``ValueError``).
    """

    priority: Priority | str | None = _option(
        _Flag("dispatch level (default: the task's own)", choices=tuple(p.value for p in Priority))
    )
    queue: str | None = _option(
        _Flag("wait in this named queue (default: the task's own, else 'default')", "QUEUE", queue_argument)
    )
    countdown: float | timedelta | None = _option(
        _Flag("hold the task as SCHEDULED this many seconds before queueing it (0 or less: at once)", "SECONDS", float)
    )
    eta: datetime | float | None = _option(
        _Flag("queue the task at this time: ISO 8601 (naive means UTC), Unix seconds or +SECONDS", "WHEN", parse_when)
    )
    expires: datetime | float | timedelta | None = _option(
        _Flag(
            "cancel the task if it has not started by this time: ISO 8601 (naive means UTC), Unix seconds or +SECONDS",
            "WHEN",
            parse_when,
        )
    )
    task_id: str | None = _option(_Flag("submit under this id instead of a fresh UUID4", "ID", batch=False))
    unique_key: str | None = _option(
        _Flag("while a live task has this key, answer with its id instead of queuing another", "KEY", batch=False)
    )
    depends_on: Sequence[TaskRef] | None = _option(
        _Flag("run only once these tasks succeeded (comma-separated ids)", "ID[,ID...]", _id_list)
    )

    def __post_init__(self) -> None:
        try:
            self._check()
        except InvalidOptions:
            raise
        except ValueError as exc:  # each check names its option
            raise InvalidOptions(str(exc)) from None

    def _check(self) -> None:
        if self.priority is not None:
            object.__setattr__(self, "priority", Priority.parse(self.priority))
        if self.queue is not None:
            check_queue_name(self.queue)
        if self.countdown is not None:
            # Negative means "now", as an eta in the past does (Celery runs it at once): a countdown
            # computed as ``deadline - now`` must not fail once the deadline has just passed.
            _check_number("countdown", _seconds_of(self.countdown), negative_ok=True)
            if time.time() + _seconds_of(self.countdown) > LATEST_UNIX_SECONDS:
                raise ValueError(f"countdown={_seconds_of(self.countdown):g} ends after the year 9999")
        if isinstance(self.expires, timedelta):
            _check_number("expires", _seconds_of(self.expires), what="a timedelta of 0 or more")
        eta: object = self.eta  # (typed as it should be; an ``expires`` may be a timedelta: a natural slip)
        if isinstance(eta, timedelta):
            seconds = _seconds_of(eta)
            raise ValueError(
                f"eta must be a datetime or Unix seconds, not a timedelta: for {seconds:g} seconds from now,"
                f" give countdown={seconds:g} (or countdown=timedelta(...))"
            )
        for name in ("eta", "expires"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime | timedelta):
                _check_number(name, value, what="a datetime or Unix seconds", negative_ok=True)
                if value > LATEST_UNIX_SECONDS:
                    raise ValueError(f"{name}={value:g} is after the year 9999 (Unix seconds)")
                if value <= 0:  # (on the wire, 0 means "not given": it must not pass for a time)
                    raise ValueError(
                        f"{name}={value:g}: give a datetime or Unix seconds (a number below 10^9, a time before"
                        " 2001, is refused)"
                    )
                if value < EARLIEST_UNIX_SECONDS:
                    instead = (
                        f"countdown={value:g} (on the command line: --countdown {value:g})"
                        if name == "eta"
                        else f"expires=timedelta(seconds={value:g}) (on the command line: --expires +{value:g})"
                    )
                    raise ValueError(
                        f"{name}={value:g} is Unix seconds, a time in {_year(value)}: "
                        f"for {value:g} seconds from now, give {instead}"
                    )
        if self.countdown is not None and self.eta is not None:
            raise ValueError("give countdown or eta, not both (--countdown or --eta on the command line)")
        for name in ("task_id", "unique_key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH):
                raise ValueError(
                    f"{name} must be a non-empty string of at most {MAX_KEY_LENGTH} characters, not"
                    f" {_shown_value(value)}"
                )
        if self.task_id is not None and (problem := task_id_problem(self.task_id)) is not None:
            raise ValueError(problem)
        if self.depends_on is not None:
            object.__setattr__(self, "depends_on", _task_ids("depends_on", self.depends_on))

    @classmethod
    def split(cls, kwargs: Mapping[str, Any]) -> tuple[SubmitOptions, dict[str, Any]]:
        """Take the reserved option names out of ``**kwargs``: (the options, the task's own keyword arguments)."""
        if SUBMIT_OPTION_NAMES.isdisjoint(kwargs):
            return _NO_OPTIONS, dict(kwargs)
        options = {key: value for key, value in kwargs.items() if key in SUBMIT_OPTION_NAMES}
        rest = {key: value for key, value in kwargs.items() if key not in SUBMIT_OPTION_NAMES}
        return cls(**options), rest

    def merged(self, other: SubmitOptions) -> SubmitOptions:
        """These options with other's given (not None) values replacing them.

        countdown and eta are one choice (when to queue): other giving either drops both of these.
        """
        changes = {name: getattr(other, name) for name in _FIELD_NAMES if getattr(other, name) is not None}
        if not changes:
            return self
        values = {name: getattr(self, name) for name in _FIELD_NAMES}
        if "countdown" in changes or "eta" in changes:
            values["countdown"] = values["eta"] = None
        values.update(changes)
        return SubmitOptions(**values)

    def replace(self, **changes: Unpack[SubmitOptionArgs]) -> SubmitOptions:
        """These options with the ones given (not None) replacing them; see :meth:`merged`."""
        return self.merged(SubmitOptions(**changes))

    def for_batch(self) -> SubmitOptions:
        """These options, checked to make sense for many tasks at once (``delay_many``).

        Raises:
            InvalidOptions: an option that names one task (``task_id``) is given.
        """
        for name in _PER_TASK_NAMES:
            if getattr(self, name) is not None:
                instead = (
                    "give each call its own with task_ids=[...]" if name == "task_id" else "submit that task alone"
                )
                raise InvalidOptions(f"{name} names one task and cannot be shared by a batch; {instead}")
        return self

    def as_kwargs(self) -> SubmitOptionArgs:
        """Every option as keyword arguments (None for those not given), for ``send(..., **options.as_kwargs())``."""
        return cast(SubmitOptionArgs, {name: getattr(self, name) for name in _FIELD_NAMES})

    def apply(self, spec: task_pb2.TaskSpec) -> None:
        """Write the options into spec's wire fields (a fresh UUID4 when no task_id is given).

        This is the only place that maps options to the wire.
        """
        spec.task_id = self.task_id if self.task_id is not None else new_task_id()
        if self.priority is not None:
            spec.priority = Priority.parse(self.priority).to_wire()
        if self.queue is not None:
            spec.queue = self.queue
        if self.countdown is not None or self.eta is not None:
            countdown = None if self.countdown is None else _seconds_of(self.countdown)
            spec.eta = _eta_seconds(countdown, self.eta)
        if self.expires is not None:
            expires = self.expires
            spec.expires = (
                time.time() + _seconds_of(expires) if isinstance(expires, timedelta) else _unix_seconds(expires)
            )
        if self.unique_key is not None:
            spec.unique_key = self.unique_key
        if self.depends_on:
            spec.dependencies.task_ids.extend(cast("tuple[str, ...]", self.depends_on))  # ids by __post_init__


class BatchOptionArgs(TypedDict, total=False):
    """The :class:`SubmitOptions` a batch of tasks can share, as keyword arguments (``delay_many``)."""

    priority: Priority | str | None
    queue: str | None
    countdown: float | timedelta | None
    eta: datetime | float | None
    expires: datetime | float | timedelta | None
    depends_on: Sequence[TaskRef] | None


class SubmitOptionArgs(BatchOptionArgs, total=False):
    """Every :class:`SubmitOptions` field as keyword arguments, for ``**options: Unpack[SubmitOptionArgs]``."""

    task_id: str | None
    unique_key: str | None


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SubmitOptions))
_PER_TASK_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SubmitOptions) if not f.metadata["flag"].batch)
#: The reserved keyword names that ``delay``/``submit`` take as options, not as task arguments.
SUBMIT_OPTION_NAMES: frozenset[str] = frozenset(_FIELD_NAMES)
_NO_OPTIONS = SubmitOptions()

#: One call of ``delay_many``: ``(name, args)`` or ``(name, args, kwargs)``.
BatchCall = tuple[str, Sequence[Any]] | tuple[str, Sequence[Any], Mapping[str, Any]]


def batch_calls(
    calls: Iterable[BatchCall], options: SubmitOptions, task_ids: Sequence[str | None] | None = None
) -> Iterator[tuple[int, str, Sequence[Any], Mapping[str, Any], SubmitOptions]]:
    """Each call of a ``delay_many``, checked: (its index, name, args, kwargs, its options), in order.

    Every call and id is checked before the first is yielded, so a caller that submits as it goes
    (the eager client) submits nothing when one is bad. ``task_ids[i]`` gives call i its id (None:
    a fresh one): sending a batch again with the ids its error listed queues each call at most once.

    Raises:
        InvalidOptions: a call that is not ``(name, args)`` or ``(name, args, kwargs)``, a task
            option for the whole batch, or ``task_ids`` that do not match the calls one to one or
            repeat an id (the message names the call).
    """
    shared = options.for_batch()
    listed = [_call_parts(index, call) for index, call in enumerate(calls)]
    if task_ids is None:
        for index, (name, args, kwargs) in enumerate(listed):
            yield index, name, args, kwargs, shared
        return
    if isinstance(task_ids, str) or len(task_ids) != len(listed):
        count = "a string" if isinstance(task_ids, str) else f"{len(task_ids)} ids"
        raise InvalidOptions(f"task_ids must list one id (or None) per call: {count} for {len(listed)} calls")
    per_call = [
        shared if task_id is None else _with_task_id(shared, index, task_id) for index, task_id in enumerate(task_ids)
    ]
    first_with: dict[str, int] = {}
    for index, task_id in enumerate(task_ids):
        if task_id is not None and first_with.setdefault(task_id, index) != index:
            # One id is queued at most once: the later call would be answered with the first one's task.
            raise InvalidOptions(
                f"task_ids[{index}] repeats task_ids[{first_with[task_id]}] ({shown(task_id)}): one id per call"
            )
    for index, ((name, args, kwargs), call_options) in enumerate(zip(listed, per_call, strict=True)):
        yield index, name, args, kwargs, call_options


_PLAIN_ARGS = (tuple, list)


def _call_parts(index: int, call: object) -> tuple[str, Sequence[Any], Mapping[str, Any]]:
    """Call ``index`` of a batch as (name, args, kwargs).

    Raises:
        InvalidOptions: it is not ``(name, args)`` or ``(name, args, kwargs)`` with a sequence of
            arguments and a mapping of keyword arguments.
    """
    parts = call if isinstance(call, tuple | list) else ()
    if len(parts) in (2, 3):
        name, args, kwargs = parts[0], parts[1], parts[2] if len(parts) == 3 else {}
        # (Exact types first: the ABC checks cost about a microsecond a call, in batches of thousands.)
        if (
            isinstance(name, str)
            and name
            and (type(args) in _PLAIN_ARGS or (isinstance(args, Sequence) and not isinstance(args, str | bytes)))
            and (type(kwargs) is dict or isinstance(kwargs, Mapping))
        ):
            return name, args, kwargs
    raise InvalidOptions(
        f"calls[{index}] must be (name, args) or (name, args, kwargs), with a task name, a tuple or list of"
        f" arguments and a dict of keyword arguments; got {repr(call)[:MAX_SHOWN_CALL]}"
    )


def _with_task_id(shared: SubmitOptions, index: int, task_id: str) -> SubmitOptions:
    """The batch's options with call ``index``'s own id.

    Raises:
        InvalidOptions: a bad id (the message names ``task_ids[index]``).
    """
    try:
        return shared.replace(task_id=task_id)
    except InvalidOptions as exc:
        raise InvalidOptions(f"task_ids[{index}]: {exc}") from None


def call_payload_error(index: int, name: str, error: PayloadError) -> PayloadError:
    """A batch call's PayloadError naming that call (``calls[3] ('add')``): in 1,000 calls, which one."""
    return PayloadError(f"calls[{index}] ({shown(name)}): {error}")


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--<option>`` flag per :class:`SubmitOptions` field (``--task-id`` for ``task_id``), each default None."""
    for option in fields(SubmitOptions):
        flag: _Flag = option.metadata["flag"]
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            dest=option.name,
            type=flag.parse,
            choices=flag.choices,
            default=None,
            metavar=flag.metavar,
            help=flag.help,
        )


def options_from_namespace(namespace: argparse.Namespace) -> SubmitOptions:
    """The SubmitOptions given by the flags :func:`add_submit_arguments` added.

    Raises:
        ValueError: the values do not go together (e.g. countdown with eta); a usage error.
    """
    return SubmitOptions(**{name: getattr(namespace, name, None) for name in _FIELD_NAMES})


def _task_ids(name: str, value: object) -> tuple[str, ...]:
    """Task ids from a sequence of ids or of handles (anything with an ``id``), checked."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise ValueError(f"{name} must be a list of task ids, not {type(value).__qualname__}")
    ids: list[str] = []
    for item in value:
        task_id = getattr(item, "id", item)
        if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_KEY_LENGTH:
            raise ValueError(
                f"{name} must hold task ids (non-empty strings of at most {MAX_KEY_LENGTH} characters),"
                f" not {_shown_value(task_id)}"
            )
        ids.append(task_id)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name} names a task twice")
    return tuple(ids)


def _shown_value(value: object) -> str:
    """A refused key or id as a message quotes it: cut to its start (it may be 10,000 characters long)."""
    return shown(value) if isinstance(value, str) else f"{value!r:.{MAX_SHOWN}}"


def _check_number(name: str, value: object, *, what: str = "a number of seconds", negative_ok: bool = False) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name} must be {what}, not {type(value).__qualname__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if value < 0 and not negative_ok:
        raise ValueError(f"{name} cannot be negative")


#: Latest ``eta``/``expires`` a submission may give: the end of year 9999, in Unix seconds (what a
#: datetime can hold; the control plane refuses later ones too).
LATEST_UNIX_SECONDS = 253402300799.0

#: Numbers below this are refused as ``eta``/``expires`` (Unix seconds before 2001-09-09): they are
#: durations meant as "from now" (Celery's ``expires=60``), and would expire or start every task at once.
EARLIEST_UNIX_SECONDS = 1_000_000_000


def _year(unix_seconds: float) -> int:
    return datetime.fromtimestamp(unix_seconds, UTC).year


def _seconds_of(duration: float | timedelta) -> float:
    """Seconds in a number or a ``timedelta``."""
    return duration.total_seconds() if isinstance(duration, timedelta) else duration


def _unix_seconds(when: datetime | float) -> float:
    """Unix seconds for a datetime (naive means UTC) or a number."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return float(when)


def _eta_seconds(countdown: float | None, eta: datetime | float | None) -> float:
    """The wire ``eta``: Unix seconds to queue at, or 0.0 for at once (a countdown of 0 or less).

    Raises:
        ValueError: both are given.
    """
    if countdown is not None and eta is not None:
        raise ValueError("give countdown or eta, not both")
    if countdown is not None:
        return time.time() + countdown if countdown > 0 else 0.0
    if eta is None:
        return 0.0
    return _unix_seconds(eta)
