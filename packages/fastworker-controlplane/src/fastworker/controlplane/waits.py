"""Waits on tasks: answer a client once any (or enough) of the tasks it asked for are final.

Runs on the event loop only; the coordinator tells it when a task reached a final state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from fastworker.controlplane.records import FINAL_STATES, TaskRecord

logger = logging.getLogger(__name__)

#: Longest a wait may be held by the control plane, in seconds; clients re-ask after it.
MAX_WAIT = 30.0
#: How long a wait on several tasks keeps gathering once enough of them finished, in seconds.
GATHER_WINDOW = 0.005
#: How long it keeps gathering after a first finish while fewer than enough did, in seconds.
PATIENCE_WINDOW = 0.05
#: A wait on n tasks is answered early once n // ENOUGH_DIVISOR of them (at least one) are final.
ENOUGH_DIVISOR = 8

#: Called with (records now final, ids still pending, ids unknown) when a wait ends.
WaitCallback = Callable[[list[TaskRecord], list[str], list[str]], None]
#: Finds a finished task's record in the result cache at a time, or None.
CacheLookup = Callable[[str, float], TaskRecord | None]


def waits_enough(count: int) -> int:
    """How many of ``count`` asked-for tasks must be final for a wait to answer before all are."""
    return max(1, count // ENOUGH_DIVISOR)


class Waiter:
    """A pending wait for any of a set of tasks to reach a final state."""

    __slots__ = (
        "callback",
        "done",
        "enough",
        "finished",
        "gather",
        "missing",
        "pending",
        "records",
        "remaining",
        "timer",
    )

    def __init__(
        self,
        ids: list[str],
        finished: list[TaskRecord],
        pending: list[str],
        missing: list[str],
        callback: WaitCallback,
        *,
        all_final: bool = False,
    ) -> None:
        #: The records final when asked, then each listened-on task's as it finishes: the answer is
        #: built from these, not by looking every asked-for id up again.
        self.records = finished
        self.pending = pending  # the ids this waiter listens on
        self.missing = missing  # the ids unknown when asked (reported as such in the answer)
        self.callback = callback
        self.done = False
        #: Listened-on tasks not final yet.
        self.remaining = len(pending)
        #: Asked-for tasks final so far, and how many make an early answer worth it (0: none does).
        self.finished = len(finished)
        self.enough = 0 if all_final else waits_enough(len(ids))
        self.timer: asyncio.TimerHandle | None = None
        self.gather: asyncio.TimerHandle | None = None


class Waits:
    """Every pending wait, indexed by the task ids it listens on."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        active: Mapping[str, TaskRecord],
        cached: CacheLookup,
        clock: Callable[[], float],
    ) -> None:
        """``active`` and ``cached``: where a task's record is (a bulk wait looks up thousands at once)."""
        self._loop = loop
        self._active = active
        self._cached = cached
        self._clock = clock
        self._by_task: dict[str, list[Waiter]] = {}

    def wait(self, task_ids: list[str], timeout: float, callback: WaitCallback, *, all_final: bool = False) -> None:
        """Call back when any of the tasks is final (with all that are final then), or at timeout.

        ``all_final``: only once every task is final (or at timeout), for a caller that needs them
        all: an early answer would only bring the rest back as another wait. A wait that names an
        unknown id is answered at once, either way: its caller fails on that id, now, not once
        others finish.
        """
        timeout = max(0.0, min(timeout, MAX_WAIT))
        finished, pending, missing = self._split(task_ids)
        if not pending or timeout == 0 or missing or (not all_final and len(finished) >= waits_enough(len(task_ids))):
            callback(finished, pending, missing)
            return
        waiter = Waiter(task_ids, finished, pending, missing, callback, all_final=all_final)
        by_task = self._by_task
        for task_id in pending:
            listeners = by_task.get(task_id)
            if listeners is None:
                by_task[task_id] = [waiter]
            else:
                listeners.append(waiter)
        waiter.timer = self._loop.call_later(timeout, self._answer, waiter)
        if finished and waiter.enough:
            self._gather(waiter)

    def task_finished(self, record: TaskRecord) -> None:
        """A task reached a final state: answer or advance the waits on it."""
        waiters = self._by_task.pop(record.task_id, None)
        if not waiters:
            return
        for waiter in waiters:
            if waiter.done:
                continue
            waiter.records.append(record)
            waiter.remaining -= 1
            waiter.finished += 1
            if waiter.remaining <= 0:
                self._answer(waiter)  # everything it waits for is final: answer now
            elif waiter.enough:
                self._gather(waiter)

    def close(self) -> None:
        """Drop every pending wait (shutdown): their timers stop, nobody is answered."""
        for waiters in self._by_task.values():
            for waiter in waiters:
                for timer in (waiter.timer, waiter.gather):
                    if timer is not None:
                        timer.cancel()
        self._by_task.clear()

    def _gather(self, waiter: Waiter) -> None:
        """Answer a partly finished wait a moment later with everything final by then.

        Tasks asked for together tend to finish together, and the asker re-asks for the rest, which
        costs a pass over every id still pending. So a wait answers GATHER_WINDOW after enough of its
        tasks finished (an eighth, or one of a few), and otherwise no later than PATIENCE_WINDOW after
        its first finish: a bulk wait takes a logarithmic number of rounds, not one per task.
        """
        gather = waiter.gather
        if waiter.finished >= waiter.enough:
            if gather is None or gather.when() > self._loop.time() + GATHER_WINDOW:
                if gather is not None:
                    gather.cancel()
                waiter.gather = self._loop.call_later(GATHER_WINDOW, self._answer, waiter)
        elif gather is None:
            waiter.gather = self._loop.call_later(PATIENCE_WINDOW, self._answer, waiter)

    def _split(self, task_ids: Iterable[str]) -> tuple[list[TaskRecord], list[str], list[str]]:
        finished: list[TaskRecord] = []
        pending: list[str] = []
        missing: list[str] = []
        active = self._active.get
        cached = self._cached
        now = self._clock()
        for task_id in task_ids:
            record = active(task_id) or cached(task_id, now)
            if record is None:
                missing.append(task_id)
            elif record.state in FINAL_STATES:  # (is_final, inline: it runs for every id asked for)
                finished.append(record)
            else:
                pending.append(task_id)
        return finished, pending, missing

    def _answer(self, waiter: Waiter) -> None:
        if waiter.done:
            return
        waiter.done = True
        for timer in (waiter.timer, waiter.gather):
            if timer is not None:
                timer.cancel()
        # The records it collected, checked again: one may have left its final state since (an
        # operator's retry), and is pending then.
        records = waiter.records
        finished = [record for record in records if record.state in FINAL_STATES]
        if waiter.remaining <= 0 and len(finished) == len(records):
            # Everything it listened on finished (each finish dropped that task's listeners) and
            # stayed final: nothing pending, nothing to drop.
            self._reply(waiter, finished, [])
            return
        reopened = {record.task_id for record in records if record.state not in FINAL_STATES}
        done = {record.task_id for record in finished}
        pending = list(reopened)
        by_task = self._by_task
        for task_id in waiter.pending:
            if task_id in done:
                continue  # its listeners were dropped when it finished
            if task_id not in reopened:
                pending.append(task_id)
            listeners = by_task.get(task_id)
            if listeners is not None:
                try:
                    listeners.remove(waiter)
                except ValueError:
                    pass
                if not listeners:
                    del by_task[task_id]
        self._reply(waiter, finished, pending)

    @staticmethod
    def _reply(waiter: Waiter, finished: list[TaskRecord], pending: list[str]) -> None:
        try:
            waiter.callback(finished, pending, waiter.missing)
        except Exception:
            logger.exception("wait callback failed")
