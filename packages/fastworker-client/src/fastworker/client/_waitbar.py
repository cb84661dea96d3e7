"""``fastworker result TASK_ID --wait`` on a terminal: wait for a task while a live bar shows its progress.

It follows the task's events (each progress update the control plane publishes is one) rather
than polling, redraws at least once a second so the time left counts down, and leaves nothing on
screen when the task ends: the command then prints the final task as usual.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, TaskID, TextColumn
from rich.progress import Progress as Bar

from fastworker.client._terminal import visible
from fastworker.client.errors import TaskTimeout
from fastworker.client.models import EventBatch, TaskInfo

__all__ = ["wait_with_bar"]

#: Longest one event long poll waits, in seconds (also how often the time left is redrawn).
REDRAW = 1.0


class _Watchable(Protocol):
    """What the bar reads of a client (``fastworker.client.Client`` fits)."""

    async def status(self, task_id: str) -> TaskInfo: ...

    async def events(
        self, after: int = 0, *, timeout: float = 5.0, task_ids: Sequence[str] = (), limit: int = 1000
    ) -> EventBatch: ...


def _describe(info: TaskInfo) -> tuple[str, float | None, float, str, str]:
    """(description, total, completed, count text, time-left text) for one state of the task."""
    progress = info.progress
    description = f"{visible(info.name)} {info.state.value}"
    if progress is None:
        return description, None, 0, "", ""
    if progress.message:
        description = f"{description}: {visible(progress.message)}"
    if progress.total is None:
        return description, None, progress.done, f"{progress.done:,}", ""
    count = f"{progress.done:,}/{progress.total:,}"
    left = progress.remaining(info.started_at, time.time())
    eta = "" if left is None else f"~{left:,.0f} s left"
    return description, float(progress.total), float(progress.done), count, eta


def _draw(bar: Bar, row: TaskID, info: TaskInfo) -> None:
    description, total, completed, count, eta = _describe(info)
    bar.update(row, description=description, total=total, completed=completed, count=count, eta=eta)
    bar.refresh()


async def wait_with_bar(client: _Watchable, task_id: str, timeout: float | None, console: Console) -> TaskInfo:
    """Wait until the task is final, showing its progress; returns its final info.

    Raises:
        TaskTimeout: ``timeout`` seconds passed first (the task goes on).
        TaskNotFound: the control plane does not know the id.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    after = (await client.events(0, timeout=0, limit=1, task_ids=[task_id])).last_sequence
    info = await client.status(task_id)
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.fields[count]}", markup=False),
        TextColumn("{task.fields[eta]}", style="dim", markup=False),
    )
    with Bar(*columns, console=console, transient=True, auto_refresh=False) as bar:
        row = bar.add_task("", total=None, count="", eta="")
        while not info.state.is_final:
            _draw(bar, row, info)
            wait = REDRAW if deadline is None else min(REDRAW, deadline - time.monotonic())
            if wait <= 0:
                raise TaskTimeout(task_id, timeout or 0.0)
            batch = await client.events(after, timeout=wait, task_ids=[task_id])
            after = batch.next_after
            changes = [event.task for event in batch.events if event.task is not None]
            if batch.gap:
                info = await client.status(task_id)  # events were dropped: read the task itself
            elif changes:
                info = changes[-1]
    # The final event may leave out a large result: read the task in full.
    return await client.status(task_id)
