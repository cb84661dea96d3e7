"""Tasks for the named-queue tests, loaded by the workers only (``--task-modules fwtests_queue_tasks``)."""

from __future__ import annotations

import os

from fastworker.client import current_task, task


def _ran_on() -> list[str]:
    """[the worker that ran it, the queue its id was submitted for] (the id carries the queue in the tests)."""
    return [os.environ.get("FWTESTS_WORKER_ID", "?"), current_task().id.split(":", 1)[0]]


@task(name="fwtests_queue.plain")
def plain() -> list[str]:
    """In the "default" queue unless the submission names another."""
    return _ran_on()


@task(name="fwtests_queue.report", queue="reports")
def report() -> list[str]:
    """In the "reports" queue unless the submission names another."""
    return _ran_on()
