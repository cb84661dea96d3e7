"""The control plane's one event stream (task, worker and queue changes) for long-poll readers and in-process listeners."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from fastworker.controlplane.records import TaskRecord, brief_error
from fastworker.protocol.v1 import events_pb2, task_pb2
from fastworker.protocol.v1.task_pb2 import Payload, TaskError

logger = logging.getLogger(__name__)

#: Result payloads whose data is larger than this many bytes are left out of task events; readers
#: that want such a result ask for the task (SUCCESS without a result means "omitted").
MAX_EVENT_RESULT_BYTES = 64 * 1024

#: Called by :meth:`EventBus.wait` with (events, last sequence, gap).
WaitCallback = Callable[[list[events_pb2.Event], int, bool], None]
#: Called by the bus with every event as it is published.
Listener = Callable[[events_pb2.Event], None]

_TASK_STATE = events_pb2.EVENT_KIND_TASK_STATE
_NO_IDS: frozenset[str] = frozenset()


class _Waiter:
    """One pending long poll."""

    __slots__ = ("after", "callback", "done", "limit", "matched", "task_ids", "timer")

    def __init__(self, after: int, limit: int, task_ids: frozenset[str], callback: WaitCallback) -> None:
        self.after = after
        self.limit = limit
        self.task_ids = task_ids
        self.callback = callback
        self.done = False
        #: For a filtered waiter: the sequence of the first matching event since it started waiting.
        self.matched = 0
        self.timer: asyncio.TimerHandle | None = None


class EventBus:
    """A bounded, sequenced stream of events with long-poll reads and in-process listeners.

    Sequence numbers start at 1 and grow by 1 per published event, per control-plane instance (they
    restart from 1 when the control plane restarts). The ring keeps the newest ``capacity`` events;
    older ones are dropped, and a reader whose position falls before the oldest retained event is
    told so (``gap``).

    Reading positions (``after``):

    * ``after=0`` means "from the oldest retained event" (every retained event); a reader that wants
      only events published from now on passes :attr:`last_sequence` instead.
    * A reader advances to the sequence of the last event it received, or, when a read returned
      nothing, to the ``last_sequence`` that came with it (nothing after ``after`` matched up to there).
    * An ``after`` beyond :attr:`last_sequence` can only come from an earlier control-plane instance:
      it is read as ``after=0`` and reported as a gap, so the reader resynchronises instead of
      silently waiting for the new instance to catch up with its old position.

    Events are built once and shared by the ring, every reader and every listener: treat them as
    read-only (copy before changing one).

    Not thread-safe: every method runs on the event loop's thread. A state change made on another
    thread (a local slot marking a task RUNNING) is published by hopping to the loop first.

    Args:
        capacity: How many of the newest events are kept; older ones are dropped.
        clock: Returns the time stamped on each event (Unix seconds).

    Raises:
        ValueError: ``capacity`` is below 1.
    """

    def __init__(self, *, capacity: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError("event capacity must be at least 1")
        self.capacity = capacity
        self._clock = clock
        #: Event with sequence s sits at index (s - 1) % capacity; grows by append until full.
        self._ring: list[events_pb2.Event | _TaskSnapshot] = []
        #: The task id of each ring slot ("" for worker and queue events), for cheap filtering.
        self._ids: list[str] = []
        self._last = 0
        self._listeners: tuple[Listener, ...] = ()
        #: Waiters on every event, and waiters on the events of given task ids (dicts as ordered sets).
        self._any_waiters: dict[_Waiter, None] = {}
        self._task_waiters: dict[str, dict[_Waiter, None]] = {}
        #: Filtered waiters to answer at the next flush (and, if _wake_any, every unfiltered one).
        self._woken: dict[_Waiter, None] = {}
        self._wake_any = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._closed = False

    # ---------------------------------------------------------------------------------------- publish

    @property
    def last_sequence(self) -> int:
        """The sequence number of the newest event; 0 before the first."""
        return self._last

    @property
    def oldest_sequence(self) -> int:
        """The sequence number of the oldest retained event (1 before the ring first overflows)."""
        return max(1, self._last - self.capacity + 1)

    @property
    def waiting(self) -> int:
        """How many long polls are pending."""
        return len(self._any_waiters) + len({w for ws in self._task_waiters.values() for w in ws})

    def publish_task(self, record: TaskRecord) -> None:
        """Publish a task's current state (EVENT_KIND_TASK_STATE) with its info.

        This runs on every state change, so it only takes a snapshot of the record's fields; the
        Event message is built when someone reads it (or at once when listeners are subscribed).
        The info is what :meth:`TaskRecord.fill_info` writes, without arguments; a result whose data
        is larger than :data:`MAX_EVENT_RESULT_BYTES` is left out.

        Args:
            record: The task that just changed state.
        """
        # A tuple: this runs for every state change of every task, and a snapshot object of its own
        # cost ~3x as much to make.
        result = record.result
        if result is not None and len(result.data) > MAX_EVENT_RESULT_BYTES:
            # Only what the event may carry: the ring keeps 10,000 snapshots, long after the result
            # cache let their records go, so a large result kept here would hold its memory as long.
            result = None
        error = record.error
        if error is not None:
            error = brief_error(error)  # (the ring would keep whole tracebacks: see brief_error)
        seq = self._last + 1
        task_id = record.task_id
        snapshot: _TaskSnapshot = (
            seq,
            self._clock(),
            # The record's identity, not the record: it holds the arguments (up to 8 MiB) and the
            # result, which the ring must not keep alive after the result cache dropped them.
            task_id,
            record.name,
            record.priority,
            record.queued_at,
            record.visible_state,
            record.attempts,
            record.worker,
            record.started_at,
            record.finished_at,
            record.eta,
            result,
            error,
            record.progress,
        )
        self._store(snapshot, task_id)

    def publish(self, kind: int, *, worker_id: str = "", detail: str = "") -> None:
        """Publish a worker or queue event.

        Args:
            kind: An ``EVENT_KIND_*`` value other than TASK_STATE (use :meth:`publish_task`) and UNSPECIFIED.
            worker_id: The worker concerned, for worker events.
            detail: A human-readable detail.

        Raises:
            ValueError: ``kind`` is TASK_STATE or UNSPECIFIED.
        """
        if kind == _TASK_STATE or kind == events_pb2.EVENT_KIND_UNSPECIFIED:
            raise ValueError(f"publish() takes worker and queue event kinds, not {kind}")
        event = events_pb2.Event(
            sequence=self._last + 1,
            kind=kind,  # type: ignore[arg-type]
            at=self._clock(),
            worker_id=worker_id,
            detail=detail,
        )
        self._store(event, "")

    def _store(self, event: events_pb2.Event | _TaskSnapshot, task_id: str) -> None:
        """Append an event (already numbered last + 1) to the ring and notify listeners and waiters."""
        seq = self._last + 1
        self._last = seq
        if seq <= self.capacity:
            self._ring.append(event)
            self._ids.append(task_id)
        else:
            index = (seq - 1) % self.capacity
            self._ring[index] = event
            self._ids[index] = task_id
        if self._listeners:
            self._notify(self._event_at((seq - 1) % self.capacity))
        if self._any_waiters or self._task_waiters:
            self._wake(task_id)

    def _notify(self, event: events_pb2.Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("event listener %r failed on event %d", listener, event.sequence)

    def _wake(self, task_id: str) -> None:
        """Mark the waiters this event matches, and flush them once at the end of this loop turn."""
        woke = False
        if self._any_waiters:
            self._wake_any = woke = True
        if task_id:
            waiters = self._task_waiters.get(task_id)
            if waiters:
                seq = self._last
                for waiter in waiters:
                    if not waiter.matched:
                        waiter.matched = seq
                        self._woken[waiter] = None
                woke = True
        if woke and self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        woken = list(self._any_waiters) if self._wake_any else []
        woken.extend(self._woken)
        self._wake_any = False
        self._woken = {}
        for waiter in woken:
            if not waiter.done:
                self._answer(waiter)

    # ------------------------------------------------------------------------------------------- read

    def read(
        self, after: int, *, limit: int = 1000, task_ids: Collection[str] = ()
    ) -> tuple[list[events_pb2.Event], bool]:
        """The retained events after a position, oldest first.

        Args:
            after: Return events with a sequence greater than this; 0 for every retained event (see
                the module docstring for positions beyond :attr:`last_sequence`).
            limit: Most events to return.
            task_ids: If given, only task events for these task ids.

        Returns:
            (events, gap): ``gap`` is True when events after ``after`` were already dropped from the
            ring (or ``after`` came from an earlier instance), whether or not they would have matched
            ``task_ids`` (a read cannot tell).

        Raises:
            ValueError: ``after`` is negative or ``limit`` is below 1.
        """
        if after < 0:
            raise ValueError("after must not be negative")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        last = self._last
        oldest = max(1, last - self.capacity + 1)
        if after > last:
            start, gap = oldest, True
        else:
            start, gap = max(after + 1, oldest), after + 1 < oldest
        count = last - start + 1
        if count <= 0:
            return [], gap
        ring = self._ring
        first = (start - 1) % self.capacity
        if not task_ids:
            count = min(count, limit)
            indexes = [(first + i) % len(ring) for i in range(count)]
            return [self._event_at(index) for index in indexes], gap
        wanted = task_ids if isinstance(task_ids, (set, frozenset)) else frozenset(task_ids)
        ids = self._ids
        events: list[events_pb2.Event] = []
        end = first + count
        spans = ((first, end),) if end <= len(ids) else ((first, len(ids)), (0, end - len(ids)))
        for lo, hi in spans:
            for index in range(lo, hi):
                if ids[index] in wanted:
                    events.append(self._event_at(index))
                    if len(events) >= limit:
                        return events, gap
        return events, gap

    def _event_at(self, index: int) -> events_pb2.Event:
        """The event in a ring slot, built from its snapshot the first time it is read."""
        entry = self._ring[index]
        if isinstance(entry, events_pb2.Event):
            return entry
        event = _build_task_event(entry)
        self._ring[index] = event
        return event

    def wait(
        self,
        after: int,
        timeout: float,
        callback: WaitCallback,
        *,
        limit: int = 1000,
        task_ids: Collection[str] = (),
    ) -> None:
        """Long poll: call back with the events after ``after`` as soon as there are any, or at timeout.

        The callback runs at once (inside this call) when matching events or a gap exist already, or
        the bus is closed; otherwise once, at the end of the loop turn in which the next matching
        event is published (several publishes in one turn share one callback), or after ``timeout``
        seconds with whatever there is then (usually ``[]``). It gets (events, last sequence, gap) as
        :meth:`read` would, except that events dropped while it waited count as a gap only if they
        matched ``task_ids``. Must be called with the event loop running.

        Args:
            after: As for :meth:`read`.
            timeout: Longest wait in seconds; 0 or less answers at once.
            callback: Called exactly once, on the loop's thread; an exception it raises is logged.
            limit: As for :meth:`read`.
            task_ids: As for :meth:`read`.

        Raises:
            RuntimeError: No event loop is running.
            ValueError: As for :meth:`read`.
        """
        loop = asyncio.get_running_loop()
        wanted = frozenset(task_ids) if task_ids else _NO_IDS
        events, gap = self.read(after, limit=limit, task_ids=wanted)
        if events or gap or timeout <= 0 or self._closed:
            _call(callback, events, self._last, gap)
            return
        # Nothing matches up to last_sequence, so the wait starts there; from now on the bus watches
        # for matching events, so dropped events the reader would not have wanted are no gap.
        waiter = _Waiter(max(after, self._last), limit, wanted, callback)
        if wanted:
            for task_id in wanted:
                self._task_waiters.setdefault(task_id, {})[waiter] = None
        else:
            self._any_waiters[waiter] = None
        self._loop = loop
        waiter.timer = loop.call_later(timeout, self._expire, waiter)

    def _expire(self, waiter: _Waiter) -> None:
        waiter.timer = None
        if not waiter.done:
            self._answer(waiter)

    def _answer(self, waiter: _Waiter) -> None:
        """Unregister a waiter and call it back with what it can read now."""
        waiter.done = True
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        if waiter.task_ids:
            for task_id in waiter.task_ids:
                waiters = self._task_waiters.get(task_id)
                if waiters is not None:
                    waiters.pop(waiter, None)
                    if not waiters:
                        del self._task_waiters[task_id]
        else:
            self._any_waiters.pop(waiter, None)
        self._woken.pop(waiter, None)
        after = waiter.after
        if waiter.task_ids:
            # The bus watched while it waited: nothing it wanted came before `matched` (or at all).
            after = waiter.matched - 1 if waiter.matched else self._last
        events, gap = self.read(after, limit=waiter.limit, task_ids=waiter.task_ids)
        _call(waiter.callback, events, self._last, gap)

    # ------------------------------------------------------------------------------------- listeners

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event from now on, synchronously as it is published.

        A listener that raises is logged and does not stop publishing or other listeners. Listeners
        run on the publisher's hot path: keep them quick.

        Args:
            listener: Called with each event (shared: do not change it).

        Returns:
            A function that unsubscribes this listener; calling it again does nothing.
        """
        self._listeners = (*self._listeners, listener)  # copied on change: publish iterates it as is
        subscribed = True

        def unsubscribe() -> None:
            nonlocal subscribed
            if not subscribed:
                return
            subscribed = False
            listeners = list(self._listeners)
            for index, item in enumerate(listeners):
                if item is listener:
                    del listeners[index]
                    break
            self._listeners = tuple(listeners)

        return unsubscribe

    # ----------------------------------------------------------------------------------------- close

    def close(self) -> None:
        """Answer every pending long poll with what it has and stop timers; later waits answer at once.

        Publishing and reading keep working after close.
        """
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending = dict(self._any_waiters)
        for waiters in self._task_waiters.values():
            pending.update(waiters)
        self._wake_any = False
        self._woken = {}
        for waiter in pending:
            if not waiter.done:
                self._answer(waiter)


