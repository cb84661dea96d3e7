"""A logger wrapper that lets through a few messages a minute and counts the rest, so a flood cannot fill the log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any


class RateLimitedLog:
    """Logs at most ``per_minute`` messages per 60 s window; the next one let through says how many were dropped.

    Args:
        logger: Where the messages go.
        per_minute: Messages allowed per window.
        clock: Monotonic seconds (tests pass a fake).
    """

    def __init__(
        self, logger: logging.Logger, *, per_minute: int = 10, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = -60.0
        self._in_window = 0
        self._dropped = 0

    def warning(self, message: str, *args: Any) -> bool:
        """Log ``message % args`` as a warning unless this window's budget is spent; True when it was logged."""
        with self._lock:
            now = self._clock()
            if now - self._window_start >= 60.0:
                self._window_start, self._in_window = now, 0
            if self._in_window >= self.per_minute:
                self._dropped += 1
                return False
            self._in_window += 1
            dropped, self._dropped = self._dropped, 0
        if dropped:
            message += " (%d similar messages suppressed)"
            args = (*args, dropped)
        self.logger.warning(message, *args)
        return True
