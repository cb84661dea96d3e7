"""The control plane's one authoritative scheduler of periodic tasks (``@task(every=...)`` and ``@task(cron=...)``).

Where a task's schedule comes from (docs/scheduling.md, "Where schedules come from"): a schedule is
an option of the task's definition, and the definition in force is chosen as for every other
option (``fastworker.worker.policy``): the control plane's own (its ``--task-modules``) when it
loaded the task, else that of the earliest-registered connected subworker that defines it. A
definition in force without ``every``/``cron`` means "not periodic". Another subworker whose
schedule differs is logged once and changes nothing; when the subworker in force leaves, the next
earliest one's definition applies (logged); when no connected subworker defines the task any
more, it is not scheduled (no runs are queued that nobody could run). Whatever changes, one task
has one schedule here, and a schedule that takes over resumes after the task's last run, so no
slot runs twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from fastworker.client.task import check_every, check_timezone, cron_shape_problem
from fastworker.controlplane.lograte import RateLimitedLog
from fastworker.protocol.v1.task_pb2 import TaskDefinition

if TYPE_CHECKING:
    # No py.typed in croniter itself: types-croniter supplies the stubs where installed; the ignore
    # (also marked unused-ignore) keeps mypy --strict clean both with and without them.
    from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "CRON_SCAN_LIMIT",
    "Definer",
    "MAX_CATCH_UP",
    "MAX_TIMER_DELAY",
    "MISFIRE_GRACE",
    "PERIODIC_LEAD",
    "MisfirePolicy",
    "PeriodicScheduler",
    "PeriodicSpec",
    "SkipReason",
    "schedule_of",
]

logger = logging.getLogger(__name__)

#: Most missed slots that :attr:`MisfirePolicy.RUN_ALL` runs for one gap (the latest ones).
MAX_CATCH_UP = 100
#: Shortest ``every`` (seconds) whose restart trap is logged when nothing remembers last runs: a
#: control plane redeployed more often than that would never run the task.
FORGETFUL_EVERY_WARNING = 300.0
#: Default seconds a slot may be late and still count as on time rather than missed.
MISFIRE_GRACE = 1.0
#: Longest the timer sleeps before re-reading the clock, in seconds, so that a wall-clock jump or a
#: suspended machine cannot hold a slot back for longer than this.
MAX_TIMER_DELAY = 60.0
#: Most missed cron slots counted one by one after a gap; beyond it the count stops there
#: (about 16 hours of a minutely cron) so that catching up never blocks the event loop for long.
CRON_SCAN_LIMIT = 1000


#: Cron's ``@`` shorthands that stand for a 5-field expression.
class MisfirePolicy(StrEnum):
    """What to do with slots that passed while nothing could fire them (downtime, a late wake-up).

    A slot counts as missed when a later slot is also already due, or when it is more than the
    scheduler's ``misfire_grace`` seconds late.
    """

    #: Run once now for all the missed slots, then resume the schedule.
    RUN_ONCE = "run_once"
    #: Drop the missed slots and wait for the next one.
    SKIP = "skip"
    #: Run every missed slot, at most :data:`MAX_CATCH_UP` of them (the latest).
    RUN_ALL = "run_all"


class SkipReason(StrEnum):
    """Why a slot got no run: the ``reason`` label of ``fastworker_periodic_slots_skipped_total``.

    Every slot becomes a run or is counted under exactly one reason, so a task quietly running at a
    fraction of its rate shows on ``/metrics``.
    """

    #: The previous run was still pending or running (and the task does not ``allow_overlap``).
    OVERLAP = "overlap"
    #: The slot passed unfired (downtime, a stall) and the misfire policy did not run it: ``skip``
    #: drops it, ``run_once`` folds it into the one run, ``run_all`` drops those beyond
    #: :data:`MAX_CATCH_UP`; under ``skip``, a run queued ahead of its slot but released too late.
    MISSED = "missed"
    #: The control plane refused the run (e.g. ``--max-queue`` reached).
    REFUSED = "refused"
    #: Submitting the run raised (logged with its traceback).
    ERROR = "error"


def _count_nothing(name: str, reason: SkipReason, count: int) -> None:
    """The default ``count_skipped``: a scheduler without metrics."""


#: How long the scheduler waits before firing again after a failure, in seconds.
RETRY_AFTER_ERROR = 1.0
#: Seconds between two log lines about one task's slots skipped for a run still in progress (each
#: line says how many were left out; ``fastworker_periodic_slots_skipped_total`` counts them all).
OVERLAP_LOG_INTERVAL = 60.0
#: Seconds before its slot that the control plane queues a periodic run, SCHEDULED until the slot
#: (at most half the task's ``every``): runs are visible before they start, as countdowns are.
PERIODIC_LEAD = 1.0


def schedule_problem(name: str, every: float, cron: str, timezone: str = "") -> str | None:
    """Why a task definition's schedule (``every`` > 0 or ``cron`` set) is unusable, or None if it is fine."""
    if not every and not cron:
        return None
    try:
        PeriodicSpec(name, every or None, cron or None, timezone=timezone or None)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def schedule_of(definition: TaskDefinition) -> PeriodicSpec | None:
    """The schedule a task definition gives (with its ``allow_overlap``), or None when it is not periodic.

    Raises:
        ValueError: The schedule is unusable (see :func:`schedule_problem`).
        TypeError: A value has the wrong type.
    """
    if not definition.every and not definition.cron:
        return None
    return PeriodicSpec(
        definition.name,
        definition.every or None,
        definition.cron or None,
        allow_overlap=definition.allow_overlap,
        timezone=definition.timezone or None,
    )


