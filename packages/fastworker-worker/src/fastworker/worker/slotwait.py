"""Runs waiting for a free slot of a pool, oldest first, each cancellable by its task id.

Both pools (:class:`~fastworker.worker.pool.ProcessPool`'s children,
:class:`~fastworker.worker.threads.ThreadPool`'s threads) queue their ``run()`` calls here when
every slot is busy. The subtle case lives here once: a cancel that arrives after a slot was handed
to a waiting run but before that run resumed; the run then gives the slot back and reports the
task cancelled. Loop-only, like the pools.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["SlotWaiters"]

S = TypeVar("S")


class SlotWaiters(Generic[S]):
    """The waiting runs, in order, by task id.

    Args:
        release: Gives a slot back to its pool (a run cancelled by its caller after a slot was
            handed to it had no use for it).
    """

    def __init__(self, release: Callable[[S], None]) -> None:
        self._release = release
        self._queue: deque[asyncio.Future[S | None]] = deque()
        self._by_task: dict[str, asyncio.Future[S | None]] = {}
        #: Runs cancelled after their slot was handed over, before they resumed.
        self._cancelled: set[str] = set()

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._by_task

    async def wait(self, task_id: str) -> S | None:
        """Wait for a slot; None if the task was cancelled meanwhile (:meth:`cancel`).

        Raises:
            RuntimeError: the pool closed meanwhile (:meth:`fail_all`).
            asyncio.CancelledError: the caller was cancelled; a slot handed over meanwhile is given back.
        """
        waiter: asyncio.Future[S | None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        self._by_task[task_id] = waiter
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is not None:
                    self._release(handed)
            raise
        finally:
            del self._by_task[task_id]

    def hand(self, slot: S) -> bool:
        """Give a free slot to the oldest run still waiting; False when none waits (the pool keeps it idle)."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return True
        return False

    def cancel(self, task_id: str) -> bool | None:
        """Cancel a waiting run; None if it is not waiting here.

        True if it was waiting (or had a slot it has not taken yet), False if its wait ended otherwise.
        """
        waiter = self._by_task.get(task_id)
        if waiter is None:
            return None
        if not waiter.done():
            waiter.set_result(None)
        elif waiter.cancelled() or waiter.exception() is not None:
            return False
        elif waiter.result() is not None:  # a slot was handed over; run() has not resumed yet
            self._cancelled.add(task_id)
        return True

    def cancelled_after_hand_over(self, task_id: str) -> bool:
        """Whether the run of ``task_id`` was cancelled after it got its slot (it gives the slot back).

        Asking clears it.
        """
        if task_id in self._cancelled:
            self._cancelled.discard(task_id)
            return True
        return False

    def fail_all(self, exc: BaseException) -> None:
        """Every waiting run raises ``exc`` (the pool closed)."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(exc)
