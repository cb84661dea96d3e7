"""Rate-limit task progress on its way out: keep only the latest value, pass it on a few times a second.

A task may call ``report_progress`` in a tight loop; nothing downstream must see each call. Each
hop keeps the newest value per run and hands it on at most once per :data:`PROGRESS_INTERVAL`,
with no timer running while nothing is reported:

* :class:`ProgressRelay`, on an event loop: the subworker's runtime (its async tasks, and the
  progress its pool children send) and the control plane's own slots (threads and loop). Sinks may
  be called from any thread: they store the value under a lock and wake the loop at most once per
  interval, never per call. :meth:`ProgressRelay.finish` takes a run's last value when its outcome
  is ready, so the last value always goes out with (or before) the outcome.
* :class:`ProgressPump`, in a pool child: the task's thread only stores the value; a daemon thread
  of its own, started at the first report, writes it to the pool (a write is never cut short by the
  soft time limit's SIGALRM, which lands on the task's thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from fastworker.client._progress import ProgressSink
from fastworker.client.models import Progress

__all__ = ["PROGRESS_INTERVAL", "LatestProgress", "ProgressPump", "ProgressRelay", "Reported", "RunSink"]

logger = logging.getLogger(__name__)

#: Least time between two values passed on for one run (and, for a relay, between two deliveries).
PROGRESS_INTERVAL = 0.25

#: One run's progress as a relay delivers it: (task id, attempt, latest value).
Reported = tuple[str, int, Progress]


class RunSink:
    """The sink of one run: holds its latest value; closed by :meth:`ProgressRelay.finish`."""

    __slots__ = ("attempt", "latest", "open", "relay", "task_id")

    def __init__(self, relay: ProgressRelay, task_id: str, attempt: int) -> None:
        self.relay = relay
        self.task_id = task_id
        self.attempt = attempt
        #: The newest value reported in this run (delivered or not).
        self.latest: Progress | None = None
        self.open = True

    def __call__(self, progress: Progress) -> None:
        """Keep ``progress`` as the run's latest value (any thread)."""
        self.relay._keep(self, progress)


class ProgressRelay:
    """The latest progress of each run on one event loop, delivered in batches at most once per interval.

    Args:
        deliver: Called on the loop with the runs whose value changed since the last delivery.
        loop: The loop to deliver on; by default the running loop when the first sink is made.
        interval: Least seconds between two deliveries.
    """

    def __init__(
        self,
        deliver: Callable[[list[Reported]], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self._deliver = deliver
        self._loop = loop
        self._interval = interval
        self._lock = threading.Lock()
        #: Runs with a value not delivered yet (an ordered set), guarded by ``_lock``.
        self._pending: dict[RunSink, None] = {}
        #: True from the first undelivered value until the delivery that takes it, guarded by ``_lock``.
        self._armed = False
        self._last_delivery = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def sink(self, task_id: str, attempt: int) -> RunSink:
        """A sink for one run of a task (call :meth:`finish` with it when the run ends)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return RunSink(self, task_id, attempt)

    def finish(self, sink: RunSink) -> Progress | None:
        """Close a run's sink (later reports are dropped) and return its last value, or None if it reported none.

        A value not delivered yet is not delivered any more: the caller sends it with the outcome.
        """
        sink.open = False
        if sink.latest is None:
            return None  # the common case: the run never reported
        with self._lock:
            self._pending.pop(sink, None)
        return sink.latest

    def close(self) -> None:
        """Deliver nothing more."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _keep(self, sink: RunSink, progress: Progress) -> None:
        with self._lock:
            if not sink.open:
                return
            sink.latest = progress
            self._pending[sink] = None
            if self._armed:
                return
            self._armed = True
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(self._arm)
        except RuntimeError:  # the loop closed (shutdown): nothing to deliver to
            pass

    def _arm(self) -> None:
        assert self._loop is not None
        if self._closed:
            return
        delay = max(0.0, self._last_delivery + self._interval - self._loop.time())
        self._timer = self._loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        assert self._loop is not None
        self._timer = None
        with self._lock:
            runs = list(self._pending)
            self._pending.clear()
            self._armed = False
        self._last_delivery = self._loop.time()
        batch = [(run.task_id, run.attempt, run.latest) for run in runs if run.latest is not None]
        if batch and not self._closed:
            try:
                self._deliver(batch)
            except Exception:
                logger.exception("delivering the progress of %d tasks failed", len(batch))


class ProgressPump:
    """A pool child's progress: the latest value of its current run, written out by a thread of its own.

    Args:
        emit: Writes one value to the pool; always called with the pump's lock held, so that it
            never overlaps :meth:`end_run` (after which the run's outcome goes out).
        interval: Least seconds between two values emitted.
        clock: A monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        emit: ProgressSink,
        *,
        interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: Progress | None = None
        self._next = float("-inf")
        #: The current run's number; a sink of an earlier run is ignored.
        self._run = 0
        self._thread: threading.Thread | None = None

    def start_run(self) -> ProgressSink:
        """The sink for the run about to start."""
        with self._cond:
            self._run += 1
            run = self._run

        def sink(progress: Progress) -> None:
            self._keep(run, progress)

        return sink

    def end_run(self) -> None:
        """Emit the run's last value if it is still held, and ignore the run's sink from now on."""
        with self._cond:
            self._run += 1
            pending, self._pending = self._pending, None
            if pending is not None:
                self._emit(pending)

    def _keep(self, run: int, progress: Progress) -> None:
        with self._cond:
            if run != self._run:
                return
            idle = self._pending is None
            self._pending = progress
            if not idle:
                return  # the writer already waits for its turn
            if self._thread is None:
                self._thread = threading.Thread(target=self._write, name="fastworker-progress", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()

    def _write(self) -> None:
        with self._cond:
            while True:
                if self._pending is None:
                    self._cond.wait()
                    continue
                delay = self._next - self._clock()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                pending, self._pending = self._pending, None
                self._next = self._clock() + self._interval
                try:
                    self._emit(pending)
                except Exception:  # the pipe to the pool broke: the pool replaces this child anyway
                    return


class LatestProgress:
    """A sink that only remembers the latest value (the eager client's: nothing to send it to)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        """Remember ``progress``."""
        self.value = progress
