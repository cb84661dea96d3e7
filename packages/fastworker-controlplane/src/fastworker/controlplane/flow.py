"""Fleet-wide flow control: per task name, a rate (token bucket) and a concurrency bound, exact.

The control plane sees every start, so it can hold limits across its own slots and every
subworker together without a round trip to anyone. A limited name gets a :class:`Gate`: its
waiting tasks queue there (in priority order, FIFO within a level) instead of in the main queue,
so a name held back never blocks the others, and a name without limits costs one empty-dict check
per queue operation. A task passes its gate when it starts (dispatched to a subworker's free slot,
or taken by a local slot): it takes a token and a running place, and gives the place back when it
leaves RUNNING (final, retried, or taken back from a lost worker).

:class:`GatedQueue` is the main :class:`~fastworker.controlplane.queue.PriorityQueue` with the
gates in front of it; the coordinator uses it as its queue. Like the queue it holds no lock: the
coordinator calls it under its own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from fastworker.client.limits import Rate
from fastworker.controlplane.queue import LEVELS, PriorityQueue
from fastworker.controlplane.records import TaskRecord

__all__ = ["NO_LIMITS", "Gate", "GatedQueue", "Limits"]

#: Seconds of start times a gate keeps to report its current rate.
RATE_WINDOW = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """A task name's limits: a start rate and a concurrency bound, each None for none."""

    rate: Rate | None = None
    max_concurrency: int | None = None

    @property
    def any(self) -> bool:
        """True if either limit is set."""
        return self.rate is not None or self.max_concurrency is not None


#: No limits at all.
NO_LIMITS = Limits()


class Gate:
    """One limited task name: its waiting tasks, its token bucket and its running count."""

    __slots__ = (
        "max_concurrency",
        "name",
        "overridden",
        "rate",
        "refilled_at",
        "running",
        "starts",
        "tokens",
        "waiting",
    )

    def __init__(self, name: str, paused: set[int], now: float) -> None:
        self.name = name
        #: Waiting tasks of this name; shares the main queue's paused levels.
        self.waiting = PriorityQueue()
        self.waiting.paused = paused
        self.rate: Rate | None = None
        self.max_concurrency: int | None = None
        #: True when an operator set the limits at run time.
        self.overridden = False
        #: Tasks of this name counted as running (each holds this gate in ``record.gate``).
        self.running = 0
        self.tokens = 0.0
        self.refilled_at = now
        #: Start times (monotonic) within the last ``RATE_WINDOW``.
        self.starts: deque[float] = deque()

    def configure(self, limits: Limits, now: float) -> None:
        """Set the limits; a new or changed rate starts with a full bucket (its burst)."""
        if limits.rate != self.rate:
            self.tokens = float(limits.rate.burst) if limits.rate is not None else 0.0
            self.refilled_at = now
        self.rate = limits.rate
        self.max_concurrency = limits.max_concurrency

    @property
    def limits(self) -> Limits:
        """The limits it holds."""
        return Limits(self.rate, self.max_concurrency)

    def _refill(self, now: float) -> None:
        rate = self.rate
        if rate is not None and now > self.refilled_at:
            self.tokens = min(float(rate.burst), self.tokens + (now - self.refilled_at) * rate.per_second)
        self.refilled_at = now

    def wait_for(self, now: float) -> float:
        """Seconds until a task of this name may start: 0 now, ``inf`` until a running one ends."""
        if self.max_concurrency is not None and self.running >= self.max_concurrency:
            return float("inf")
        if self.rate is None:
            return 0.0
        self._refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate.per_second

    def admit(self, record: TaskRecord, now: float) -> None:
        """Count ``record`` as started: it takes a token and a running place."""
        if self.rate is not None:
            self.tokens -= 1.0
        self.running += 1
        record.gate = self
        starts = self.starts
        starts.append(now)
        while starts and starts[0] <= now - RATE_WINDOW:
            starts.popleft()

    def current_rate(self, now: float) -> float:
        """Starts in the last ``RATE_WINDOW`` seconds, per second."""
        return sum(1 for at in self.starts if at > now - RATE_WINDOW) / RATE_WINDOW


