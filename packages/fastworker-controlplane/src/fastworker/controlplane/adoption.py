"""Tasks a restarted control plane found running on subworkers: each waits for its worker to adopt it.

With ``--journal``, a control plane that stops (a rollout, a crash, a drain timeout that passed)
leaves tasks running on subworkers that are fine. Re-running or failing them at replay would throw
away work still going on, and a re-run would run it twice at once. So a replay keeps them RUNNING
as orphans: a worker that registers with the new instance lists what it still holds from the old
one (``RegisterRequest.held``: running, or finished with the outcome not delivered), and each
orphan of that worker at that attempt becomes its lease again, its outcome taken like any other.

An orphan its worker did not list when it registered, and every orphan still unclaimed when the
adoption window passed (the worker died with the control plane, or never comes back), is settled by
the dispatcher as a task whose worker was lost: re-run if it has retries left, else FAILURE with
``ControlPlaneLost``.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastworker.controlplane.records import RUNNING, TaskRecord

__all__ = ["Orphans", "adoption_window"]


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
        orphans: RUNNING records whose ``worker`` is the subworker that ran them, each with the
            retries it is allowed (decided at replay, as for the tasks the replay settled itself).
    """

    def __init__(self, orphans: Iterable[tuple[TaskRecord, int]]) -> None:
        self._by_worker: dict[str, dict[str, TaskRecord]] = {}
        self._retries: dict[str, int] = {}
        for record, retries in orphans:
            self._by_worker.setdefault(record.worker, {})[record.task_id] = record
            self._retries[record.task_id] = retries

    def __len__(self) -> int:
        return sum(len(mine) for mine in self._by_worker.values())

    def retries(self, record: TaskRecord) -> int:
        """The retries an orphan (adopted or not) is allowed, as its replay decided: for settling it."""
        return self._retries.pop(record.task_id, 0)

    def claim(self, worker_id: str, held: Iterable[tuple[str, int]]) -> tuple[list[TaskRecord], list[TaskRecord]]:
        """A fresh registration of ``worker_id`` holding ``held`` (task id, attempt): (adopted, disowned).

        Adopted: its orphans it holds at the attempt the journal has. Disowned: its other orphans,
        which it came back without (another process, or the run ended and its outcome is gone).
        Both leave the orphans.
        """
        mine = self._by_worker.pop(worker_id, None)
        if not mine:
            return [], []
        adopted: list[TaskRecord] = []
        for task_id, attempt in held:
            record = mine.get(task_id)
            if record is not None and record.attempts == attempt and record.state == RUNNING:
                adopted.append(mine.pop(task_id))
                self._retries.pop(task_id, None)
        return adopted, [record for record in mine.values() if record.state == RUNNING]

    def forget(self, record: TaskRecord) -> bool:
        """Take ``record`` out (it ends otherwise, e.g. cancelled); True if it was an orphan."""
        mine = self._by_worker.get(record.worker)
        if mine is None or mine.pop(record.task_id, None) is None:
            return False
        self._retries.pop(record.task_id, None)
        if not mine:
            del self._by_worker[record.worker]
        return True

    def take_all(self) -> list[TaskRecord]:
        """Every orphan left, still RUNNING (the window passed): the caller settles them."""
        left = [record for mine in self._by_worker.values() for record in mine.values() if record.state == RUNNING]
        self._by_worker.clear()
        return left
