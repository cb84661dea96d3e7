"""An audit trail of task runs, fed by FastWorker's hooks."""

from __future__ import annotations

from dataclasses import dataclass

from fastworker.client import TaskContext, hooks


@dataclass(frozen=True)
class AuditEntry:
    """One event in a task's life."""

    event: str
    task: str
    task_id: str
    detail: str = ""


#: The trail (a real shop writes it to a table).
TRAIL: list[AuditEntry] = []


@hooks.before_task
def record_start(ctx: TaskContext) -> None:
    """Every attempt of every task is recorded as it starts."""
    TRAIL.append(AuditEntry("started", ctx.name, ctx.id))


@hooks.on_retry
def record_retry(ctx: TaskContext, error: BaseException) -> None:
    """An attempt that will be retried."""
    TRAIL.append(AuditEntry("retrying", ctx.name, ctx.id, repr(error)))


@hooks.on_failure
def record_failure(ctx: TaskContext, error: BaseException) -> None:
    """A task that failed for good."""
    TRAIL.append(AuditEntry("failed", ctx.name, ctx.id, repr(error)))
