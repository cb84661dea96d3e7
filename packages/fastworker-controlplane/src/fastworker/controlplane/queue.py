"""The priority queue of waiting tasks and the schedule of tasks not yet due, as pure data structures.

Strict priority: critical before high before normal before low, FIFO within a level. Cancelled
entries are skipped lazily when popped, so cancel is O(1). No sockets and no clock reads: ``now``
is passed in.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable

from fastworker.controlplane.records import PENDING, RETRYING, SCHEDULED, TaskRecord
from fastworker.protocol.v1 import task_pb2

_HELD = frozenset({SCHEDULED, RETRYING})

#: Waiting tasks of one level looked at by a selective pop.
SCAN_LIMIT = 1024

#: Wire priority values in dispatch order.
LEVELS: tuple[int, ...] = (
    task_pb2.PRIORITY_CRITICAL,
    task_pb2.PRIORITY_HIGH,
    task_pb2.PRIORITY_NORMAL,
    task_pb2.PRIORITY_LOW,
)


def level_name(level: int) -> str:
    """A wire priority's name as operators write it: ``critical``, ``high``, ``normal``, ``low``."""
    return task_pb2.Priority.Name(level).removeprefix("PRIORITY_").lower()  # type: ignore[arg-type]


class PriorityQueue:
    """Waiting (PENDING) tasks by level, with per-level pause and live depth counts."""

    def __init__(self) -> None:
        self._levels: dict[int, deque[tuple[int, TaskRecord]]] = {level: deque() for level in LEVELS}
        self._entries = itertools.count(1)
        self._depth: dict[int, int] = dict.fromkeys(LEVELS, 0)
        self.paused: set[int] = set()

    def __len__(self) -> int:
        return sum(self._depth.values())

    def depth(self, level: int) -> int:
        """Waiting tasks at one level."""
        return self._depth[level]

    def push(self, record: TaskRecord) -> None:
        """Queue a PENDING record at the back of its level."""
        record.entry = entry = next(self._entries)
        self._levels[record.priority].append((entry, record))
        self._depth[record.priority] += 1

    def push_front(self, record: TaskRecord) -> None:
        """Put a record back at the front of its level (a dispatch that could not start)."""
        record.entry = entry = next(self._entries)
        self._levels[record.priority].appendleft((entry, record))
        self._depth[record.priority] += 1

    def discard(self, record: TaskRecord) -> None:
        """Account for a record that left PENDING while queued (cancelled); it is skipped when popped."""
        self._depth[record.priority] -= 1

    def pop(
        self, accept: Callable[[TaskRecord], bool] | None = None, levels: tuple[int, ...] = LEVELS
    ) -> TaskRecord | None:
        """The next PENDING record by priority from the unpaused levels, or None.

        With ``accept``, the next one that accept() takes (e.g. a task some free worker can run);
        the ones skipped keep their places. Only the first ``SCAN_LIMIT`` waiting tasks of a level
        are looked at, so a deep queue of tasks nobody can run costs bounded time. ``levels``:
        look at these levels only (in dispatch order).
        """
        for level in levels:
            if level in self.paused:
                continue
            entries = self._levels[level]
            while entries:
                entry, record = entries[0]
                if record.entry != entry or record.state != PENDING:
                    entries.popleft()  # stale: cancelled or re-queued elsewhere
                    continue
                if accept is None or accept(record):
                    entries.popleft()
                    self._depth[level] -= 1
                    return record
                break
            if accept is None or not entries:
                continue
            for index, (entry, record) in enumerate(itertools.islice(entries, 1, SCAN_LIMIT), start=1):
                if record.entry == entry and record.state == PENDING and accept(record):
                    del entries[index]
                    self._depth[level] -= 1
                    return record
        return None

    def head(self) -> TaskRecord | None:
        """The record :meth:`pop` would return without ``accept`` (it stays queued), or None."""
        for level in LEVELS:
            if level in self.paused:
                continue
            entries = self._levels[level]
            while entries:
                entry, record = entries[0]
                if record.entry == entry and record.state == PENDING:
                    return record
                entries.popleft()
        return None

    def take_where(self, select: Callable[[TaskRecord], bool]) -> list[TaskRecord]:
        """Remove and return the waiting records select() picks, by level then queue order (O(queue))."""
        taken: list[TaskRecord] = []
        for level in LEVELS:
            kept: deque[tuple[int, TaskRecord]] = deque()
            for entry, record in self._levels[level]:
                if record.entry != entry or record.state != PENDING:
                    continue
                if select(record):
                    taken.append(record)
                    self._depth[level] -= 1
                else:
                    kept.append((entry, record))
            self._levels[level] = kept
        return taken

    def oldest_age(self, level: int, now: float) -> float:
        """Seconds the oldest waiting task of a level has waited (0 if none)."""
        for entry, record in self._levels[level]:
            if record.entry == entry and record.state == PENDING:
                return max(0.0, now - record.queued_at)
        return 0.0

    def drain(self, level: int) -> list[TaskRecord]:
        """Remove and return every waiting record of one level (purge)."""
        entries = self._levels[level]
        taken = [r for e, r in entries if r.entry == e and r.state == PENDING]
        entries.clear()
        self._depth[level] = 0
        return taken


class Schedule:
    """Tasks held until a moment (countdown, ETA, retry delay), ordered by due time, FIFO among equal times."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TaskRecord]] = []  # (due, entry, record)
        self._sequence = itertools.count(1)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, record: TaskRecord, due: float) -> None:
        """Hold a SCHEDULED record until due."""
        record.entry = entry = next(self._sequence)
        heapq.heappush(self._heap, (due, entry, record))
        self._count += 1

    def discard(self, record: TaskRecord) -> None:
        """Account for a record that left SCHEDULED (cancelled); it is skipped when due."""
        self._count -= 1

    def next_due(self) -> float | None:
        """When the earliest live entry is due, or None."""
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[TaskRecord]:
        """Remove and return the records due by now, in due order."""
        due: list[TaskRecord] = []
        while self._heap and self._heap[0][0] <= now:
            item = heapq.heappop(self._heap)
            if self._live(item):
                record = item[2]
                self._count -= 1
                due.append(record)
        return due

    @staticmethod
    def _live(item: tuple[float, int, TaskRecord]) -> bool:
        return item[2].entry == item[1] and item[2].state in _HELD
