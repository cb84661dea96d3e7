"""An audit trail of task runs, fed by Celery's signals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.signals import task_failure, task_prerun, task_retry


@dataclass(frozen=True)
class AuditEntry:
    """One event in a task's life."""

    event: str
    task: str
    task_id: str
    detail: str = ""


#: The trail (a real shop writes it to a table).
TRAIL: list[AuditEntry] = []


@task_prerun.connect
def record_start(sender: Task, task_id: str, **_: Any) -> None:
    """Every attempt of every task is recorded as it starts."""
    TRAIL.append(AuditEntry("started", sender.name, task_id))


@task_retry.connect
def record_retry(sender: Task, request: Any, reason: BaseException, **_: Any) -> None:
    """An attempt that will be retried."""
    TRAIL.append(AuditEntry("retrying", sender.name, request.id, repr(reason)))


@task_failure.connect
def record_failure(sender: Task, task_id: str, exception: BaseException, **_: Any) -> None:
    """A task that failed for good."""
    TRAIL.append(AuditEntry("failed", sender.name, task_id, repr(exception)))