class GatedQueue(PriorityQueue):
    """The priority queue of waiting tasks, with a gate in front of each limited task name.

    Args:
        clock: A monotonic clock for the token buckets (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        #: The gates of the limited names; empty when nothing is limited (the hot path's only check).
        self.gates: dict[str, Gate] = {}

    # ------------------------------------------------------------------------------------ limits

    def set_limits(
        self, name: str, limits: Limits, running: Iterator[TaskRecord], overridden: bool = False
    ) -> Gate | None:
        """Give a name its limits; returns its gate, or None when it has no limit.

        ``running``: the name's tasks running now, counted by a new gate. A name that gains limits
        moves its waiting tasks behind its gate; one that loses them moves them back (to the back
        of their levels).
        """
        now = self._clock()
        gate = self.gates.get(name)
        if not limits.any:
            if gate is not None:
                del self.gates[name]
                for record in gate.waiting.take_where(lambda _record: True):
                    super().push(record)
                for record in running:
                    if record.gate is gate:
                        record.gate = None
            return None
        if gate is None:
            gate = self.gates[name] = Gate(name, self.paused, now)
            for record in super().take_where(lambda record: record.name == name):
                gate.waiting.push(record)
            for record in running:
                if record.gate is None:
                    gate.running += 1
                    record.gate = gate
        gate.configure(limits, now)
        gate.overridden = overridden
        return gate

    def count_running(self, record: TaskRecord) -> None:
        """Count a task already RUNNING (replayed from a journal) at its name's gate, if the name has one: a place, no token.

        A gate made before the replay (from the control plane's own definitions) would otherwise let
        another task of the name start beside it while its worker has not adopted it yet.
        """
        gate = self.gates.get(record.name)
        if gate is not None and record.gate is None:
            gate.running += 1
            record.gate = gate

    def admit_prefetched(self, record: TaskRecord) -> bool:
        """Whether a prefetched task may start now that its worker asks to (True: it took a token and a place).

        Limited tasks are never prefetched, but a task prefetched before its name gained limits is
        still held by its worker: it takes no place until it starts, and starts only within the limits.
        """
        gate = self.gates.get(record.name)
        if gate is None or record.gate is not None:
            return True
        now = self._clock()
        if gate.wait_for(now) > 0:
            return False
        gate.admit(record, now)
        return True

    def release(self, record: TaskRecord) -> bool:
        """A task left RUNNING: give its gate's place back. True if tasks wait at that gate."""
        gate = record.gate
        if gate is None:
            return False
        record.gate = None
        gate.running -= 1
        return len(gate.waiting) > 0

    def retry_after(self) -> float | None:
        """Seconds until a gate whose tasks wait only for a token gets one; None if none does."""
        if not self.gates:
            return None
        now = self._clock()
        soonest: float | None = None
        for gate in self.gates.values():
            if len(gate.waiting):
                wait = gate.wait_for(now)
                if 0 < wait < float("inf") and (soonest is None or wait < soonest):
                    soonest = wait
        return soonest

    def startable(self) -> bool:
        """True if a task may start now: the main queue has one, or a gate with waiting tasks is open.

        Cheaper than ``len()`` with gates, and false while only tasks held by their limits wait (so
        idle slots are not woken for nothing).
        """
        if super().__len__():
            return True
        if not self.gates:
            return False
        now = self._clock()
        return any(len(gate.waiting) and gate.wait_for(now) == 0 for gate in self.gates.values())

    def now(self) -> float:
        """The gates' clock."""
        return self._clock()

    # ----------------------------------------------------------------------- the PriorityQueue API

    def __len__(self) -> int:
        """Waiting tasks, gated ones included."""
        total = super().__len__()
        if self.gates:
            total += sum(len(gate.waiting) for gate in self.gates.values())
        return total

    def depth(self, level: int) -> int:
        """Waiting tasks at one level, gated ones included."""
        depth = super().depth(level)
        if self.gates:
            depth += sum(gate.waiting.depth(level) for gate in self.gates.values())
        return depth

    def push(self, record: TaskRecord) -> None:
        """Queue a PENDING record at the back of its level, behind its gate if its name has one."""
        gates = self.gates
        if gates and record.name in gates:
            gates[record.name].waiting.push(record)
        else:
            PriorityQueue.push(self, record)  # not super(): this runs for every task

    def push_front(self, record: TaskRecord) -> None:
        """Put a record back at the front of its level, behind its gate if its name has one."""
        gates = self.gates
        if gates and record.name in gates:
            gates[record.name].waiting.push_front(record)
        else:
            super().push_front(record)

    def discard(self, record: TaskRecord) -> None:
        """Account for a record that left PENDING while queued, wherever it waits."""
        gates = self.gates
        if gates and record.name in gates:
            gates[record.name].waiting.discard(record)
        else:
            super().discard(record)

    def pop(
        self,
        accept: Callable[[TaskRecord], bool] | None = None,
        levels: tuple[int, ...] = LEVELS,
        queues: Collection[str] | None = None,
    ) -> TaskRecord | None:
        """The next task to start, gated names included; a gated one takes its token and place here.

        A gated task that may start now goes before the main queue's tasks of its level and lower
        (it was held back already); tasks of a higher level go first.
        """
        if not self.gates:
            return PriorityQueue.pop(self, accept, levels, queues)  # not super(): this runs for every task
        now = self._clock()
        best: tuple[int, float, Gate, TaskRecord] | None = None
        for gate in self.gates.values():
            if not len(gate.waiting) or gate.wait_for(now) > 0:
                continue
            head = gate.waiting.head(queues)
            if head is None or head.priority not in levels or (accept is not None and not accept(head)):
                continue
            rank = (LEVELS.index(head.priority), head.queued_at)
            if best is None or rank < best[:2]:
                best = (rank[0], rank[1], gate, head)
        if best is None:
            return super().pop(accept, levels, queues)
        level_index, _, gate, _ = best
        record = super().pop(accept, tuple(level for level in levels if LEVELS.index(level) < level_index), queues)
        if record is not None:
            return record
        record = gate.waiting.pop(queues=queues)
        assert record is not None  # its head was live a moment ago, under the same lock
        gate.admit(record, now)
        return record

    def oldest_age(self, level: int, now: float, queue: str | None = None) -> float:
        """Seconds the oldest waiting task of a level (in one named queue, or any) has waited, gated ones included."""
        age = super().oldest_age(level, now, queue)
        for gate in self.gates.values():
            age = max(age, gate.waiting.oldest_age(level, now, queue))
        return age

    def queue_depth(self, queue: str, level: int) -> int:
        """Waiting tasks of one named queue at one level, gated ones included."""
        depth = super().queue_depth(queue, level)
        for gate in self.gates.values():
            depth += gate.waiting.queue_depth(queue, level)
        return depth

    def heads(self) -> Iterator[TaskRecord]:
        """The oldest waiting record of each level in each named queue, behind each gate too."""
        yield from super().heads()
        for gate in self.gates.values():
            yield from gate.waiting.heads()

    def queue_names(self) -> set[str]:
        """The named queues some task waits in, behind a gate or not."""
        names = super().queue_names()
        for gate in self.gates.values():
            names |= gate.waiting.queue_names()
        return names

    def drain(self, level: int) -> list[TaskRecord]:
        """Remove and return every waiting record of one level, gated ones included."""
        taken = super().drain(level)
        for gate in self.gates.values():
            taken += gate.waiting.drain(level)
        return taken

    def take_where(self, select: Callable[[TaskRecord], bool]) -> list[TaskRecord]:
        """Remove and return the waiting records select() picks, gated ones included."""
        taken = super().take_where(select)
        for gate in self.gates.values():
            taken += gate.waiting.take_where(select)
        return taken
