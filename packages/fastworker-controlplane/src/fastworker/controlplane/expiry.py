"""Tasks that carry an ``expires`` time, by that time: one still waiting then ends at once, not when a slot takes it.

A task that waited past its expiry (in a paused level, behind a busy limit, in a queue nobody
serves) used to keep its place, its room under ``--max-queue`` and its uniqueness key until
something took it. The coordinator keeps each such task's id here and ends the ones still waiting
when their time comes. Entries are ids, not records: a task that started or finished meanwhile is
looked up and left alone; the heap is rebuilt once most of its entries are for tasks no longer
live, so it stays proportional to the live tasks whatever their expiry horizon.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection

__all__ = ["ExpiryWatch"]

#: Below this many entries the heap is never rebuilt (a rebuild costs a pass over it).
COMPACT_ABOVE = 1024


class ExpiryWatch:
    """Task ids by expiry time (Unix seconds), earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, task_id: str, expires: float, live: Collection[str]) -> None:
        """Watch a task; ``live`` (the ids of live tasks) lets entries of ended tasks be dropped in bulk."""
        heap = self._heap
        if len(heap) > COMPACT_ABOVE and len(heap) > 2 * len(live):
            heap = self._heap = [entry for entry in heap if entry[2] in live]
            heapq.heapify(heap)
        heapq.heappush(heap, (expires, next(self._order), task_id))

    def next_due(self) -> float | None:
        """The earliest expiry watched, or None."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[str]:
        """The ids whose expiry is past at ``now`` (strictly, as everywhere a task's expiry is checked)."""
        heap = self._heap
        due: list[str] = []
        while heap and heap[0][0] < now:
            due.append(heapq.heappop(heap)[2])
        return due
