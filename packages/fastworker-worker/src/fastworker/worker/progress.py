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

A thread that runs one task after another (a pool child's main thread, a control-plane slot)
binds its sink once (:class:`ProgressPump`, :class:`SlotProgress`), so a run pays a few attribute
stores, not a contextvar change. The price: code that copies such a thread's context into a thread
outliving its task reports into whichever run that slot has then.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from fastworker.client._progress import ProgressSink, no_current_task
from fastworker.client.models import Progress

__all__ = [
    "PROGRESS_INTERVAL",
    "REARM_AFTER",
    "LatestProgress",
    "ProgressPump",
    "ProgressRelay",
    "Reported",
    "RunSink",
    "SlotProgress",
]

logger = logging.getLogger(__name__)

#: Least time between two values passed on for one run (and, for a relay, between two deliveries).
PROGRESS_INTERVAL = 0.25
#: A relay armed this long without delivering arms again: its wake-up was lost (a cancelled slot
#: thread interrupted between arming and scheduling it).
REARM_AFTER = 5.0

#: One run's progress as a relay delivers it: (task id, attempt, latest value).
Reported = tuple[str, int, Progress]


class RunSink:
    """The sink of one run: its task, its attempt and its latest value, passed on through its relay.

    Runtimes that already make an object per run subclass it (so a run costs no extra object) and
    set the four fields themselves. A report after the run ended is delivered like any other: the
    control plane ignores progress of an attempt it does not count as running.
    """

    __slots__ = ("attempt", "latest", "relay", "task_id")

    def __init__(self, relay: ProgressRelay, task_id: str, attempt: int) -> None:
        self.relay = relay
        self.task_id = task_id
        self.attempt = attempt
        #: The newest value reported in this run (delivered or not).
        self.latest: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        """Keep ``progress`` as the run's latest value (any thread)."""
        self.relay.keep(self, progress)


class SlotProgress(RunSink):
    """The sink a slot thread binds once, reused by each run on it; it refuses reports between runs.

    A run calls :meth:`start`, clears ``active`` when it ends, and takes its last value with
    :meth:`finish` if ``latest`` is set. A value left by a run that ended otherwise (interrupted) is
    dropped when the next one starts.
    """

    __slots__ = ("active",)

    def __init__(self, relay: ProgressRelay) -> None:
        super().__init__(relay, "", 0)
        #: True while a run is under way on this thread.
        self.active = False

    def start(self, task_id: str, attempt: int) -> None:
        """A run of this task starts on the slot."""
        if self.latest is not None:
            self.finish()
        self.task_id = task_id
        self.attempt = attempt
        self.active = True

    def finish(self) -> Progress | None:
        """The last value of the run that ended (taken out of the next delivery), and a clean slot."""
        latest = self.relay.finish(self)
        self.latest = None
        return latest

    def __call__(self, progress: Progress) -> None:
        """Keep ``progress`` as the running task's latest value."""
        if not self.active:
            raise no_current_task()
        self.relay.keep(self, progress)


class ProgressRelay:
    """The latest progress of each run on one event loop, delivered in batches at most once per interval.

    Args:
        deliver: Called on the loop with the runs whose value changed since the last delivery.
        loop: The loop to deliver on; else the one given to :meth:`attach`, else the running loop
            of the first report made on a loop's thread.
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
        #: When it was armed (monotonic seconds), guarded by ``_lock``.
        self._armed_at = 0.0
        self._last_delivery = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on this loop (for a relay made before its loop ran)."""
        self._loop = loop

    def sink(self, task_id: str, attempt: int) -> RunSink:
        """A sink for one run of a task (pass it to :meth:`finish` when the run ends)."""
        return RunSink(self, task_id, attempt)

    def finish(self, sink: RunSink) -> Progress | None:
        """A run's last value (None if it reported none), taken out of the next delivery: it goes with the outcome.

        Callers on a hot path skip the call while ``sink.latest`` is None (the common case).
        """
        latest = sink.latest
        if latest is not None:
            with self._lock:
                self._pending.pop(sink, None)
        return latest

    def close(self) -> None:
        """Deliver nothing more."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def keep(self, sink: RunSink, progress: Progress) -> None:
        """Store a run's latest value and make sure a delivery is coming (any thread; what a RunSink calls)."""
        with self._lock:
            sink.latest = progress
            self._pending[sink] = None
            now = time.monotonic()
            if self._armed and now - self._armed_at < REARM_AFTER:
                return
            self._armed = True
            self._armed_at = now
        loop = self._loop
        if loop is None:
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop attached yet, and this thread runs none: it stays pending
                with self._lock:
                    self._armed = False
                return
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
        with self._lock:  # the fields too: a slot's sink is reused by its next run
            batch = [(run.task_id, run.attempt, run.latest) for run in self._pending if run.latest is not None]
            self._pending.clear()
            self._armed = False
        self._last_delivery = self._loop.time()
        if batch and not self._closed:
            try:
                self._deliver(batch)
            except Exception:
                logger.exception("delivering the progress of %d tasks failed", len(batch))


class ProgressPump:
    """A pool child's progress: the latest value of its current run, written out by a thread of its own.

    The child binds it once as its sink; it refuses reports outside a run (``NoCurrentTask``).

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
        #: True while a run is under way.
        self._running = False
        self._thread: threading.Thread | None = None

    def start_run(self) -> None:
        """A run starts: its reports are taken from now on (call from the thread that runs the tasks)."""
        self._running = True

    def end_run(self) -> None:
        """Emit the run's last value if it is still held; reports are refused from now on."""
        self._running = False
        if self._thread is None:
            return  # nothing was ever reported in this process
        with self._cond:
            pending, self._pending = self._pending, None
            if pending is not None:
                self._emit(pending)

    def __call__(self, progress: Progress) -> None:
        """Keep ``progress`` as the current run's latest value; the writer thread sends it in its turn."""
        with self._cond:
            if not self._running:
                raise no_current_task()
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
