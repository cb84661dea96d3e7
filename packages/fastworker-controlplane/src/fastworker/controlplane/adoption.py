"""Tasks a restarted control plane found running on subworkers: each waits for its worker to adopt it.

With ``--journal``, a control plane that stops (a rollout, a crash, a drain timeout that passed)
leaves tasks running on subworkers that are fine. Re-running or failing them at replay would throw
away work still going on, and a re-run would run it twice at once. So a replay keeps them RUNNING
as orphans: a worker that registers with the new instance lists what it still holds from the old
one (``RegisterRequest.held``: running, or finished with the outcome not delivered), and each
orphan of that worker at that attempt becomes its lease again, its outcome taken like any other.

An orphan that the very process it was dispatched to (the journal keeps the worker's incarnation)
does not list never reached it: the dispatch was cut by the stop, or it waited unstarted in the
worker's prefetch queue, which a worker drops when it loses its control plane. (An outcome the worker
delivered is acknowledged only once the journal wrote it, so a run that ended is never missing.) It
goes back to the front of its queue, that attempt not counted, as when a worker never read a
dispatch (``Dispatcher.reconcile``). Any other orphan its worker did not list when it registered
(another process under that id now), and every orphan still unclaimed when the adoption window
passed (the worker died with the control plane, or never comes back), is settled by the dispatcher
as a task whose worker was lost: re-run if it has retries left, else FAILURE with
``ControlPlaneLost``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from fastworker.controlplane.records import RUNNING, TaskRecord

__all__ = ["Claim", "OrphanRun", "Orphans", "adoption_window"]


class OrphanRun(NamedTuple):
    """What a replay knows of a task it left running on a subworker, besides its record."""

    #: The re-runs it is allowed (decided at replay, as for the tasks the replay settled itself).
    retries: int
    #: The worker process it was dispatched to (``RegisterRequest.incarnation``); "" when unknown
    #: (journaled by an older control plane, or dispatched to a worker too old to send one).
    incarnation: str


class Claim(NamedTuple):
    """What becomes of a registering worker's orphans."""

    #: Those it holds at the attempt the journal has: its leases again.
    adopted: list[TaskRecord]
    #: Those dispatched to this very process that it does not hold: they never reached it (re-queued, not run).
    undelivered: list[TaskRecord]
    #: The rest: it came back without them (settled as after a lost worker).
    disowned: list[TaskRecord]


def adoption_window(heartbeat_timeout: float) -> float:
    """Seconds orphans wait for their workers after a restart: two heartbeat timeouts, at least 10 s.

    A worker notices the new instance by its announcements (every heartbeat interval) or by its next
    request, and registers at once; the margin covers a worker whose reconnection backed off while
    the control plane was down.
    """
    return max(2 * heartbeat_timeout, 10.0)


class Orphans:
    """The orphans of one replay, by the worker they ran on.

    Args:
        orphans: RUNNING records whose ``worker`` is the subworker that ran them, each with what
            the replay knows of that run.
    """

    def __init__(self, orphans: Iterable[tuple[TaskRecord, OrphanRun]]) -> None:
        self._by_worker: dict[str, dict[str, TaskRecord]] = {}
        self._runs: dict[str, OrphanRun] = {}
        for record, run in orphans:
            self._by_worker.setdefault(record.worker, {})[record.task_id] = record
            self._runs[record.task_id] = run

    def __len__(self) -> int:
        return sum(len(mine) for mine in self._by_worker.values())

    def retries(self, record: TaskRecord) -> int:
        """The retries an orphan (adopted or not) is allowed, as its replay decided: for settling it."""
        run = self._runs.pop(record.task_id, None)
        return 0 if run is None else run.retries

    def claim(self, worker_id: str, incarnation: str, held: Iterable[tuple[str, int]]) -> Claim:
        """A fresh registration of ``worker_id`` by process ``incarnation`` holding ``held`` (task id, attempt).

        Every orphan of that worker leaves the orphans: adopted, undelivered or disowned (:class:`Claim`).
        """
        mine = self._by_worker.pop(worker_id, None)
        if not mine:
            return Claim([], [], [])
        adopted: list[TaskRecord] = []
        for task_id, attempt in held:
            record = mine.get(task_id)
            if record is not None and record.attempts == attempt and record.state == RUNNING:
                adopted.append(mine.pop(task_id))
                self._runs.pop(task_id, None)
        undelivered: list[TaskRecord] = []
        disowned: list[TaskRecord] = []
        for record in mine.values():
            if record.state != RUNNING:
                continue
            run = self._runs.get(record.task_id)
            if incarnation and run is not None and run.incarnation == incarnation:
                undelivered.append(record)
                del self._runs[record.task_id]
            else:
                disowned.append(record)
        return Claim(adopted, undelivered, disowned)

    def forget(self, record: TaskRecord) -> bool:
        """Take ``record`` out (it ends otherwise, e.g. cancelled); True if it was an orphan."""
        mine = self._by_worker.get(record.worker)
        if mine is None or mine.pop(record.task_id, None) is None:
            return False
        self._runs.pop(record.task_id, None)
        if not mine:
            del self._by_worker[record.worker]
        return True

    def take_all(self) -> list[TaskRecord]:
        """Every orphan left, still RUNNING (the window passed): the caller settles them."""
        left = [record for mine in self._by_worker.values() for record in mine.values() if record.state == RUNNING]
        self._by_worker.clear()
        return left