@dataclass(frozen=True, slots=True)
class PeriodicSpec:
    """One periodic task: its name and its schedule.

    Attributes:
        name: The registered task name.
        every: Run every this many seconds, or None.
        cron: Run on this 5-field cron expression (minute hour day-of-month month day-of-week,
            evaluated in ``timezone``; cron's ``@hourly``-style shorthands are accepted too), or None.
        allow_overlap: Fire a slot even while an earlier run of the task is still pending or
            running; by default such a slot is skipped.
        timezone: The IANA time zone the cron expression is read in (None: UTC), daylight saving
            time included: "0 3 * * *" in "Europe/Paris" is 01:00 UTC in summer, 02:00 in winter.

    Raises:
        ValueError: Both or neither of ``every`` and ``cron`` are set, ``every`` is under
            ``MIN_EVERY`` (0.1 s), the cron expression is invalid or never matches, or the name is empty.
        TypeError: A value has the wrong type.
    """

    name: str
    every: float | None
    cron: str | None
    allow_overlap: bool = False
    timezone: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"periodic task name must be a str, not {type(self.name).__qualname__}")
        if not self.name or self.name != self.name.strip():
            raise ValueError(f"periodic task name must be non-empty, without surrounding whitespace, got {self.name!r}")
        where = f"periodic task {self.name!r}"
        if self.every is None and self.cron is None:
            raise ValueError(f"{where}: give a schedule, every or cron (neither is set)")
        if self.every is not None and self.cron is not None:
            raise ValueError(f"{where}: every and cron are mutually exclusive: give one schedule, not both")
        if not isinstance(self.allow_overlap, bool):
            raise TypeError(f"{where}: allow_overlap must be a bool, not {type(self.allow_overlap).__qualname__}")
        if self.every is not None:
            try:  # the client's rule, so a subworker's definition is held to what @task accepts
                every = check_every(self.every)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{where}: {exc}") from None
            object.__setattr__(self, "every", every)
        if self.timezone is not None:
            if self.cron is None:
                raise ValueError(f"{where}: timezone applies to a cron schedule, not to every")
            try:
                check_timezone(self.timezone)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{where}: {exc}") from None
        if self.cron is not None:
            _check_cron(where, self.cron, self.timezone)


