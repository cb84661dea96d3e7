"""Warnings about what peers send, at most one a second per kind: a peer that floods must not fill the disk.

A control plane logs why it refused a frame, because that is how an operator finds a misconfigured
client. A hostile or broken peer can send thousands of bad frames a second; each would be a line.
A :class:`RateLimitedLog` writes the first at once, then at most one per interval, each saying how
many it left out since the last one.
"""

from __future__ import annotations

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

    def warning(self, message: str, *args: object) -> None:
        """Log ``message % args`` unless a line went out less than an interval ago (then count it)."""
        now = self._clock()
        if now - self._last < self._interval:
            self._skipped += 1
            return
        self._last = now
        if self._skipped:
            message += " (and %d more like it not logged since the last line)"
            args = (*args, self._skipped)
            self._skipped = 0
        self._logger.warning(message, *args)
