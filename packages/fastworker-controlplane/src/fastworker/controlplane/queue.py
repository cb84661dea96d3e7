"""The priority queue of waiting tasks and the schedule of tasks not yet due, as pure data structures.

Strict priority: critical before high before normal before low, FIFO within a level of a named
queue (and by age across the named queues a consumer serves). Cancelled
entries are skipped lazily when popped, so cancel is O(1). No sockets and no clock reads: ``now``
is passed in.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Collection

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
    """Waiting (PENDING) tasks by level and named queue, with per-level pause and live depth counts.

    Each level keeps one FIFO per named queue, so a consumer that serves some queues never scans
    the tasks of the others: a deep queue nobody serves cannot starve the rest. Among the queues a
    consumer serves, the oldest entry of the highest level goes first.
    """

    def __init__(self) -> None:
        self._levels: dict[int, dict[str, deque[tuple[int, TaskRecord]]]] = {level: {} for level in LEVELS}
        self._entries = itertools.count(1)
        self._depth: dict[int, int] = dict.fromkeys(LEVELS, 0)
        #: Waiting tasks per (queue, level); a key leaves when its count is 0, so names do not pile up.
        self._queue_depth: dict[tuple[str, int], int] = {}
        self.paused: set[int] = set()

    def __len__(self) -> int:
        return sum(self._depth.values())

    def depth(self, level: int) -> int:
        """Waiting tasks at one level."""
        return self._depth[level]

    def queue_depth(self, queue: str, level: int) -> int:
        """Waiting tasks of one named queue at one level."""
        return self._queue_depth.get((queue, level), 0)

    def queue_names(self) -> set[str]:
        """The named queues some task waits in."""
        return {queue for queue, _level in self._queue_depth}

    def _fifo(self, record: TaskRecord) -> deque[tuple[int, TaskRecord]]:
        queues = self._levels[record.priority]
        entries = queues.get(record.queue)
        if entries is None:
            entries = queues[record.queue] = deque()
        return entries

    def _count(self, record: TaskRecord, change: int) -> None:
        self._depth[record.priority] += change
        key = (record.queue, record.priority)
        left = self._queue_depth.get(key, 0) + change
        if left:
            self._queue_depth[key] = left
        else:
            self._queue_depth.pop(key, None)

    def push(self, record: TaskRecord) -> None:
        """Queue a PENDING record at the back of its level in its named queue."""
        record.entry = entry = next(self._entries)
        self._fifo(record).append((entry, record))
        self._count(record, 1)

    def push_front(self, record: TaskRecord) -> None:
        """Put a record back at the front of its level in its named queue (a dispatch that could not start)."""
        record.entry = entry = next(self._entries)
        self._fifo(record).appendleft((entry, record))
        self._count(record, 1)

    def discard(self, record: TaskRecord) -> None:
        """Account for a record that left PENDING while queued (cancelled); it is skipped when popped."""
        self._count(record, -1)

    def pop(
        self,
        accept: Callable[[TaskRecord], bool] | None = None,
        levels: tuple[int, ...] = LEVELS,
        queues: Collection[str] | None = None,
    ) -> TaskRecord | None:
        """The next PENDING record by priority from the unpaused levels, or None.

        With ``accept``, the next one that accept() takes (e.g. a task some free worker can run);
        the ones skipped keep their places. Only the first ``SCAN_LIMIT`` waiting tasks of a level
        in each named queue are looked at, so a deep queue of tasks nobody can run costs bounded
        time. ``levels``: look at these levels only (in dispatch order). ``queues``: take only from
        these named queues (None: any).
        """
        for level in levels:
            if level in self.paused:
                continue
            found = self._first(self._levels[level], accept, queues)
            if found is not None:
                entries, index, record = found
                if index:
                    del entries[index]
                else:
                    entries.popleft()
                self._count(record, -1)
                return record
        return None

    @staticmethod
    def _first(
        by_queue: dict[str, deque[tuple[int, TaskRecord]]],
        accept: Callable[[TaskRecord], bool] | None,
        queues: Collection[str] | None,
    ) -> tuple[deque[tuple[int, TaskRecord]], int, TaskRecord] | None:
        """The oldest acceptable live record of one level among the served queues: (its FIFO, index, record).

        Drops stale entries at the FIFOs' heads, and FIFOs left empty.
        """
        best: tuple[deque[tuple[int, TaskRecord]], int, TaskRecord] | None = None
        emptied: list[str] | None = None
        # The served queues' FIFOs only: names nobody serves (however many a client made) cost nothing.
        fifos = by_queue.items() if queues is None else [(q, by_queue[q]) for q in queues if q in by_queue]
        for queue, entries in fifos:
            while entries:
                entry, record = entries[0]
                if record.entry != entry or record.state != PENDING:
                    entries.popleft()  # stale: cancelled or re-queued elsewhere
                    continue
                break
            if not entries:
                emptied = [queue] if emptied is None else [*emptied, queue]
                continue
            if best is not None and entries[0][0] > best[2].entry:
                continue  # even its head is younger than the best so far
            if accept is None or accept(entries[0][1]):
                best = (entries, 0, entries[0][1])
                continue
            for index, (entry, record) in enumerate(itertools.islice(entries, 1, SCAN_LIMIT), start=1):
                if best is not None and entry > best[2].entry:
                    break
                if record.entry == entry and record.state == PENDING and accept(record):
                    best = (entries, index, record)
                    break
        if emptied is not None:
            for queue in emptied:
                del by_queue[queue]
        return best

    def head(self, queues: Collection[str] | None = None) -> TaskRecord | None:
        """The record :meth:`pop` would return without ``accept`` (it stays queued), or None."""
        for level in LEVELS:
            if level in self.paused:
                continue
            found = self._first(self._levels[level], None, queues)
            if found is not None:
                return found[2]
        return None

    def take_where(self, select: Callable[[TaskRecord], bool]) -> list[TaskRecord]:
        """Remove and return the waiting records select() picks, by level then queue order (O(queue))."""
        taken: list[TaskRecord] = []
        for level in LEVELS:
            picked: list[tuple[int, TaskRecord]] = []
            by_queue = self._levels[level]
            for queue, entries in list(by_queue.items()):
                kept: deque[tuple[int, TaskRecord]] = deque()
                for entry, record in entries:
                    if record.entry != entry or record.state != PENDING:
                        continue
                    if select(record):
                        picked.append((entry, record))
                        self._count(record, -1)
                    else:
                        kept.append((entry, record))
                if kept:
                    by_queue[queue] = kept
                else:
                    del by_queue[queue]
            taken.extend(record for _entry, record in sorted(picked, key=lambda item: item[0]))
        return taken

    def oldest_age(self, level: int, now: float, queue: str | None = None) -> float:
        """Seconds the oldest waiting task of a level (in one named queue, or any) has waited (0 if none)."""
        oldest = 0.0
        for name, entries in self._levels[level].items():
            if queue is not None and name != queue:
                continue
            for entry, record in entries:
                if record.entry == entry and record.state == PENDING:
                    oldest = max(oldest, now - record.queued_at)
                    break
        return oldest

    def drain(self, level: int) -> list[TaskRecord]:
        """Remove and return every waiting record of one level, in every named queue (purge)."""
        live = [
            (entry, record)
            for entries in self._levels[level].values()
            for entry, record in entries
            if record.entry == entry and record.state == PENDING
        ]
        self._levels[level].clear()
        self._depth[level] = 0
        for key in [key for key in self._queue_depth if key[1] == level]:
            del self._queue_depth[key]
        return [record for _entry, record in sorted(live, key=lambda item: item[0])]


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
