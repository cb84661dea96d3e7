"""The control plane's in-process executor: at most ``--local-concurrency`` tasks at once.

Slot threads take their next task straight from the coordinator's priority queue (under its
lock) the moment the bound allows, so a critical task queued behind many low ones is the very
next to start. A sync task runs on the slot's thread; an async task (and a time-limited sync
task, which runs in a child process) is handed to the event loop and runs there, so it holds
a place in the bound but no thread. Every outcome reaches the coordinator on the loop, through
one path: ``on_done``. Outcomes of sync tasks cross over in batches, one wake-up for everything
that finished meanwhile.

What tasks report with ``report_progress`` reaches the coordinator through one
:class:`~fastworker.worker.progress.ProgressRelay` (``on_progress``, on the loop, the latest value per
task a few times a second); a run's last value rides on its outcome (``Outcome.progress``).

Each run binds its :class:`~fastworker.client.context.TaskContext` (``current_task()``; the
fields of what the task logs), and ends with one ``fastworker.task`` log line
(:mod:`fastworker.worker.tasklog`).

A running sync task is cancelled by raising :class:`TaskCancelled` in its thread
(``PyThreadState_SetAsyncExc``): it stops at its next Python instruction, its remaining code
never runs, and the slot lives on. A thread blocked inside one long C call (``time.sleep(600)``)
stops when that call returns. Async tasks are cancelled on the loop; children are killed.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastworker.client import _tracing as tracing
from fastworker.client._progress import SINK
from fastworker.client.context import ContextSource, TaskContext
from fastworker.client.errors import TaskCancelled
from fastworker.client.task import TaskFunction
from fastworker.controlplane.records import LOCAL_WORKER_ID, TaskRecord
from fastworker.controlplane.wakeup import LoopWakeup
from fastworker.protocol.v1 import task_pb2
from fastworker.worker.executor import Outcome, failure, prepare, run_async_limited, run_sync, tell_span
from fastworker.worker.policy import TaskPolicy
from fastworker.worker.progress import ProgressRelay, Reported, SlotProgress
from fastworker.worker.tasklog import log_outcome, logs

if TYPE_CHECKING:
    from fastworker.worker.pool import ProcessPool

logger = logging.getLogger(__name__)

#: Seconds the loop may wait for the GIL to deliver outcomes before a slot that ends a run waits
#: for it (at most LOOP_TURN_WAIT) instead of starting its next task: busy slots would keep it from
#: the GIL, and from the requests and timers it serves, for tens of milliseconds.
LOOP_TURN_AFTER = 0.002
LOOP_TURN_WAIT = 0.005


@dataclass(slots=True)
class LocalRun:
    """A task a slot took: its record, its function and its effective policy."""

    record: TaskRecord
    task: TaskFunction[Any, Any]
    policy: TaskPolicy

    def context(self) -> TaskContext:
        """What ``current_task()`` returns in this run (the record counts the attempt already)."""
        record = self.record
        attempt = record.attempts or 1
        headers = record.spec.headers
        return TaskContext(
            record.task_id,
            record.name,
            attempt,
            self.policy.retries_left(attempt),
            LOCAL_WORKER_ID,
            headers.get("traceparent") if headers else None,
        )


#: How a run cancelled while running ends its tracing span, as a subworker's does: (outcome, error type, message).
_CANCELLED_RUN = ("cancelled", "TaskCancelled", "cancelled while running")
#: A run still under way when the control plane stopped (its drain timeout passed): what its span and log line say.
_STOPPED_BY_SHUTDOWN = (
    "failure",
    "ControlPlaneLost",
    "stopped as the control plane shut down (its drain timeout passed); with --journal it runs again after the"
    " restart if it has retries left, else it fails with ControlPlaneLost",
)
_CAUGHT_INTERRUPT = (
    "cancelled while running; it caught the interrupt (TaskCancelled) and ran on until it ended, what it returned"
    " or raised dropped: let TaskCancelled propagate"
)
#: Blocks until a task may start locally and marks it RUNNING; None means "stop". Its argument
#: is True when the calling slot just ended a run: that run's place in the bound is freed first,
#: under the same lock acquisition.
TakeNext = Callable[[bool], LocalRun | None]
#: The coordinator's completion callback, on the loop: (record, outcome, cancelled while running).
DoneCallback = Callable[[TaskRecord, Outcome, bool], None]
#: Seconds between the loop's looks for sync runs that started, while the slots are in use: the
#: longest a long task's RUNNING event lags its start (a short one's comes with its outcome).
START_WATCH_INTERVAL = 0.25
#: A run started, told on the loop: (record, its attempt), for the event stream.
StartedCallback = Callable[[TaskRecord, int], None]
#: Frees the place in the local bound of a run that ended on the loop (async, or in a child process).
Release = Callable[[], None]
#: Takes a running task's latest progress, on the loop: (task id, attempt, progress).
ProgressCallback = Callable[[str, int, task_pb2.Progress], object]


class SlotRuns:
    """One slot thread's handle for the sync runs on it: registered by task id while each runs.

    One per slot, reused by each run (``interrupted`` is reset when a run starts): a cancel finds it
    by task id and checks, under the slot's lock, that this task is still the one registered.
    """

    __slots__ = ("interrupted", "lock", "record", "thread_id")

    def __init__(self) -> None:
        self.thread_id = threading.get_ident()
        #: Contended only by a cancel of this slot's run: an interrupt is sent only while the run is registered.
        self.lock = threading.Lock()
        self.interrupted = False
        #: The task of its latest run (for the loop's looks at what runs: ``LocalExecutor._watch_starts``).
        self.record: TaskRecord | None = None


class LocalExecutor:
    """Runs tasks in this process, at most ``concurrency`` at once, and reports each outcome on the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        concurrency: int,
        take_next: TakeNext,
        on_done: DoneCallback,
        release: Release,
        *,
        on_started: StartedCallback | None = None,
        on_progress: ProgressCallback | None = None,
        allow_pickle: bool = False,
        task_modules: Sequence[str] = (),
        sys_path: Sequence[str] = (),
        isolate_sync: bool = False,
    ) -> None:
        """Create the slots (not started).

        Args:
            loop: The event loop that owns the coordinator.
            concurrency: Most tasks running at once (and the number of slot threads).
            take_next: Blocks until a task may start.
            on_done: Called on the loop with every outcome.
            release: Called as each run on the loop ends (before ``on_done``), so the next may start at once.
            on_started: Called on the loop once a run started, or again while it runs (the callee
                tells each run once); a short sync run's start may come only with its outcome.
            on_progress: Called on the loop with running tasks' progress (rate-limited).
            allow_pickle: Accept and produce pickle payloads.
            task_modules: The modules child processes import to run time-limited sync tasks.
            sys_path: Folders those children put first on sys.path.
            isolate_sync: Run every sync task in a child process (``--local-pool processes``), not
                only time-limited ones: a task that crashes its process then costs a child, not this one.
        """
        if concurrency < 0:
            raise ValueError("local concurrency cannot be negative")
        self._loop = loop
        self.concurrency = concurrency
        self._take_next = take_next
        self._on_done = on_done
        self._on_started = on_started or (lambda record, attempt: None)
        self._release = release
        self._on_progress = on_progress
        self._progress = ProgressRelay(self._deliver_progress, loop=loop)
        self._allow_pickle = allow_pickle
        self._task_modules = tuple(task_modules)
        self._sys_path = tuple(sys_path)
        self._isolate_sync = isolate_sync
        self._pool: ProcessPool | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._completed: deque[tuple[TaskRecord, Outcome, bool]] = deque()
        #: Sync runs that started on slot threads while the loop did not watch them, with their attempt.
        self._started: deque[tuple[TaskRecord, int]] = deque()
        #: True while the loop looks at the slots' runs on a timer: slots then do not queue their
        #: starts nor wake it for one (a second wake-up per task, when slots run tasks one after
        #: another, cost ~10% of a round trip, and queueing every start ~5% of a busy slot's task).
        self._watching = False
        self._watch_timer: asyncio.TimerHandle | None = None
        #: Outcomes were delivered since the last look (the slots are in use: keep watching).
        self._active = False
        #: Tells the loop that slot threads completed runs (made when the slots start).
        self._completions: LoopWakeup | None = None
        #: Tasks running on the loop (async, or in a child), by task id: loop only.
        self._loop_runs: dict[str, asyncio.Task[Outcome]] = {}
        #: Loop runs cancelled before their coroutine's first step (it never runs: their end is told for them).
        self._cancelled_before_first_step: set[str] = set()
        #: Set by close(): runs stopped from then on were stopped by the shutdown, not by a cancel.
        self._closing = False
        #: Loop runs cancelled on request (a run that catches the cancellation still ends CANCELLED).
        self._loop_cancels: set[str] = set()
        #: Sync tasks running on slot threads, by task id (each entry guarded by its slot's lock).
        self._sync_runs: dict[str, SlotRuns] = {}
        #: Cancels of tasks a slot took but that started on neither side yet. A slot registers its
        #: run before it looks here and the loop looks for a registered run before it adds here
        #: (single dict and set operations, atomic): so one of the two sees the other.
        self._cancel_before_start: set[str] = set()
        self._threads = [
            threading.Thread(target=self._slot_main, name=f"fastworker-slot-{i}", daemon=True)
            for i in range(concurrency)
        ]

    def start(self) -> None:
        """Start the slot threads."""
        if self._threads:
            self._completions = LoopWakeup(self._loop, self._deliver_completed)
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------------------------ slot threads

    def _slot_main(self) -> None:
        slot = SlotRuns()
        completions = self._completions
        assert completions is not None  # made before the threads start
        slot_progress = SlotProgress(self._progress)
        SINK.set(slot_progress)  # once for the thread: each run only tells it which run is under way
        ended_one = False
        while True:
            freeing, ended_one = ended_one, False  # freed by this take, whatever it raises: never twice
            try:
                run = self._take_next(freeing)
            except Exception:  # a bug must not silently cost a slot: log it and keep the slot alive
                logger.exception("a local slot failed to take its next task")
                time.sleep(0.1)
                continue
            if run is None:
                return
            if run.task.is_async or self.isolated(run):
                try:
                    self._loop.call_soon_threadsafe(self._start_on_loop, run)
                except RuntimeError:  # the loop closed during shutdown
                    return
                continue
            # Made only if the task asks for it or something logs (a maker is bound meanwhile).
            record, outcome, cancelled = self._run_here(run, run.context, slot, slot_progress)
            ended_one = True  # its place is freed by the next take, under that same lock
            # Read before the outcome is handed on: the loop may count the next attempt at once.
            ended = run.context() if logs(outcome) else None
            self._completed.append((record, outcome, cancelled))
            completions.set()
            completions.let_loop_run(LOOP_TURN_AFTER, LOOP_TURN_WAIT)
            if ended is not None:
                log_outcome(ended, outcome, run.policy)  # once the outcome is on its way

    def _run_here(
        self, run: LocalRun, context: ContextSource, slot: SlotRuns, slot_progress: SlotProgress | None
    ) -> tuple[TaskRecord, Outcome, bool]:
        """Run a sync task on this thread; an interrupt (cancel) ends it as cancelled.

        Not logged here: the slot logs the outcome once it handed it on. The run's span opens before
        the slot is registered for cancels, as a subworker's wraps the whole run: a cancel that lands
        before the task's code starts still ends one span, cancelled.
        """
        if tracing.tracer() is None:  # tracing off: no span to open or tell (every run asks)
            return self._run_registered(run, context, slot, slot_progress)
        record = run.record
        with tracing.process(record.spec, record.attempts, LOCAL_WORKER_ID, ready_at=record.ready_at) as span:
            ended = self._run_registered(run, context, slot, slot_progress)
            tell_span(span, ended[1], task=run.task, ctx=context)
        return ended

    def _run_registered(
        self, run: LocalRun, context: ContextSource, slot: SlotRuns, slot_progress: SlotProgress | None
    ) -> tuple[TaskRecord, Outcome, bool]:
        """The run, registered for cancels meanwhile (an interrupt can land anywhere in here, and only here)."""
        if slot_progress is None:
            slot_progress = SlotProgress(self._progress)
        record = run.record
        task_id = record.task_id
        slot_lock = slot.lock
        runs = self._sync_runs
        slot.interrupted = False  # this run's: the last run's registration was withdrawn under the lock
        interrupted = False
        try:
            try:
                slot.record = record
                runs[task_id] = slot
                # The loop tells the event stream it runs: at its next look at the slots while it
                # watches them (``_watch_starts``; registered first, so that a look it missed is
                # followed by another) or with the outcome, whichever comes first; else woken for it.
                if not self._watching:
                    self._started.append((record, record.attempts))
                    if self._completions is not None:
                        self._completions.set()
                if self._cancel_before_start and task_id in self._cancel_before_start:
                    self._cancel_before_start.discard(task_id)
                    return record, failure("TaskCancelled", "cancelled before it started"), True
                prepared = prepare(run.task, record.spec.arguments, allow_pickle=self._allow_pickle)
                if isinstance(prepared, Outcome):
                    outcome = prepared
                else:
                    slot_progress.start(task_id, record.attempts)
                    try:
                        outcome = run_sync(
                            run.task, prepared[0], prepared[1], allow_pickle=self._allow_pickle, context=context
                        )
                    finally:
                        slot_progress.active = False
                    if slot_progress.latest is not None:
                        outcome.progress = slot_progress.finish()
            finally:
                with slot_lock:
                    runs.pop(task_id, None)
                    interrupted = slot.interrupted
                slot.record = None  # (it holds the arguments: not kept past the run)
                if interrupted:
                    _clear_interrupt(slot.thread_id)  # sent, perhaps not raised yet: it must not hit the slot
        except TaskCancelled:
            with slot_lock:
                runs.pop(task_id, None)
            return record, failure("TaskCancelled", "cancelled while running", started_at=record.started_at), True
        except BaseException as exc:  # a slot must survive anything a task does
            outcome = failure(type(exc).__name__, str(exc), started_at=record.started_at)
        if interrupted:  # it caught the interrupt and returned, or raised something else: cancelled all the same
            return record, failure("TaskCancelled", _CAUGHT_INTERRUPT, started_at=record.started_at), True
        return record, outcome, False

    # ------------------------------------------------------------------------------------ event loop

    def _deliver_completed(self) -> None:
        # Only the outcomes here now: slots that add more meanwhile wake the loop again, and in
        # between it serves requests and timers (with ``while completed``, busy slots kept it here).
        self._tell_all_started()  # before the outcomes: a run's start is told before its end
        self._active = True
        if self._watch_timer is None:
            self._watch(True)
        completed = self._completed
        count = len(completed)
        if self._cancel_before_start:
            for _ in range(count):
                self._report(*completed.popleft())
            return
        on_done = self._on_done  # the hot path of ``_report``, inlined: one loop wake-up, thousands of ends
        for _ in range(count):
            record, outcome, cancelled = completed.popleft()
            try:
                on_done(record, outcome, cancelled)
            except Exception:
                logger.exception("completion handling failed for task %s", record.task_id)

    def _watch(self, on: bool) -> None:
        """Look for sync runs that started every ``START_WATCH_INTERVAL`` (on), or let slots wake the loop for them."""
        self._watching = on
        self._watch_timer = self._loop.call_later(START_WATCH_INTERVAL, self._watch_starts) if on else None

    def _watch_starts(self) -> None:
        """Tell the sync runs under way (those told already are skipped); watch on while slots were busy."""
        # Not watching first, then the runs read: a slot registers its run before it looks whether
        # the loop watches, so each run is either in this read, queued by its slot, or in the next look.
        self._watching = False
        runs = list(self._sync_runs.items())  # (a copy: slots change it meanwhile)
        busy = self._active or bool(runs)
        self._active = False
        self._watch(busy)
        self._tell_all_started()
        for task_id, slot in runs:
            record = slot.record
            if record is not None and record.task_id == task_id:
                self._tell_started(record, record.attempts)

    def _tell_all_started(self) -> None:
        started = self._started
        for _ in range(len(started)):
            self._tell_started(*started.popleft())

    def _tell_started(self, record: TaskRecord, attempt: int) -> None:
        try:
            self._on_started(record, attempt)
        except Exception:
            logger.exception("start handling failed for task %s", record.task_id)

    def _report(self, record: TaskRecord, outcome: Outcome, cancelled: bool) -> None:
        if self._cancel_before_start:
            # A cancel that raced this run's end (it found the run on neither side) is moot now.
            self._cancel_before_start.discard(record.task_id)
        try:
            self._on_done(record, outcome, cancelled)
        except Exception:
            logger.exception("completion handling failed for task %s", record.task_id)

    def _start_on_loop(self, run: LocalRun) -> None:
        record = run.record
        task_id = record.task_id
        cancelled = task_id in self._cancel_before_start
        self._cancel_before_start.discard(task_id)
        if cancelled:
            self._release()
            self._report(record, self._cancelled_unstarted(run), True)
            return
        job = self._loop.create_task(self._run_on_loop(run), name=f"fastworker-task-{task_id}")
        self._loop_runs[task_id] = job
        self._tell_started(record, record.attempts)
        job.add_done_callback(lambda done, run=run: self._loop_run_done(run, done))  # type: ignore[misc]

    def _cancelled_unstarted(self, run: LocalRun) -> Outcome:
        """The outcome of a run cancelled before its code started, with the span and log line a started run's has."""
        record = run.record
        outcome = failure("TaskCancelled", "cancelled while running")
        with tracing.process(record.spec, record.attempts, LOCAL_WORKER_ID, ready_at=record.ready_at) as span:
            span.ended(*_CANCELLED_RUN)
        log_outcome(run.context(), outcome, run.policy)
        return outcome

    async def _run_on_loop(self, run: LocalRun) -> Outcome:
        context = run.context()
        started = time.time()
        try:
            record = run.record
            with tracing.process(record.spec, record.attempts, LOCAL_WORKER_ID, ready_at=record.ready_at) as span:
                try:
                    outcome = await self._run_on_loop_untraced(run, context)
                except asyncio.CancelledError:
                    span.ended(*self._why_stopped(record))
                    raise
                tell_span(span, outcome, task=run.task, ctx=context)
        except asyncio.CancelledError:
            _, error_type, message = self._why_stopped(record)
            log_outcome(context, failure(error_type, message, started_at=started))
            raise
        log_outcome(context, outcome, run.policy)
        return outcome

    def _why_stopped(self, record: TaskRecord) -> tuple[str, str, str]:
        """How a loop run stopped from outside ends its span: cancelled by request, or by the shutdown (close)."""
        if self._closing and record.task_id not in self._loop_cancels:
            return _STOPPED_BY_SHUTDOWN
        return _CANCELLED_RUN

    async def _run_on_loop_untraced(self, run: LocalRun, context: TaskContext | None = None) -> Outcome:
        record, policy = run.record, run.policy
        hard, soft = policy.timeout, policy.soft_timeout
        sink = self._progress.sink(record.task_id, record.attempts)
        if not run.task.is_async:
            pool = await self._ensure_pool()
            outcome = await pool.run(
                record.task_id,
                record.name,
                record.spec.arguments,
                timeout=hard or None,
                soft_timeout=soft or None,
                progress=sink,
                context=context,
            )
        else:
            prepared = prepare(run.task, record.spec.arguments, allow_pickle=self._allow_pickle)
            if isinstance(prepared, Outcome):
                return prepared
            outcome = await run_async_limited(
                run.task,
                prepared[0],
                prepared[1],
                hard=hard,
                soft=soft,
                allow_pickle=self._allow_pickle,
                progress=sink,
                context=context,
            )
        if sink.latest is not None:
            outcome.progress = self._progress.finish(sink)
        return outcome

    def _deliver_progress(self, batch: list[Reported]) -> None:
        if self._on_progress is not None:
            for task_id, attempt, progress in batch:
                self._on_progress(task_id, attempt, progress.to_wire())

    def _loop_run_done(self, run: LocalRun, job: asyncio.Task[Outcome]) -> None:
        record = run.record
        self._loop_runs.pop(record.task_id, None)
        self._release()
        asked = record.task_id in self._loop_cancels
        self._loop_cancels.discard(record.task_id)
        if job.cancelled():
            if record.task_id in self._cancelled_before_first_step:
                self._cancelled_before_first_step.discard(record.task_id)
                self._report(record, self._cancelled_unstarted(run), True)
            else:
                self._report(record, failure("TaskCancelled", "cancelled while running"), True)
            return
        if asked:  # it caught asyncio.CancelledError and returned or raised later: cancelled all the same
            message = (
                "cancelled while running; it caught the cancellation (asyncio.CancelledError) and ran on until it"
                " returned, its value dropped"
            )
            self._report(record, failure("TaskCancelled", message), True)
            return
        error = job.exception()
        if error is not None:
            self._report(record, failure(type(error).__name__, str(error)), False)
            return
        self._report(record, job.result(), False)

    def isolated(self, run: LocalRun) -> bool:
        """True if this sync task runs in a child process.

        Always with ``--local-pool processes``; otherwise when it has a time limit, which a thread
        cannot enforce.
        """
        return (
            not run.task.is_async
            and bool(self._task_modules)
            and (self._isolate_sync or bool(run.policy.timeout or run.policy.soft_timeout))
        )

    def interrupt_pending(self, task_id: str) -> bool:
        """True if this task runs on a slot thread that was sent an interrupt it has not acted on yet (loop)."""
        entry = self._sync_runs.get(task_id)
        return entry is not None and entry.interrupted

    def cancel_running(self, task_id: str) -> bool:
        """Stop a running local task (on the loop); False if it is not running here any more.

        A sync task gets :class:`TaskCancelled` raised in its thread; a loop task is cancelled,
        or, if the slot's hand-over has not reached the loop yet, never started.
        """
        job = self._loop_runs.get(task_id)
        if job is not None:
            if job.done() or not job.cancel():
                return False
            if inspect.getcoroutinestate(job.get_coro()) == inspect.CORO_CREATED:  # type: ignore[arg-type]
                self._cancelled_before_first_step.add(task_id)  # its coroutine never runs: no span, no log of its own
            self._loop_cancels.add(task_id)  # a run that catches it and returns still ended CANCELLED
            return True
        entry = self._sync_runs.get(task_id)
        if entry is None:
            # Taken by a slot, started on neither side yet (or just ended, its outcome on the way):
            # the run looks here once registered; the outcome's arrival clears it.
            self._cancel_before_start.add(task_id)
            return True
        with entry.lock:
            if self._sync_runs.get(task_id) is entry and not entry.interrupted:
                entry.interrupted = True
                _send_interrupt(entry.thread_id)
        return True

    async def _ensure_pool(self) -> ProcessPool:
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self._pool is None:
                from fastworker.worker.pool import ProcessPool  # multiprocessing loads with --local-pool processes only

                pool = ProcessPool(
                    max(1, self.concurrency),
                    self._task_modules,
                    allow_pickle=self._allow_pickle,
                    sys_path=self._sys_path,
                )
                await pool.start()
                self._pool = pool
            return self._pool

    async def close_pool(self, timeout: float = 5.0) -> None:
        """Stop the child processes of time-limited sync tasks, if any were started."""
        if self._pool is not None:
            await self._pool.close(timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Cancel tasks running on the loop and wait briefly for idle slot threads to leave.

        Runs still under way (the drain timeout passed) end their spans and log lines as stopped by
        the shutdown, not as cancelled: a sync one's thread ends with the process, so it is logged here.
        """
        self._closing = True
        self._progress.close()
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None
        for job in list(self._loop_runs.values()):
            job.cancel()
        for slot in list(self._sync_runs.values()):
            record = slot.record
            if record is not None:
                context = TaskContext(record.task_id, record.name, record.attempts, 0, LOCAL_WORKER_ID)
                log_outcome(context, failure(*_STOPPED_BY_SHUTDOWN[1:], started_at=record.started_at or None))
        for thread in self._threads:
            thread.join(timeout=timeout / max(1, len(self._threads)))
        if self._completions is not None:
            self._completions.close()


def _send_interrupt(thread_id: int) -> None:
    """Raise TaskCancelled in a thread at its next Python instruction (the documented C API)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(TaskCancelled))


def _clear_interrupt(thread_id: int) -> None:
    """Withdraw an interrupt not raised yet (the task ended first)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
