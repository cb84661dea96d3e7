"""A task only worker "A" of the subworker tests loads (``--task-modules fwtests_worker_tasks fwtests_worker_tasks_a``)."""

from __future__ import annotations

from fwtests_worker_tasks import worker_id

from fastworker.client import task


@task(name="fwtests_worker.only_a")
def only_a() -> str:
    """Return the id of the worker that ran it."""
    return worker_id()
