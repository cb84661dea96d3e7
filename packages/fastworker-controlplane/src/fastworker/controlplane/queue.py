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
from collections.abc import Callable, Collection, Iterator

from fastworker.controlplane.records import PENDING, RETRYING, SCHEDULED, TaskRecord
from fastworker.protocol.queues import DEFAULT_QUEUE
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


def _first_index(
    entries: deque[tuple[int, TaskRecord]], accept: Callable[[TaskRecord], bool] | None, older_than: int | None
) -> int:
    """Index of the first live record of one FIFO that accept() takes (and older than ``older_than``), or -1.

    Drops stale entries at its head (cancelled, or re-queued elsewhere); looks at ``SCAN_LIMIT`` at most.
    """
    while entries:
        entry, record = entries[0]
        if record.entry != entry or record.state != PENDING:
            entries.popleft()
            continue
        if older_than is not None and entry > older_than:
            return -1
        if accept is None or accept(record):
            return 0
        break
    else:
        return -1
    for index, (entry, record) in enumerate(itertools.islice(entries, 1, SCAN_LIMIT), start=1):
        if older_than is not None and entry > older_than:
            return -1
        if record.entry == entry and record.state == PENDING and accept(record):
            return index
    return -1


class _Fifo(deque[tuple[int, TaskRecord]]):
    """One named queue's waiting tasks at one level, as (entry, record), with its live count.

    ``live`` counts the PENDING records in it; cancelled ones stay as stale entries until popped.
    """

    __slots__ = ("live",)

    def __init__(self) -> None:
        super().__init__()
        self.live = 0


class PriorityQueue:
    """Waiting (PENDING) tasks by level and named queue, with per-level pause and live depth counts.

    Each level keeps one FIFO per named queue, so a consumer that serves some queues never scans
    the tasks of the others: a deep queue nobody serves cannot starve the rest. Among the queues a
    consumer serves, the oldest entry of the highest level goes first.
    """

    def __init__(self) -> None:
        self._levels: dict[int, dict[str, _Fifo]] = {level: {} for level in LEVELS}
        self._entries = itertools.count(1)
        self._depth: dict[int, int] = dict.fromkeys(LEVELS, 0)
        self.paused: set[int] = set()

    def __len__(self) -> int:
        return sum(self._depth.values())

    def depth(self, level: int) -> int:
        """Waiting tasks at one level."""
        return self._depth[level]

    def queue_depth(self, queue: str, level: int) -> int:
        """Waiting tasks of one named queue at one level."""
        fifo = self._levels[level].get(queue)
        return 0 if fifo is None else fifo.live

    def queue_names(self) -> set[str]:
        """The named queues some task waits in."""
        return {queue for fifos in self._levels.values() for queue, fifo in fifos.items() if fifo.live}

    def _fifo(self, record: TaskRecord) -> _Fifo:
        fifos = self._levels[record.priority]
        fifo = fifos.get(record.queue)
        if fifo is None:
            fifo = fifos[record.queue] = _Fifo()
        return fifo

    def push(self, record: TaskRecord) -> None:
        """Queue a PENDING record at the back of its level in its named queue."""
        record.entry = entry = next(self._entries)
        fifo = self._levels[record.priority].get(record.queue)  # inline: this runs for every task
        if fifo is None:
            fifo = self._fifo(record)
        fifo.append((entry, record))
        fifo.live += 1
        self._depth[record.priority] += 1

    def push_front(self, record: TaskRecord) -> None:
        """Put a record back at the front of its level in its named queue (a dispatch that could not start)."""
        record.entry = entry = next(self._entries)
        fifo = self._fifo(record)
        fifo.appendleft((entry, record))
        fifo.live += 1
        self._depth[record.priority] += 1

    def discard(self, record: TaskRecord) -> None:
        """Account for a record that left PENDING while queued (cancelled); it is skipped when popped."""
        self._levels[record.priority][record.queue].live -= 1
        self._depth[record.priority] -= 1

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
            fifos = self._levels[level]
            if len(fifos) == 1:  # the common case, one named queue: no merge across queues
                ((queue, entries),) = fifos.items()
                if queues is not None and queue not in queues:
                    continue
                while entries:  # the head first, inline: this runs for every task
                    entry, record = entries[0]
                    if record.entry != entry or record.state != PENDING:
                        entries.popleft()  # stale: cancelled or re-queued elsewhere
                        continue
                    if accept is None or accept(record):
                        entries.popleft()
                        entries.live -= 1
                        self._depth[level] -= 1
                        return record
                    break
                index = _first_index(entries, accept, None) if entries else -1
                if index < 0:
                    if not entries and queue != DEFAULT_QUEUE:
                        del fifos[queue]
                    continue
            elif fifos:
                found = self._first(fifos, accept, queues)
                if found is None:
                    continue
                entries, index = found
            else:
                continue
            record = entries[index][1]
            if index:
                del entries[index]
            else:
                entries.popleft()
            entries.live -= 1
            self._depth[level] -= 1
            return record
        return None

    @staticmethod
    def _first(
        fifos: dict[str, _Fifo],
        accept: Callable[[TaskRecord], bool] | None,
        queues: Collection[str] | None,
    ) -> tuple[_Fifo, int] | None:
        """The oldest acceptable live record of one level among the served queues: (its FIFO, its index).

        Looks at the served queues' FIFOs only: names nobody serves (however many a client made)
        cost nothing. Drops FIFOs left empty (but the default queue's).
        """
        best: tuple[_Fifo, int] | None = None
        best_entry = 0
        emptied: list[str] | None = None
        names = fifos if queues is None else [name for name in queues if name in fifos]
        for queue in names:
            entries = fifos[queue]
            index = _first_index(entries, accept, best_entry if best is not None else None)
            if index >= 0:
                best, best_entry = (entries, index), entries[index][0]
            elif not entries and queue != DEFAULT_QUEUE:
                emptied = [queue] if emptied is None else [*emptied, queue]
        if emptied is not None:
            for queue in emptied:
                del fifos[queue]
        return best

    def head(self, queues: Collection[str] | None = None) -> TaskRecord | None:
        """The record :meth:`pop` would return without ``accept`` (it stays queued), or None."""
        for level in LEVELS:
            if level in self.paused:
                continue
            found = self._first(self._levels[level], None, queues)
            if found is not None:
                entries, index = found
                return entries[index][1]
        return None

    def heads(self) -> Iterator[TaskRecord]:
        """The oldest waiting record of each level in each named queue (paused levels included)."""
        for level in LEVELS:
            for entries in self._levels[level].values():
                for entry, record in entries:
                    if record.entry == entry and record.state == PENDING:
                        yield record
                        break

    def take_where(self, select: Callable[[TaskRecord], bool]) -> list[TaskRecord]:
        """Remove and return the waiting records select() picks, by level then queue order (O(queue))."""
        taken: list[TaskRecord] = []
        for level in LEVELS:
            picked: list[tuple[int, TaskRecord]] = []
            by_queue = self._levels[level]
            for queue, entries in list(by_queue.items()):
                kept = _Fifo()
                for entry, record in entries:
                    if record.entry != entry or record.state != PENDING:
                        continue
                    if select(record):
                        picked.append((entry, record))
                        self._depth[level] -= 1
                    else:
                        kept.append((entry, record))
                        kept.live += 1
                if kept or queue == DEFAULT_QUEUE:
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
