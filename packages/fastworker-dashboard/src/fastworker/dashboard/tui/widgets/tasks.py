"""The live task list: newest first, one row per task keyed by its id; the cursor row is what keys act on."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from fastworker.client import TaskInfo
from fastworker.dashboard.tui.format import (
    MISSING,
    format_age,
    format_duration,
    priority_text,
    progress_bar,
    short_id,
    state_text,
)
from fastworker.dashboard.tui.widgets.table import KeyedTable, Row


def run_time(task: TaskInfo, now: float) -> float | None:
    """Seconds a task ran (so far, while it runs); None before it started."""
    if not task.started_at:
        return None
    return (task.finished_at or now) - task.started_at


class TaskTable(KeyedTable):
    """Tasks as the control plane lists them; ``c``, ``r``, ``p`` and ``enter`` act on the cursor row."""

    COLUMNS = (
        ("id", "ID"),
        ("name", "Name"),
        ("state", "State"),
        ("priority", "Priority"),
        ("attempts", "Tries"),
        ("worker", "Worker"),
        ("age", "Queued"),
        ("runtime", "Runtime"),
        ("progress", "Progress"),
        ("error", "Error"),
    )

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._tasks: dict[str, TaskInfo] = {}

    def show_tasks(self, tasks: Sequence[TaskInfo], now: float) -> None:
        """Show these tasks in the order given (the control plane's newest first)."""
        self._tasks = {task.id: task for task in tasks}
        rows: list[Row] = []
        for task in tasks:
            error = f"{task.error.type}: {task.error.message}".replace("\n", " ") if task.error else ""
            cells = (
                Text(short_id(task.id), style="dim"),
                Text(task.name),
                state_text(task.state),
                priority_text(task.priority),
                Text(str(task.attempts)),
                Text(task.worker or MISSING),
                Text(format_age(task.queued_at, now)),
                Text(format_duration(run_time(task, now))),
                progress_bar(task.progress),
                Text(error[:60], style="red"),
            )
            rows.append((task.id, cells))
        self.sync(rows)

    def selected_task(self) -> TaskInfo | None:
        """The task under the cursor, as last listed."""
        key = self.selected_key()
        return self._tasks.get(key) if key is not None else None

    def task_by_id(self, task_id: str) -> TaskInfo | None:
        """A listed task by id."""
        return self._tasks.get(task_id)