def _check_cron(where: str, expr: object, tz: str | None = None) -> None:
    """Raise unless expr is a 5-field cron expression that croniter accepts and that ever matches."""
    if not isinstance(expr, str):
        raise TypeError(f"{where}: cron must be a str, not {type(expr).__qualname__}")
    problem = cron_shape_problem(expr)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")
    try:
        following = _cron_after(expr, 0.0, tz)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:  # croniter's errors are ValueErrors
        raise ValueError(f"{where}: invalid cron expression {expr!r}: {exc}") from None
    if following is None:
        raise ValueError(f"{where}: cron expression {expr!r} never matches a date")


def _cron(expr: str, t: float, tz: str | None) -> croniter:
    """A croniter over expr from POSIX time t: in UTC, or read in the time zone ``tz``.

    croniter (and dateutil under it, ~1 MiB) is imported with the first cron schedule, not at start.
    """
    from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

    return croniter(expr, t if tz is None else datetime.fromtimestamp(t, ZoneInfo(tz)))


def _next_slot(it: croniter) -> float | None:
    """The iterator's next slot, or None past croniter's horizon (the schedule has ended)."""
    from croniter import CroniterBadDateError  # type: ignore[import-untyped, unused-ignore]

    try:
        return float(it.get_next(float))
    except CroniterBadDateError:
        return None


def _cron_after(expr: str, t: float, tz: str | None = None) -> float | None:
    """The first slot of expr strictly after POSIX time t, or None when there is none."""
    return _next_slot(_cron(expr, t, tz))


def _cron_before(expr: str, t: float, count: int, tz: str | None = None) -> list[float]:
    """Up to count slots of expr at or before POSIX time t, latest first."""
    # 5-field slots fall on whole minutes, so "at or before t" is "strictly before floor(t) + 1".
    it = _cron(expr, float(math.floor(t) + 1), tz)
    return [float(it.get_prev(float)) for _ in range(count)]


class Definer(Protocol):
    """A registered subworker as :meth:`PeriodicScheduler.follow_fleet` reads it (``fleet.WorkerRecord``)."""

    @property
    def worker_id(self) -> str:
        """Its worker id."""
        ...

    @property
    def definitions(self) -> Mapping[str, TaskDefinition]:
        """Its task definitions by name (a new mapping when it registers again)."""
        ...


class _Slots(Protocol):
    """A task's schedule: its next slot, and how to consume the slots that are due."""

    @property
    def next_due(self) -> float | None: ...

    def take_due(self, now: float, keep: int) -> tuple[int, list[float]]:
        """Consume every slot at or before now; return how many there were and the latest keep of them, oldest first.

        The caller checks first that ``next_due`` is at or before now, so there is at least one.
        """
        ...


class _EverySlots:
    """Slots ``anchor + n * every`` for n = 1, 2, ..., computed from the index so they never drift."""

    def __init__(self, every: float, anchor: float) -> None:
        self.every = every
        self.anchor = anchor
        self.index = 1

    def _slot(self, index: int) -> float:
        return self.anchor + index * self.every

    @property
    def next_due(self) -> float:
        return self._slot(self.index)

    def take_due(self, now: float, keep: int) -> tuple[int, list[float]]:
        last = max(self.index, math.floor((now - self.anchor) / self.every))
        while last > self.index and self._slot(last) > now:  # undo float rounding of the division
            last -= 1
        while self._slot(last + 1) <= now:
            last += 1
        count = last - self.index + 1
        kept = [self._slot(i) for i in range(max(self.index, last - keep + 1), last + 1)]
        self.index = last + 1
        return count, kept


