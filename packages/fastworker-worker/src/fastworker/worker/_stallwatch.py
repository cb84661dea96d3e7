"""Say so when an event loop stops turning: the one diagnostic for an async task that blocks.

An ``async def`` task that calls blocking code (``time.sleep``, a synchronous HTTP client, a long
computation) holds its process's event loop: no heartbeat goes out and no frame is read, so the
control plane drops a subworker once its heartbeats stop for the heartbeat timeout, and a control
plane's clients all wait. Nothing on the loop can report that, so a watcher thread checks that the
loop ran a tick lately; after ``threshold`` seconds without one it logs what the loop's thread is
executing (its innermost frames: usually the task's blocking line), and again once the loop runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

logger = logging.getLogger(__name__)

#: Seconds without a tick after which a stalled loop is reported.
DEFAULT_THRESHOLD = 2.0
#: Seconds between the loop's ticks (and between the watcher's checks).
TICK = 0.25
#: Innermost frames of the loop's thread named in the report.
FRAMES_SHOWN = 4


class LoopStallWatch:
    """Logs a warning naming the code that holds ``loop`` for ``threshold`` seconds or more.

    Start it on the loop's thread; :meth:`stop` ends the watcher thread. It costs one loop
    callback per tick.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, what: str, threshold: float = DEFAULT_THRESHOLD, tick: float = TICK
    ) -> None:
        self._loop = loop
        self._what = what
        self._threshold = threshold
        self._tick_interval = tick
        self._last_tick = time.monotonic()
        self._loop_thread = 0
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Begin ticking on the loop (call on its thread) and watching from a daemon thread."""
        self._loop_thread = threading.get_ident()
        self._tick()
        self._watcher = threading.Thread(target=self._watch, name="fastworker-stall-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop ticking and watching."""
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._watcher is not None:
            self._watcher.join(timeout=1.0)
            self._watcher = None

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        if not self._stopped.is_set():
            self._handle = self._loop.call_later(self._tick_interval, self._tick)

    def _watch(self) -> None:
        reported_since: float | None = None
        while not self._stopped.wait(self._tick_interval):
            last = self._last_tick
            stalled = time.monotonic() - last
            if reported_since is None and stalled >= self._threshold:
                reported_since = last
                logger.warning(
                    "the %s has not run for %.1f s: heartbeats and requests wait meanwhile. Usually an async"
                    " task that blocks (time.sleep, a blocking client, a long computation instead of awaiting:"
                    " make it a def task or use asyncio.to_thread). It is at: %s",
                    self._what,
                    stalled,
                    self._where(),
                )
            elif reported_since is not None and last != reported_since:
                logger.warning("the %s runs again, after %.1f s blocked", self._what, last - reported_since)
                reported_since = None

    def _where(self) -> str:
        """The innermost frames of the loop's thread, innermost first."""
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "(its thread is gone)"
        entries = traceback.extract_stack(frame)[-FRAMES_SHOWN:]
        return " <- ".join(f"{e.filename}:{e.lineno} in {e.name}" for e in reversed(entries))