def _call(callback: WaitCallback, events: list[events_pb2.Event], last: int, gap: bool) -> None:
    try:
        callback(events, last, gap)
    except Exception:
        logger.exception("event wait callback failed")


#: A task's fields at the moment it changed state, turned into an Event when read: sequence, at,
#: task_id, name, priority, queued_at, state (as clients see it), attempts, worker, started_at,
#: finished_at, eta, result (None when over MAX_EVENT_RESULT_BYTES), error (brief), progress.
_TaskSnapshot = tuple[
    int,
    float,
    str,
    str,
    int,
    float,
    int,
    int,
    str,
    float,
    float,
    float,
    Payload | None,
    TaskError | None,
    task_pb2.Progress | None,
]


def _build_task_event(snapshot: _TaskSnapshot) -> events_pb2.Event:
    """The Event message for a snapshot taken by :meth:`EventBus.publish_task`."""
    (
        sequence,
        at,
        task_id,
        name,
        priority,
        queued_at,
        state,
        attempts,
        worker,
        started_at,
        finished_at,
        eta,
        result,
        error,
        progress,
    ) = snapshot
    event = events_pb2.Event(sequence=sequence, kind=_TASK_STATE, at=at)
    info = event.task
    info.task_id = task_id
    info.name = name
    info.state = state  # type: ignore[assignment]
    info.priority = priority  # type: ignore[assignment]
    info.attempts = attempts
    info.worker = worker
    info.queued_at = queued_at
    info.started_at = started_at
    info.finished_at = finished_at
    if state in (task_pb2.TASK_STATE_SCHEDULED, task_pb2.TASK_STATE_RETRYING):
        info.eta = eta
    if result is not None:
        info.result.CopyFrom(result)
    if error is not None:
        info.error.CopyFrom(error)
    if progress is not None:
        info.progress.CopyFrom(progress)
    return event