class _CronSlots:
    """The matching minutes of a cron expression, in UTC or in the schedule's time zone."""

    def __init__(self, expr: str, after: float, tz: str | None = None) -> None:
        self.expr = expr
        self.tz = tz
        self.next_due: float | None = _cron_after(expr, after, tz)

    def take_due(self, now: float, keep: int) -> tuple[int, list[float]]:
        first = self.next_due
        assert first is not None and first <= now, "take_due called with nothing due"
        kept: deque[float] = deque([first], maxlen=keep)
        count = 1
        it = _cron(self.expr, first, self.tz)
        while True:
            slot = _next_slot(it)
            if slot is None:
                self.next_due = None
                break
            if slot > now:
                self.next_due = slot
                break
            count += 1
            kept.append(slot)
            if count >= CRON_SCAN_LIMIT:  # a long gap: stop counting and jump to the present
                self.next_due = _cron_after(self.expr, now, self.tz)
                return count, sorted(_cron_before(self.expr, now, keep, self.tz))
        return count, list(kept)


@dataclass(slots=True)
class _Entry:
    """A registered periodic task, its schedule, where the schedule comes from, and its counters."""

    spec: PeriodicSpec
    slots: _Slots
    last_fired: float | None
    #: Logs slots skipped for a run in progress: a task outlasting its interval skips one each time, for ever.
    overlap_log: RateLimitedLog
    #: The subworker whose definition gives the schedule; None: the control plane's own.
    source: str | None = None
    fired: int = 0
    skipped_overlap: int = 0
    misfired: int = 0
    refused: int = 0
    errors: int = 0


