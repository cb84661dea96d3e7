"""Run sync tasks on threads of the worker process (``fastworker-worker --pool threads``): cheap, but no isolation.

:class:`ThreadPool` offers what the runtime uses of :class:`~fastworker.worker.pool.ProcessPool`
(``start``, ``run``, ``cancel``, ``close``, ``pids``), for sync tasks that wait on I/O or release
the GIL, where a child process per slot costs more than it protects. ``size`` slot threads run
one task each at a time; the pool hands tasks to idle slots on the event loop, and the slots hand
their outcomes back through one queue, with one ``call_soon_threadsafe`` (a wake-up of the loop)
for all that end before the loop gets to them, not one per task.

A thread cannot be killed, so a limit or a cancel raises an exception in the task's thread
(``PyThreadState_SetAsyncExc``). It lands at the thread's next Python instruction: code blocked
in one C call (``time.sleep``, a socket read, a lock) sees it only when that call returns.

* soft time limit: :class:`~fastworker.client.errors.SoftTimeLimitExceeded` (the class the
  process pool raises) is raised in the task, which may catch it and clean up;
* hard time limit: the run fails with ``TimeLimitExceeded`` at the limit,
  :class:`~fastworker.client.TaskInterrupted` is raised in the task and its thread is abandoned
  (a warning is logged);
* cancel: the run fails with ``TaskCancelled`` at once and :class:`~fastworker.client.TaskCancelled`
  (a ``TaskInterrupted``) is raised in the task.

A thread whose run ended that way keeps its slot until the task's function really returns (what
it returns then is dropped), so no more than ``size`` tasks ever run at once: a task that never
returns holds its slot for good. Threads are never replaced, so ``--max-tasks-per-child`` and
``--max-child-rss`` have no meaning here, and a task that crashes the process (``os.abort()``, a
segfault) takes the worker down with it.

Not thread-safe: call every method from the thread that runs the pool's event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Callable
from enum import Enum
from time import time
from typing import Any

from fastworker.client import _tracing as tracing
from fastworker.client._progress import ProgressSink
from fastworker.client.context import TaskContext
from fastworker.client.errors import SoftTimeLimitExceeded, TaskCancelled, TaskInterrupted
from fastworker.client.task import TaskFunction, TaskRegistry
from fastworker.protocol.v1.task_pb2 import Payload
from fastworker.worker.executor import Outcome, failure, prepare, run_sync
from fastworker.worker.slotwait import SlotWaiters

__all__ = ["TaskInterrupted", "ThreadPool"]  # TaskInterrupted: fastworker.client's, kept importable here

_log = logging.getLogger(__name__)


class _Stage(Enum):
    QUEUED = "queued"  # handed to its slot; the slot's thread has not begun it
    RUNNING = "running"  # the slot's thread is in it: interrupts are raised there
    DONE = "done"  # the slot's thread left it: interrupts are not sent any more


class _Slot:
    """One slot thread: its inbox, and the run it holds (loop side; an abandoned run included)."""

    __slots__ = ("ident", "inbox", "lock", "run")

    def __init__(self) -> None:
        self.ident = 0
        self.inbox: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        #: Guards the stage, ``early`` and ``sent`` of the run on this slot: an interrupt is sent
        #: only while its run is RUNNING, and one not raised yet is withdrawn when the run ends.
        self.lock = threading.Lock()
        self.run: _Run | None = None


class _Run:
    """One task handed to a slot, and what the loop decided about it."""

    __slots__ = (
        "abandoned_at",
        "arguments",
        "context",
        "early",
        "future",
        "name",
        "progress",
        "sent",
        "slot",
        "soft",
        "stage",
        "started_at",
        "task_id",
        "tf",
        "timers",
        "trace",
    )

    def __init__(
        self,
        slot: _Slot,
        task_id: str,
        tf: TaskFunction[Any, Any],
        arguments: Payload,
        soft: float,
        progress: ProgressSink | None,
        future: asyncio.Future[Outcome],
        context: TaskContext | None = None,
    ) -> None:
        self.slot = slot
        self.context = context
        self.task_id = task_id
        self.name = tf.name
        self.tf = tf
        self.arguments = arguments
        self.soft = soft
        self.progress = progress
        self.trace = tracing.carrier()
        self.future = future
        self.started_at = time()
        self.timers: list[asyncio.TimerHandle] = []
        self.stage = _Stage.QUEUED
        #: An interrupt that came while QUEUED: the run never starts.
        self.early: type[BaseException] | None = None
        #: An interrupt was sent to the thread while RUNNING.
        self.sent = False
        #: Loop time when the hard time limit abandoned its thread (0: it did not).
        self.abandoned_at = 0.0


class ThreadPool:
    """A fixed number of threads of this process that run sync tasks, each thread one task at a time.

    Args:
        size: How many threads run tasks at once (at least 1).
        registry: The tasks they may run (loaded in this process already).
        allow_pickle: Accept pickled arguments and pickle results (an explicit opt-in).

    Raises:
        ValueError: ``size`` is below 1.
        TypeError: ``size`` is not an int.
    """

    def __init__(self, size: int, registry: TaskRegistry, *, allow_pickle: bool = False) -> None:
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be an int, not {type(size).__qualname__}")
        if size < 1:
            raise ValueError(f"size must be 1 or more, got {size}")
        self._size = size
        self._registry = registry
        self._allow_pickle = bool(allow_pickle)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: list[_Slot] = []
        self._idle: deque[_Slot] = deque()
        self._waiters: SlotWaiters[_Slot] = SlotWaiters(self._release)
        self._running: dict[str, _Run] = {}  # runs whose outcome is not decided yet
        #: Runs the slot threads left, with how they ended, for the loop to settle (:meth:`_deliver_ended`).
        self._ended: deque[tuple[_Run, Outcome]] = deque()
        self._wake_asked = False
        self._started = False
        self._closed = False
        #: Called on the loop when a thread given up at its hard limit (or cancelled) leaves its task.
        self.on_abandoned_returned: Callable[[], None] = lambda: None

    @property
    def size(self) -> int:
        """How many threads the pool has."""
        return self._size

    @property
    def busy(self) -> int:
        """How many threads are in a task now, abandoned ones included."""
        return sum(1 for slot in self._slots if slot.run is not None)

    @property
    def abandoned(self) -> int:
        """Threads still inside a task whose outcome was already given (hard limit, cancel): not free to run another."""
        return sum(
            1 for slot in self._slots if slot.run is not None and self._running.get(slot.run.task_id) is not slot.run
        )

    @property
    def pids(self) -> list[int]:
        """None: the tasks run in this process (the runtime counts its memory already)."""
        return []

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<ThreadPool {state} size={self._size} busy={self.busy}>"

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the threads.

        Raises:
            RuntimeError: The pool was started or closed already.
        """
        if self._started or self._closed:
            raise RuntimeError("a ThreadPool can be started once")
        self._loop = asyncio.get_running_loop()
        self._started = True
        for number in range(1, self._size + 1):
            slot = _Slot()
            # A daemon: a thread stuck in an abandoned task must not keep the worker from exiting.
            thread = threading.Thread(target=self._serve, args=(slot,), name=f"fastworker-thread-{number}", daemon=True)
            thread.start()
            assert thread.ident is not None
            slot.ident = thread.ident
            self._slots.append(slot)
            self._idle.append(slot)

    async def close(self, timeout: float = 5) -> None:
        """Let running tasks finish for up to ``timeout``, then fail them with ``WorkerLost`` and interrupt them.

        ``run()`` calls waiting for a thread raise RuntimeError. Idle threads exit at once, busy ones
        once their task returns.

        Args:
            timeout: Seconds running tasks get to finish.
        """
        if timeout < 0 or math.isnan(timeout):
            raise ValueError(f"timeout must be 0 or more seconds, got {timeout!r}")
        if not self._closed:
            self._closed = True
            self._waiters.fail_all(RuntimeError("the thread pool is closed"))
            while self._idle:
                self._idle.popleft().inbox.put(None)
        pending = [run.future for run in self._running.values()]
        if pending and timeout > 0:
            await asyncio.wait(pending, timeout=timeout)
        for run in list(self._running.values()):
            message = f"the thread pool closed while task {run.name!r} ran; its thread was interrupted"
            self._stop(run, failure("WorkerLost", message, started_at=run.started_at))

    # -- running tasks ----------------------------------------------------------------------

    async def run(
        self,
        task_id: str,
        name: str,
        arguments: Payload,
        *,
        timeout: float | None = None,
        soft_timeout: float | None = None,
        progress: ProgressSink | None = None,
        context: TaskContext | None = None,
    ) -> Outcome:
        """Run one sync task on a free thread and return how it ended; waits for a free thread.

        Args:
            task_id: The task's id; unique among the tasks in this pool.
            name: The registered task name.
            arguments: The encoded ``[args, kwargs]``.
            timeout: Hard time limit in seconds, or None for none: when it passes, the Outcome fails
                with ``TimeLimitExceeded`` and the thread is interrupted and abandoned.
            soft_timeout: Soft time limit in seconds, or None: ``SoftTimeLimitExceeded`` is raised
                inside the task, which may clean up.
            progress: Called on the task's thread with what the task reports with
                ``report_progress`` (so it must be thread-safe, as a ``RunSink`` is).
            context: What ``current_task()`` returns in the task (None: it raises ``NoCurrentTask``).

        Returns:
            The task's Outcome. Besides what the task itself raised, it fails with
            ``TimeLimitExceeded``, ``TaskCancelled`` (:meth:`cancel`), ``WorkerLost`` (the pool
            closed under it) or ``UnknownTask``.

        Raises:
            TypeError: The task is an ``async def``; run those on the event loop.
            ValueError: ``timeout`` is not a positive number, or ``task_id`` is in the pool already.
            RuntimeError: The pool is not started, or is closed.
            asyncio.CancelledError: The caller was cancelled; the task is interrupted as by :meth:`cancel`.
        """
        loop = self._loop
        if loop is None or self._closed:
            raise RuntimeError("the thread pool is closed" if self._closed else "start() the thread pool first")
        tf = self._registry.get(name)
        if tf is not None and tf.is_async:
            raise TypeError(f"task {name!r} is async: await it on the event loop, not in a pool thread")
        if timeout is not None:
            _check_seconds("timeout", timeout)
        if task_id in self._running or task_id in self._waiters:
            raise ValueError(f"task {task_id!r} is in this thread pool already")
        if tf is None:
            return failure("UnknownTask", f"no task named {name!r} in this worker's task modules")
        # The slot that went idle last: its thread is the warmest (as the process pool's children).
        slot = self._idle.pop() if self._idle else await self._waiters.wait(task_id)
        if slot is None or self._waiters.cancelled_after_hand_over(task_id):
            if slot is not None:
                self._release(slot)
            return failure("TaskCancelled", f"task {name!r} was cancelled before it started")
        if self._is_closed():  # closed while this run() waited
            self._release(slot)
            raise RuntimeError("the thread pool is closed")
        soft = soft_timeout if soft_timeout is not None and soft_timeout > 0 else 0.0
        run = _Run(slot, task_id, tf, arguments, soft, progress, loop.create_future(), context)
        slot.run = run
        self._running[task_id] = run
        if soft:
            run.timers.append(loop.call_later(soft, self._interrupt, run, SoftTimeLimitExceeded))
        if timeout is not None:
            run.timers.append(loop.call_later(timeout, self._on_time_limit, run, timeout))
        slot.inbox.put(run)
        try:
            return await run.future
        except asyncio.CancelledError:
            if self._running.get(task_id) is run:
                self._stop(run, None)
            raise

    def cancel(self, task_id: str) -> bool:
        """Cancel a task of this pool: its run fails with ``TaskCancelled`` now, and its thread is interrupted.

        A task still waiting for a free thread is cancelled too (it never starts).

        Returns:
            True when the task was running or waiting in this pool; False otherwise.
        """
        waiting = self._waiters.cancel(task_id)
        if waiting is not None:
            return waiting
        run = self._running.get(task_id)
        if run is None:
            return False
        message = f"task {run.name!r} was cancelled while it ran; its thread was interrupted"
        self._stop(run, failure("TaskCancelled", message, started_at=run.started_at), TaskCancelled)
        return True

    def _is_closed(self) -> bool:
        return self._closed

    def _release(self, slot: _Slot) -> None:
        """Hand a free thread to the oldest waiting run(), or queue it as idle; after close, let it exit."""
        if self._closed:
            slot.inbox.put(None)
            return
        if not self._waiters.hand(slot):
            self._idle.append(slot)

    # -- limits and interrupts (on the loop) ------------------------------------------------

    def _on_time_limit(self, run: _Run, limit: float) -> None:
        if self._running.get(run.task_id) is not run:
            return
        _log.warning(
            "task %s (%s) exceeded its hard time limit of %g s: a thread cannot be killed, so it is "
            "interrupted and abandoned; its slot stays busy until the task's function returns",
            run.task_id,
            run.name,
            limit,
            extra={"task_id": run.task_id, "task_name": run.name},
        )
        assert self._loop is not None
        run.abandoned_at = self._loop.time()
        message = f"task {run.name!r} exceeded its hard time limit of {limit:g} s; its thread was interrupted"
        self._stop(run, failure("TimeLimitExceeded", message, started_at=run.started_at))

    def _stop(self, run: _Run, outcome: Outcome | None, interrupt: type[TaskInterrupted] = TaskInterrupted) -> None:
        """Decide a run's outcome now (None: the caller was cancelled) and raise ``interrupt`` in its thread."""
        for timer in run.timers:
            timer.cancel()
        del self._running[run.task_id]
        if not run.future.done():
            if outcome is None:
                run.future.cancel()
            else:
                run.future.set_result(outcome)
        self._interrupt(run, interrupt)

    def _interrupt(self, run: _Run, exc: type[BaseException]) -> None:
        """Raise ``exc`` in the run's thread if it is in the run; before it, the run will not start."""
        slot = run.slot
        with slot.lock:
            if run.stage is _Stage.RUNNING:
                run.sent = True
                _raise_in(slot.ident, exc)
            elif run.stage is _Stage.QUEUED:
                run.early = exc

    def _on_done(self, run: _Run, outcome: Outcome) -> None:
        """A slot's thread left its run: settle the run if the loop had not, and free the slot."""
        for timer in run.timers:
            timer.cancel()
        given_up = self._running.get(run.task_id) is not run
        if not given_up:
            del self._running[run.task_id]
            if not run.future.done():
                run.future.set_result(outcome)
        if run.abandoned_at:
            assert self._loop is not None
            _log.info(
                "task %s (%s), abandoned at its hard time limit, returned %.1f s later; its slot is free again",
                run.task_id,
                run.name,
                self._loop.time() - run.abandoned_at,
                extra={"task_id": run.task_id, "task_name": run.name},
            )
        run.slot.run = None
        self._release(run.slot)
        if given_up:
            self.on_abandoned_returned()

    # -- slot threads -----------------------------------------------------------------------

    def _serve(self, slot: _Slot) -> None:
        """A slot thread's life: run what the loop hands it, one run at a time, until it is handed None."""
        loop = self._loop
        assert loop is not None
        while True:
            run = slot.inbox.get()
            if run is None:
                return
            try:
                outcome = self._execute(slot, run)
            except BaseException as exc:  # an interrupt that landed just outside the task: the slot lives on
                outcome = failure(type(exc).__name__, _text(exc), started_at=run.started_at)
            self._ended.append((run, outcome))
            if not self._wake_asked:
                self._wake_asked = True
                try:
                    loop.call_soon_threadsafe(self._deliver_ended)
                except RuntimeError:  # the loop closed (the worker is exiting): nobody waits for it
                    return

    def _deliver_ended(self) -> None:
        """Settle every run the slots left since the last call (on the loop): one wake-up for all of them."""
        self._wake_asked = False  # before reading: a run added from now on asks again
        ended = self._ended
        for _ in range(len(ended)):
            run, outcome = ended.popleft()
            try:
                self._on_done(run, outcome)
            except Exception:  # one run's failure must not leave the others of the batch unsettled
                _log.exception("settling task %s (%s) failed", run.task_id, run.name)

    def _execute(self, slot: _Slot, run: _Run) -> Outcome:
        """Run one task on this thread, with interrupts allowed only while it is under way."""
        with slot.lock:
            early = run.early
            run.stage = _Stage.RUNNING if early is None else _Stage.DONE
        if early is not None:
            return failure(early.__name__, f"task {run.name!r} was stopped before it started")
        try:
            prepared = prepare(run.tf, run.arguments, allow_pickle=self._allow_pickle)
            if isinstance(prepared, Outcome):
                return prepared
            with tracing.attached(run.trace):
                outcome = run_sync(
                    run.tf,
                    prepared[0],
                    prepared[1],
                    allow_pickle=self._allow_pickle,
                    progress=run.progress,
                    context=run.context,
                )
        finally:
            with slot.lock:
                run.stage = _Stage.DONE
                if run.sent:
                    _raise_in(slot.ident, None)  # withdraw one not raised yet: it must not hit the slot
        error = outcome.error
        if error is not None and error.type == "SoftTimeLimitExceeded" and not error.message and run.soft:
            # Raised as a bare class (the C API takes no instance): say which limit it was.
            error.message = f"task {run.name!r} exceeded its soft time limit of {run.soft:g} s"
        return outcome


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in a thread at its next Python instruction; None withdraws one not raised yet."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__} object>"


def _check_seconds(label: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{label} must be a number of seconds, not {type(value).__qualname__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{label} must be a positive, finite number of seconds, got {value!r}")
