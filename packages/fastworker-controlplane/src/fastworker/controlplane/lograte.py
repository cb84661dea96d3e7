"""Warnings that can come in floods, at most one per interval per kind: a peer that floods must not fill the disk.

A control plane logs why it refused a frame, because that is how an operator finds a misconfigured
client. A hostile or broken peer can send thousands of bad frames a second; each would be a line.
A :class:`RateLimitedLog` writes the first at once, then at most one per interval, each saying how
many it left out since the last one. When the burst ends before another line is due, the last one
left out is written an interval later, with the count: the kinds of refusal in a burst show, and
the log says that lines were left out. The periodic scheduler logs a task's slots skipped for a
run still in progress the same way, once a minute per task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

#: Seconds between two lines of one kind.
DEFAULT_INTERVAL = 1.0


class RateLimitedLog:
    """Logs warnings of one kind at most once per ``interval`` seconds, counting the ones it skips."""

    def __init__(
        self, logger: logging.Logger, *, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")
        self._skipped = 0
        #: The latest line left out, written by the flush if no other line comes first.
        self._held: tuple[str, tuple[object, ...]] | None = None
        self._flush: asyncio.TimerHandle | None = None

    def warning(self, message: str, *args: object) -> None:
        """Log ``message % args`` unless a line went out less than an interval ago (then count it)."""
        now = self._clock()
        if now - self._last < self._interval:
            self._skipped += 1
            self._held = (message, args)
            if self._flush is None:
                self._flush_later(self._last + self._interval - now)
            return
        self._write(now, message, args, self._skipped)

    def _write(self, now: float, message: str, args: tuple[object, ...], left_out: int) -> None:
        self._last = now
        self._held = None
        self._skipped = 0
        if left_out:
            message += " (and %d more like it not logged since the last line)"
            args = (*args, left_out)
        self._logger.warning(message, *args)

    def _flush_later(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # (not on a loop: the count waits for the next line)
        self._flush = loop.call_later(max(0.0, delay), self._write_held)

    def _write_held(self) -> None:
        """An interval after a line, the latest one left out since, if no line went out meanwhile."""
        self._flush = None
        if self._held is not None:
            message, args = self._held
            self._write(self._clock(), message, args, self._skipped - 1)