class PeriodicScheduler:
    """Fires periodic tasks on schedule: the control plane's single scheduler, never one per worker.

    Pure and clock-injected: it reads time only through ``clock`` and touches the event loop only
    for the one timer that :meth:`start` arms. It is not thread-safe; use it from the loop's thread.

    Each schedule is a series of slots (UTC POSIX times). Without a recorded last run, a task's
    first slot is the first one after it was added: ``start + every``, or the next matching cron
    minute. Firing a slot calls ``submit(name, slot)``, unless the task does not allow overlap and
    ``is_running(name)`` says an earlier run is still pending or running; then the slot is skipped
    and counted. Slots that passed unfired (downtime, a late wake-up) are handled by the misfire
    policy. ``stats`` reports, per task: ``fired`` (runs submitted), ``skipped_overlap``,
    ``misfired`` (slots found missed, whatever the policy then did; for cron, at most
    :data:`CRON_SCAN_LIMIT` per gap), ``refused`` (``submit`` returned None), ``errors``
    (``submit`` or ``is_running`` raised; logged), ``next_due`` and ``last_fired`` (the slot time of
    the latest submitted run); the last two are 0.0 when there is none.

    With :attr:`MisfirePolicy.RUN_ALL`, every missed slot goes through the overlap check in turn,
    so a task without ``allow_overlap`` normally runs only the first of them (the rest find it
    pending): give ``allow_overlap=True`` to catch up on every one.

    Args:
        specs: The periodic tasks known at start; more can be added with :meth:`add`.
        submit: Queues one run of a task for the given slot time and returns its task id, or None
            when the run was refused (e.g. the queue is full).
        is_running: Says whether an earlier run of the task is still PENDING or RUNNING.
        count_skipped: Told of slots that got no run: ``(name, reason, how many)`` (the
            ``fastworker_periodic_slots_skipped_total`` counter).
        clock: Current POSIX time in seconds.
        misfire: What to do with missed slots (a :class:`MisfirePolicy` or its value).
        last_runs: When each task last fired (slot times, as :attr:`last_runs` reports them), for
            example from the journal after a restart; the schedule resumes from there and the
            misfire policy decides about the slots missed since. Names not yet added are kept
            for when they are.
        misfire_grace: Seconds a slot may be late and still run as on time.
        local_names: Every task name the control plane itself defines, periodic or not: for these its
            own definition decides, and subworkers' schedules are ignored (see :meth:`follow_fleet`).
        lead: Seconds before its slot that a run is submitted (at most half the task's ``every``):
            ``submit`` then gets a slot still ahead, and queues the run for that time. The overlap
            rule and the misfire policy look at the time of submission. 0: at the slot.

    Raises:
        ValueError: An unknown misfire policy, a negative grace or a non-finite last run time.
        TypeError: A spec is not a :class:`PeriodicSpec`.
    """

    def __init__(
        self,
        specs: Iterable[PeriodicSpec],
        *,
        submit: Callable[[str, float], str | None],
        is_running: Callable[[str], bool],
        count_skipped: Callable[[str, SkipReason, int], None] = _count_nothing,
        clock: Callable[[], float] = time.time,
        misfire: MisfirePolicy | str = MisfirePolicy.RUN_ONCE,
        last_runs: Mapping[str, float] | None = None,
        misfire_grace: float = MISFIRE_GRACE,
        local_names: Iterable[str] = (),
        lead: float = 0.0,
    ) -> None:
        if not math.isfinite(lead) or lead < 0:
            raise ValueError(f"lead must be a finite number of seconds, 0 or more, got {lead!r}")
        self.lead = float(lead)
        self._submit = submit
        self._is_running = is_running
        self._count_skipped = count_skipped
        self._clock = clock
        self.misfire = MisfirePolicy(misfire)
        if not math.isfinite(misfire_grace) or misfire_grace < 0:
            raise ValueError(f"misfire_grace must be a finite number of seconds, 0 or more, got {misfire_grace!r}")
        self.misfire_grace = float(misfire_grace)
        #: Whether last runs survive a restart (``--journal``): else an ``every`` count starts at each start.
        self._remembers = last_runs is not None
        #: Tasks whose restart trap was logged (once per task and start).
        self._warned_forgetful: set[str] = set()
        self._restored: dict[str, float] = {}
        for name, at in (last_runs or {}).items():
            if not math.isfinite(at):
                raise ValueError(f"last run of periodic task {name!r} must be a finite POSIX time, got {at!r}")
            self._restored[name] = float(at)
        self._entries: dict[str, _Entry] = {}
        #: The control plane's own definitions: name -> its schedule, or None for a task it runs unscheduled.
        self._own: dict[str, PeriodicSpec | None] = dict.fromkeys(local_names)
        #: (worker id, task name) whose differing schedule was logged; forgotten when the worker leaves.
        self._warned: set[tuple[str, str]] = set()
        #: Each connected worker's definitions as last read, and the schedules among them.
        self._read: dict[str, tuple[Mapping[str, TaskDefinition], dict[str, PeriodicSpec]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        for spec in specs:
            self.add(spec)

    # ------------------------------------------------------------------------------------ registry

    def add(self, spec: PeriodicSpec) -> None:
        """Start scheduling a task the control plane itself defines; a name already scheduled is left as it is.

        Raises:
            TypeError: spec is not a :class:`PeriodicSpec`.
        """
        if not isinstance(spec, PeriodicSpec):
            raise TypeError(f"add() takes a PeriodicSpec, not {type(spec).__qualname__}")
        if self._own.get(spec.name) is None:
            self._own[spec.name] = spec
        existing = self._entries.get(spec.name)
        if existing is not None:
            if existing.spec != spec:
                logger.warning(
                    "periodic task %r is already scheduled as %s; ignoring the different schedule %s",
                    spec.name,
                    _describe(existing.spec),
                    _describe(spec),
                )
            return
        self._start(spec, None, self._restored.pop(spec.name, None))
        if self._loop is not None:
            self._arm()

    def _start(self, spec: PeriodicSpec, source: str | None, last: float | None) -> None:
        """Schedule spec from the task's last run ``last``, else from now."""
        self._entries[spec.name] = _Entry(
            spec=spec,
            slots=self._slots(spec, last),
            last_fired=last,
            source=source,
            overlap_log=RateLimitedLog(logger, interval=OVERLAP_LOG_INTERVAL, clock=self._clock),
        )
        if spec.every is not None and spec.every >= FORGETFUL_EVERY_WARNING and not self._remembers:
            self._warn_forgetful(spec)

    def _warn_forgetful(self, spec: PeriodicSpec) -> None:
        """Say once per task (not again when its schedule comes back with a subworker) that restarts push it back."""
        if spec.name in self._warned_forgetful:
            return
        self._warned_forgetful.add(spec.name)
        logger.warning(
            "periodic task %r runs every %g s, next in %.0f s: without --journal the count starts again at"
            " every start of the control plane, so one restarted more often than that never runs it (cron="
            " runs on the clock; --journal remembers the last run)",
            spec.name,
            spec.every,
            max(0.0, (self._entries[spec.name].slots.next_due or 0.0) - self._clock()),
        )

    def _slots(self, spec: PeriodicSpec, last: float | None) -> _Slots:
        """The slots of ``spec`` after ``last`` (strictly: a slot that ran never runs again), else after now."""
        start = self._clock() if last is None else last
        if spec.every is not None:
            return _EverySlots(spec.every, start)
        assert spec.cron is not None  # PeriodicSpec guarantees exactly one schedule
        return _CronSlots(spec.cron, start, spec.timezone)

    def follow_fleet(self, workers: Iterable[Definer]) -> None:
        """Apply the connected subworkers' schedules by the one rule (see the module docstring).

        Call it with every registered subworker, earliest-registered first, whenever the fleet
        changes. Names the control plane defines keep their own schedule (or none); for the others
        the earliest definer's applies; a differing schedule of another worker is logged once. A
        worker's definitions are read once per registration, and only periodic names are looked
        at, so a fleet change costs O(workers x periodic names).
        """
        fleet = list(workers)
        read: dict[str, tuple[Mapping[str, TaskDefinition], dict[str, PeriodicSpec]]] = {}
        names = {name for name, entry in self._entries.items() if entry.source is not None}
        for worker in fleet:
            known = self._read.get(worker.worker_id)
            if known is None or known[0] is not worker.definitions:  # registered (again) since
                known = (worker.definitions, self._worker_schedules(worker))
            read[worker.worker_id] = known
            names.update(known[1])
        self._read = read
        self._warned = {key for key in self._warned if key[0] in read}
        for name in sorted(names):
            definers = [(w.worker_id, read[w.worker_id][1].get(name)) for w in fleet if name in w.definitions]
            self._settle(name, definers)
        if self._loop is not None:
            self._arm()

    @staticmethod
    def _worker_schedules(worker: Definer) -> dict[str, PeriodicSpec]:
        """A worker's periodic definitions; an unusable one counts as none (registration refuses those anyway)."""
        schedules: dict[str, PeriodicSpec] = {}
        for name, definition in worker.definitions.items():
            try:
                schedule = schedule_of(definition)
            except (ValueError, TypeError) as exc:
                logger.error("worker %s: unusable periodic schedule ignored: %s", worker.worker_id, exc)
                continue
            if schedule is not None:
                schedules[name] = schedule
        return schedules

    def _settle(self, name: str, definers: list[tuple[str, PeriodicSpec | None]]) -> None:
        """Put the schedule in force for one name into effect, and log workers that disagree with it."""
        own = name in self._own
        if own:
            in_force, source = self._own[name], None
        elif definers:
            source, in_force = definers[0]
        else:
            self._stop(name, "no connected subworker defines it any more")
            return
        for worker_id, schedule in definers:
            key = (worker_id, name)
            if worker_id == source or schedule == in_force:
                self._warned.discard(key)
            elif key not in self._warned:
                self._warned.add(key)
                logger.warning(
                    "periodic task %r: worker %s defines %s, but %s (%s) is in force; its schedule is ignored",
                    name,
                    worker_id,
                    _describe_or_none(schedule),
                    _describe_or_none(in_force),
                    _source(source),
                )
        if own:
            return  # scheduled (or not) from the start, whatever the fleet says
        assert source is not None
        entry = self._entries.get(name)
        if in_force is None:
            self._stop(name, f"the definition of {_source(source)}, now in force, has no schedule")
        elif entry is None:
            self._start(in_force, source, self._restored.pop(name, None))
            logger.info("periodic task %r: %s, from %s", name, _describe(in_force), _source(source))
        elif entry.spec != in_force:
            logger.info(
                "periodic task %r: now %s, from %s (was %s, from %s)",
                name,
                _describe(in_force),
                _source(source),
                _describe(entry.spec),
                _source(entry.source),
            )
            entry.spec, entry.slots, entry.source = in_force, self._slots(in_force, entry.last_fired), source
        elif entry.source != source:
            logger.info(
                "periodic task %r: %s, now from %s (was from %s)",
                name,
                _describe(in_force),
                _source(source),
                _source(entry.source),
            )
            entry.source = source

    def _stop(self, name: str, why: str) -> None:
        """Stop scheduling a task, keeping its last run for when a definer comes back."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        if entry.last_fired is not None:
            self._restored[name] = entry.last_fired
        logger.info("periodic task %r: no longer scheduled (%s): %s", name, _describe(entry.spec), why)

    @property
    def specs(self) -> tuple[PeriodicSpec, ...]:
        """Every scheduled task, in the order they were added."""
        return tuple(entry.spec for entry in self._entries.values())

    @property
    def sources(self) -> dict[str, str | None]:
        """Where each scheduled task's schedule comes from: a subworker's id, or None for the control plane's own."""
        return {name: entry.source for name, entry in self._entries.items()}

    # ------------------------------------------------------------------------------------ firing

    def next_due(self) -> float | None:
        """When the scheduler next submits a run (its slot less the lead), or None when nothing is scheduled."""
        dues = [
            due - self._lead(entry) for entry in self._entries.values() if (due := entry.slots.next_due) is not None
        ]
        return min(dues, default=None)

    def _lead(self, entry: _Entry) -> float:
        """How long before its slots a task's runs are submitted: the lead, at most half its ``every``."""
        every = entry.spec.every
        return self.lead if every is None else min(self.lead, every / 2)

    def fire_due(self) -> list[tuple[str, str | None]]:
        """Fire every slot due by ``clock()`` plus the lead, and advance each schedule per the misfire policy.

        Returns:
            One ``(name, task_id)`` per slot it tried to run, tasks in the order of their first due
            slot and each task's slots oldest first; task_id is None when the slot was skipped for
            overlap or refused. Slots the policy drops are not listed (``count_skipped`` hears of them).
        """
        clock = self._clock()
        due = [
            entry
            for entry in self._entries.values()
            if (at := entry.slots.next_due) is not None and at - self._lead(entry) <= clock
        ]
        due.sort(key=lambda entry: entry.slots.next_due or 0.0)
        fired: list[tuple[str, str | None]] = []
        for entry in due:
            now = clock + self._lead(entry)  # the slots submitted now are those up to a lead ahead
            count, kept = entry.slots.take_due(now, MAX_CATCH_UP)
            latest = kept[-1]
            on_time = now - latest <= self.misfire_grace
            missed = count - 1 if on_time else count
            runs: list[float]
            if missed == 0 or self.misfire is MisfirePolicy.RUN_ONCE:
                runs = [latest]
            elif self.misfire is MisfirePolicy.SKIP:
                runs = [latest] if on_time else []
            else:
                runs = kept
            if count > len(runs):
                self._count_skipped(entry.spec.name, SkipReason.MISSED, count - len(runs))
            results = [(entry.spec.name, self._fire(entry, slot)) for slot in runs]
            fired.extend(results)
            if missed:
                entry.misfired += missed
                started = sum(1 for _, task_id in results if task_id is not None)
                logger.info(
                    "periodic task %r missed %d slot(s) (%s): %d run now%s%s",
                    entry.spec.name,
                    missed,
                    self.misfire.value,
                    started,
                    f", {len(runs) - started} not started (the previous run goes on, or refused)"
                    if started < len(runs)
                    else "",
                    f"; the current slot ({now - latest:.2f} s late) is on time, the missed ones came before it"
                    if on_time
                    else "",
                )
        if self._loop is not None:
            self._arm()
        return fired

    def _fire(self, entry: _Entry, slot: float) -> str | None:
        """Submit one run of entry's task for slot, unless it would overlap a run still in progress."""
        name = entry.spec.name
        try:
            if not entry.spec.allow_overlap and self._is_running(name):
                entry.skipped_overlap += 1
                self._count_skipped(name, SkipReason.OVERLAP, 1)
                entry.overlap_log.warning(
                    "periodic task %r: skipping the slot at %.3f, the previous run has not finished", name, slot
                )
                return None
            task_id = self._submit(name, slot)
        except Exception:
            entry.errors += 1
            self._count_skipped(name, SkipReason.ERROR, 1)
            logger.exception("periodic task %r: submitting the run for the slot at %.3f failed", name, slot)
            return None
        if task_id is None:
            entry.refused += 1
            self._count_skipped(name, SkipReason.REFUSED, 1)
            logger.warning("periodic task %r: the run for the slot at %.3f was refused", name, slot)
            return None
        entry.fired += 1
        entry.last_fired = slot
        return task_id

    # ------------------------------------------------------------------------------------ timer

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fire due slots from a timer on loop, re-armed for the next slot after each firing (no polling).

        Calling it again moves the timer to the given loop. Call from the loop's thread.
        """
        self._loop = loop
        self._arm()

    def stop(self) -> None:
        """Cancel the timer; nothing fires until :meth:`start` is called again."""
        self._loop = None
        self._cancel_timer()

    @property
    def running(self) -> bool:
        """Whether :meth:`start` armed the scheduler (and :meth:`stop` has not been called since)."""
        return self._loop is not None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        """(Re-)arm the timer for the earliest next slot, at most :data:`MAX_TIMER_DELAY` away."""
        self._cancel_timer()
        loop = self._loop
        due = self.next_due()
        if loop is None or due is None:
            return
        delay = min(max(0.0, due - self._clock()), MAX_TIMER_DELAY)
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.fire_due()  # re-arms the timer itself
        except Exception:
            logger.exception("periodic scheduler: firing due tasks failed; retrying in %g s", RETRY_AFTER_ERROR)
            if self._loop is not None and self._timer is None:
                # Not _arm(): the failing slot is still due, and re-arming at once would spin.
                self._timer = self._loop.call_later(RETRY_AFTER_ERROR, self._on_timer)

    # ------------------------------------------------------------------------------------ state

    @property
    def last_runs(self) -> dict[str, float]:
        """When each task last fired (slot times), to journal and pass back as ``last_runs`` after a restart.

        Includes the restored times of tasks not added (yet).
        """
        runs = dict(self._restored)
        runs.update({name: entry.last_fired for name, entry in self._entries.items() if entry.last_fired is not None})
        return runs

    @property
    def stats(self) -> dict[str, dict[str, float | int]]:
        """Per task: fired, skipped_overlap, misfired, refused, errors, next_due and last_fired (0.0 for none)."""
        return {
            name: {
                "fired": entry.fired,
                "skipped_overlap": entry.skipped_overlap,
                "misfired": entry.misfired,
                "refused": entry.refused,
                "errors": entry.errors,
                "next_due": entry.slots.next_due or 0.0,
                "last_fired": entry.last_fired or 0.0,
            }
            for name, entry in self._entries.items()
        }


def _describe(spec: PeriodicSpec) -> str:
    """A spec's schedule as log messages show it."""
    schedule = f"every {spec.every:g} s" if spec.every is not None else f"cron {spec.cron!r}"
    if spec.timezone:
        schedule += f" in {spec.timezone}"
    return f"{schedule}{', overlapping' if spec.allow_overlap else ''}"


def _describe_or_none(spec: PeriodicSpec | None) -> str:
    return "no schedule" if spec is None else _describe(spec)


def _source(source: str | None) -> str:
    """Where a schedule comes from, as log messages say it."""
    return "the control plane's task modules" if source is None else f"worker {source}"
