"""Finished tasks per wall-clock second, for the throughput figure and the dashboard's charts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: Seconds of per-second counts kept (the charts' width).
HISTORY_WINDOW = 120
#: Throughput is measured over this many seconds.
THROUGHPUT_WINDOW = 60.0


@dataclass(slots=True)
class SecondCounts:
    """What finished during one whole second."""

    second: int
    finished: int = 0
    succeeded: int = 0
    failed: int = 0


class FinishHistory:
    """Counts finishes per second over the last ``HISTORY_WINDOW`` seconds (O(1) per finish)."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self._seconds: deque[SecondCounts] = deque()
        self._current = SecondCounts(-1)  # the newest second's counts (a placeholder until a finish)

    def record(self, now: float, succeeded: bool, failed: bool) -> None:
        """Count one task that reached a final state at ``now`` (cancelled: neither flag)."""
        counts = self._current
        if counts.second != int(now):
            counts = self._current = SecondCounts(int(now))
            seconds = self._seconds
            seconds.append(counts)
            if len(seconds) > HISTORY_WINDOW + 1:
                seconds.popleft()
        counts.finished += 1
        if succeeded:
            counts.succeeded += 1
        elif failed:
            counts.failed += 1

    def throughput(self, now: float) -> float:
        """Tasks finished per second over the last minute (or since start, if shorter)."""
        oldest = int(now - THROUGHPUT_WINDOW)
        finished = sum(c.finished for c in self._seconds if c.second > oldest)
        return finished / min(THROUGHPUT_WINDOW, max(now - self.started_at, 1e-9))

    def per_second(self, now: float, seconds: int = HISTORY_WINDOW) -> list[tuple[int, int, int]]:
        """(second, succeeded, failed) for each of the last ``seconds`` whole seconds, oldest first."""
        last = int(now)
        counts = {c.second: (c.succeeded, c.failed) for c in self._seconds}
        return [(second, *counts.get(second, (0, 0))) for second in range(last - seconds + 1, last + 1)]
