"""One loop timer for the earliest of many due times (the schedule's, the waiting tasks' expiries).

A heap of due times needs one timer, at its earliest: armed again only when an earlier time comes
in, and by its callback (which looks at the heap) once it fires. Times are read on the caller's
clock (wall seconds); the loop's own clock only measures the delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class DueTimer:
    """Calls ``callback`` on the loop at the earliest time given to :meth:`arm` since it last fired.

    ``late_by`` seconds are added to every delay: the loop's timers may fire a little early by the
    wall clock, and a callback that finds nothing due yet would wait for the next arm.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        callback: Callable[[], None],
        *,
        late_by: float = 0.0,
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._callback = callback
        self._late_by = late_by
        self._handle: asyncio.TimerHandle | None = None
        self._due: float | None = None

    def arm(self, due: float | None) -> None:
        """Fire at ``due`` (clock seconds) unless already armed for that time or earlier; None: nothing due."""
        if due is None or (self._due is not None and self._due <= due):
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_later(max(0.0, due - self._clock()) + self._late_by, self._fire)
        self._due = due

    def cancel(self) -> None:
        """Stop it (closing)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._due = None

    def _fire(self) -> None:
        self._handle = None
        self._due = None
        self._callback()
