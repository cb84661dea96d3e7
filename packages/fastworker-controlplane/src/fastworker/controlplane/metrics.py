"""What the control plane counts per task name for ``/metrics``: totals by outcome and time histograms.

Kept as plain integers and bucket lists, updated where the coordinator changes a task's state (a
few attribute writes per task); the Prometheus families are built from a copy only when scraped
(``fastworker.controlplane.metricsserver``). Starts are counted under the coordinator's lock (slot
threads start local tasks); everything else on the loop, which also takes the copies.

Label cardinality is bounded: at most :data:`MAX_TASK_NAMES` task names (names beyond are counted
under ``task="__other__"``) and :data:`MAX_EXCEPTION_TYPES` exception types per name (likewise), so
a fleet registering thousands of names costs a bounded number of series.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the runtime and queue-wait histograms' buckets (+Inf is implied).
TIME_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
#: Task names given their own label value; further names share :data:`OTHER`.
MAX_TASK_NAMES = 1000
#: Exception types given their own label value per task name; further types share :data:`OTHER`.
MAX_EXCEPTION_TYPES = 20
#: The label value of everything beyond a bound.
OTHER = "__other__"
#: Longest label value kept (longer ones are cut): a label is for reading, not for storing payloads.
MAX_LABEL_LENGTH = 200


class Histogram:
    """Counts per bucket (the last one is +Inf) and the sum of observed values."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(TIME_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Add one observation (negative values, from clocks of different hosts, count as 0)."""
        if seconds < 0.0:
            seconds = 0.0
        self.counts[bisect_left(TIME_BUCKETS, seconds)] += 1
        self.sum += seconds

    def copy(self) -> Histogram:
        """An independent copy (for a scrape)."""
        twin = Histogram()
        twin.counts = list(self.counts)
        twin.sum = self.sum
        return twin


@dataclass
class NameCounts:
    """One task name's totals and histograms."""

    submitted: int = 0
    started: int = 0
    succeeded: int = 0
    retried: int = 0
    cancelled: int = 0
    #: Final failures by the error's type (the task's exception, or e.g. TimeLimitExceeded).
    failed: dict[str, int] = field(default_factory=dict)
    #: Seconds each attempt that ran took (a retried attempt included).
    runtime: Histogram = field(default_factory=Histogram)
    #: Seconds from when an attempt could run (queued, its eta or retry due) to its start.
    queue_wait: Histogram = field(default_factory=Histogram)
    #: A periodic task's slots that got no run, by reason (``periodic.SkipReason``: a handful of values).
    periodic_skipped: dict[str, int] = field(default_factory=dict)

    def copy(self) -> NameCounts:
        """An independent copy (for a scrape)."""
        return NameCounts(
            self.submitted,
            self.started,
            self.succeeded,
            self.retried,
            self.cancelled,
            dict(self.failed),
            self.runtime.copy(),
            self.queue_wait.copy(),
            dict(self.periodic_skipped),
        )


def _label(value: str) -> str:
    return value if len(value) <= MAX_LABEL_LENGTH else value[:MAX_LABEL_LENGTH]


class TaskMetrics:
    """Per task name totals and time histograms, fed by the coordinator."""

    def __init__(self) -> None:
        self._names: dict[str, NameCounts] = {}

    def _for(self, name: str) -> NameCounts:
        counts = self._names.get(name)  # the common case first: a name of a label's length, seen before
        if counts is None:
            # Stored under its cut name, or a long name would start afresh each time.
            name = _label(name)
            counts = self._names.get(name)
        if counts is None:
            if len(self._names) >= MAX_TASK_NAMES:
                name = OTHER
                counts = self._names.get(name)
            if counts is None:
                counts = self._names[name] = NameCounts()
        return counts

    # The four calls below run for every task: the name's counts are looked up inline (``_for`` only
    # for a name not seen yet).

    def submitted(self, name: str) -> None:
        """A task was accepted (loop)."""
        (self._names.get(name) or self._for(name)).submitted += 1

    def started(self, name: str, waited: float) -> None:
        """An attempt started after ``waited`` seconds in the queue (under the coordinator's lock)."""
        counts = self._names.get(name) or self._for(name)
        counts.started += 1
        histogram = counts.queue_wait  # Histogram.observe, inline
        if waited < 0.0:
            waited = 0.0
        histogram.counts[bisect_left(TIME_BUCKETS, waited)] += 1
        histogram.sum += waited

    def ran(self, name: str, seconds: float) -> None:
        """An attempt that started ended after ``seconds`` (loop)."""
        histogram = (self._names.get(name) or self._for(name)).runtime  # Histogram.observe, inline
        if seconds < 0.0:
            seconds = 0.0
        histogram.counts[bisect_left(TIME_BUCKETS, seconds)] += 1
        histogram.sum += seconds

    def succeeded(self, name: str) -> None:
        """A task ended in SUCCESS (loop)."""
        (self._names.get(name) or self._for(name)).succeeded += 1

    def failed(self, name: str, error_type: str) -> None:
        """A task ended in FAILURE with this error type (its last attempt's)."""
        failed = self._for(name).failed
        key = _label(error_type or "Error")
        if key not in failed and len(failed) >= MAX_EXCEPTION_TYPES:
            key = OTHER
        failed[key] = failed.get(key, 0) + 1

    def retried(self, name: str) -> None:
        """A failed attempt is retried, or a task taken back from a lost worker is re-queued (loop)."""
        self._for(name).retried += 1

    def cancelled(self, name: str) -> None:
        """A task ended in CANCELLED, expired ones included (loop)."""
        self._for(name).cancelled += 1

    def periodic_slots_skipped(self, name: str, reason: str, count: int) -> None:
        """``count`` slots of a periodic task got no run, for ``reason`` (loop)."""
        skipped = self._for(name).periodic_skipped
        skipped[reason] = skipped.get(reason, 0) + count

    def snapshot(self) -> dict[str, NameCounts]:
        """A copy of every name's counts (on the loop, under the coordinator's lock)."""
        return {name: counts.copy() for name, counts in self._names.items()}
