"""The queue panel: one row per named queue and priority level with its depth, oldest age and dispatch state.

Rows are keyed ``"<queue>/<level>"`` (a queue name never holds a ``/``), so the cursor stays on its
row across refreshes however many queues come and go; ``p`` pauses the cursor row's *level*, which
the control plane pauses in every queue. The first queue ("default") shows every level; the others
only the levels tasks wait in, or a single ``-`` row while nothing waits (see
:mod:`fastworker.dashboard.queues`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text

from fastworker.client import Priority
from fastworker.dashboard.queues import group_queues
from fastworker.dashboard.tui.format import MISSING, format_count, format_duration, priority_text
from fastworker.dashboard.tui.widgets.table import KeyedTable, Row

#: Longest queue name shown whole; longer ones end in an ellipsis (the key keeps the whole name).
NAME_WIDTH = 14


def queue_key(queue: str, level: str) -> str:
    """The row key of one queue's level (``level`` empty: the row of a queue with nothing waiting)."""
    return f"{queue}/{level}"


def split_queue_key(key: str) -> tuple[str, str | None]:
    """The queue and level a row key names (level None for a queue's nothing-waiting row)."""
    queue, _, level = key.rpartition("/")
    return queue, level or None


def _short(name: str) -> str:
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…"


class QueueTable(KeyedTable):
    """Queue depth per named queue and priority; its cursor row's level is what ``p`` pauses while it has focus."""

    CURSOR_WHEN_BLURRED = False
    COLUMNS = (
        ("queue", "Queue"),
        ("priority", "Priority"),
        ("depth", "Depth"),
        ("oldest", "Oldest"),
        ("state", "Dispatch"),
    )

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._paused: dict[str, bool] = {}
        self._unserved: frozenset[str] = frozenset()
        #: How many named queues the last snapshot listed.
        self.queue_count = 0

    def show_queues(self, queues: Sequence[Mapping[str, Any]]) -> None:
        """Show each queue's rows in the order the control plane gives ("default" first, critical first)."""
        rows: list[Row] = []
        self._paused = {}
        groups = group_queues(queues)
        self.queue_count = len(groups)
        self._unserved = frozenset(g.name for g in groups if g.servers == 0)
        for queue in queues:  # paused is per level: any queue's entry tells
            self._paused[str(queue.get("priority", ""))] = bool(queue.get("paused", False))
        for group in groups:
            unserved = group.servers == 0
            name_style = "bold red" if unserved else "bold"
            if group.idle:
                state = Text("no worker", style="bold white on red") if unserved else Text("idle", style="dim")
                name = Text(_short(group.name), style=name_style)
                rows.append(
                    (queue_key(group.name, ""), (name, Text(MISSING, style="dim"), Text("0"), Text(MISSING), state))
                )
                continue
            for index, level in enumerate(group.levels):
                oldest = format_duration(level.oldest_age) if level.depth else MISSING
                if level.paused:
                    marker = Text("PAUSED", style="bold black on yellow")
                elif unserved:
                    marker = Text("no worker", style="bold white on red")
                else:
                    marker = Text("running", style="green")
                name = Text(_short(group.name), style=name_style) if index == 0 else Text("")
                cells = (name, priority_text(level.priority), Text(format_count(level.depth)), Text(oldest), marker)
                rows.append((queue_key(group.name, level.priority), cells))
        self.sync(rows)

    def selected_level(self) -> str | None:
        """The priority level of the cursor row (None on a queue's nothing-waiting row, or with no rows)."""
        key = self.selected_key()
        if key is None:
            return None
        level = split_queue_key(key)[1]
        if level is None:
            return None
        try:
            return Priority.parse(level).value
        except ValueError:
            return None

    def is_unserved(self, queue: str) -> bool:
        """Whether the last snapshot listed this queue with nothing serving it (its tasks wait)."""
        return queue in self._unserved

    def is_paused(self, priority: str) -> bool:
        """Whether the last snapshot showed this level paused (in every queue)."""
        return self._paused.get(priority, False)
