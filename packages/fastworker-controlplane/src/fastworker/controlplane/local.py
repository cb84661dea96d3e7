"""The control plane's in-process executor: ``--local-concurrency`` slots, each a thread that runs tasks.

A slot takes its next task straight from the coordinator's priority queue (under the
coordinator's lock) the moment it is free, so a critical task queued behind many low ones is the
very next to start, and no task waits for an event-loop round trip between two executions.
Sync tasks run on the slot's thread; async tasks run on the event loop while their slot waits,
so one bound covers both. Outcomes go back to the loop in batches: one wake-up for everything
that finished meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastworker.client.task import TaskFunction
from fastworker.controlplane.records import TaskRecord
from fastworker.worker.executor import Outcome, failure, prepare, run_async_limited, run_sync
from fastworker.worker.pool import ProcessPool

logger = logging.getLogger(__name__)

#: Blocks until a task is ready for this slot and marks it RUNNING; None means "stop".
TakeNext = Callable[[], tuple[TaskRecord, TaskFunction[Any, Any]] | None]
#: The coordinator's completion callback: (record, outcome, cancelled while running).
DoneCallback = Callable[[TaskRecord, Outcome, bool], None]


class LocalExecutor:
    """Runs tasks in this process on ``concurrency`` slot threads and reports each outcome on the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        concurrency: int,
        take_next: TakeNext,
        on_done: DoneCallback,
        *,
        allow_pickle: bool = False,
        on_finished: DoneCallback | None = None,
        task_modules: Sequence[str] = (),
        sys_path: Sequence[str] = (),
    ) -> None:
        """Create the slots (not started).

        Args:
            loop: The event loop that owns the coordinator.
            concurrency: Number of slots.
            take_next: Blocks until a task is ready for a slot.
            on_done: Called on the loop with every outcome, in batches.
            allow_pickle: Accept and produce pickle payloads.
            on_finished: Called on the slot thread right after an outcome was queued for the loop
                (for replies that need not wait for the loop).
            task_modules: The modules child processes import to run time-limited sync tasks.
            sys_path: Folders those children put first on sys.path.
        """
        if concurrency < 0:
            raise ValueError("local concurrency cannot be negative")
        self._loop = loop
        self.concurrency = concurrency
        self._take_next = take_next
        self._on_done = on_done
        self._on_finished = on_finished
        self._allow_pickle = allow_pickle
        self._task_modules = tuple(task_modules)
        self._sys_path = tuple(sys_path)
        self._pool: ProcessPool | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._completed: deque[tuple[TaskRecord, Outcome, bool]] = deque()
        self._wake_scheduled = False
        self._async_runs: dict[str, concurrent.futures.Future[Outcome]] = {}
        self._cancel_requested: set[str] = set()
        self._runs_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._slot_main, name=f"fastworker-slot-{i}", daemon=True)
            for i in range(concurrency)
        ]

    def start(self) -> None:
        """Start the slot threads."""
        for thread in self._threads:
            thread.start()

    def cancel_running(self, task_id: str) -> bool:
        """Cancel a running async task; returns False if it already finished.

        The slot thread may not have handed the coroutine to the loop yet: then the request is
        remembered and honoured the moment it does.
        """
        with self._runs_lock:
            run = self._async_runs.get(task_id)
            if run is None:
                self._cancel_requested.add(task_id)
                return True
        if run.done():
            return False
        return run.cancel()

    def _slot_main(self) -> None:
        while True:
            try:
                taken = self._take_next()
            except Exception:  # a bug must not silently cost a slot: log it and keep the slot alive
                logger.exception("a local slot failed to take its next task")
                time.sleep(0.1)
                continue
            if taken is None:
                return
            record, task = taken
            cancelled = False
            try:
                prepared = prepare(task, record.spec.arguments, allow_pickle=self._allow_pickle)
                if isinstance(prepared, Outcome):
                    outcome = prepared
                elif task.is_async or self.isolated(record, task):
                    outcome, cancelled = self._run_on_loop(record, task, *prepared)
                else:
                    outcome = run_sync(task, prepared[0], prepared[1], allow_pickle=self._allow_pickle)
            except BaseException as exc:  # a slot must survive anything a task does
                outcome = failure(type(exc).__name__, str(exc))
            self._completed.append((record, outcome, cancelled))
            if self._on_finished is not None:
                # Before waking the loop, so the loop does not take the GIL while the reply is built.
                self._on_finished(record, outcome, cancelled)
            if not self._wake_scheduled:
                self._wake_scheduled = True
                try:
                    self._loop.call_soon_threadsafe(self.deliver_completed)
                except RuntimeError:  # the loop closed during shutdown
                    return

    def _run_on_loop(
        self, record: TaskRecord, task: TaskFunction[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Outcome, bool]:
        task_id = record.task_id
        with self._runs_lock:
            hard, soft = _limits(record, task)
            coroutine: Coroutine[Any, Any, Outcome]
            if task.is_async:
                coroutine = run_async_limited(task, args, kwargs, hard=hard, soft=soft, allow_pickle=self._allow_pickle)
            else:
                coroutine = self._run_in_process(record, hard, soft)
            run = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            self._async_runs[task_id] = run
            if task_id in self._cancel_requested:
                run.cancel()
        try:
            return run.result(), False
        except concurrent.futures.CancelledError:
            return failure("TaskCancelled", "cancelled while running"), True
        finally:
            with self._runs_lock:
                self._async_runs.pop(task_id, None)
                self._cancel_requested.discard(task_id)

    def isolated(self, record: TaskRecord, task: TaskFunction[Any, Any]) -> bool:
        """True if this sync task runs in a child process: it has a time limit, which a thread cannot enforce."""
        return not task.is_async and bool(self._task_modules) and any(_limits(record, task))

    def can_cancel_running(self, record: TaskRecord, task: TaskFunction[Any, Any]) -> bool:
        """True if a running task can be stopped: async (on the loop) or isolated (its process is killed)."""
        return task.is_async or self.isolated(record, task)

    async def _run_in_process(self, record: TaskRecord, hard: float, soft: float) -> Outcome:
        pool = await self._ensure_pool()
        outcome = await pool.run(
            record.task_id, record.name, record.spec.arguments, timeout=hard or None, soft_timeout=soft or None
        )
        return outcome

    async def _ensure_pool(self) -> ProcessPool:
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self._pool is None:
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

    @property
    def has_completed(self) -> bool:
        """True if outcomes are waiting to be delivered to the loop."""
        return bool(self._completed)

    def deliver_completed(self) -> None:
        """Hand every finished outcome to ``on_done`` (on the loop; also called before serving requests)."""
        self._wake_scheduled = False
        completed = self._completed
        while completed:
            record, outcome, cancelled = completed.popleft()
            try:
                self._on_done(record, outcome, cancelled)
            except Exception:
                logger.exception("completion handling failed for task %s", record.task_id)

    def close(self, timeout: float = 1.0) -> None:
        """Cancel running async tasks and wait briefly for idle slot threads to leave."""
        for run in list(self._async_runs.values()):
            run.cancel()
        for thread in self._threads:
            thread.join(timeout=timeout / max(1, len(self._threads)))


def _limits(record: TaskRecord, task: TaskFunction[Any, Any]) -> tuple[float, float]:
    """(hard, soft) time limits in seconds for this run (0: none): the submission's, else the task's."""
    spec = record.spec
    return (spec.timeout or (task.options.timeout or 0.0), spec.soft_timeout or (task.options.soft_timeout or 0.0))
