"""The queue panel: one row per priority level with its depth, oldest age, and a PAUSED marker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text

from fastworker.dashboard.tui.format import format_count, format_duration, priority_text
from fastworker.dashboard.tui.widgets.table import KeyedTable, Row


class QueueTable(KeyedTable):
    """Queue depth per priority; its cursor row is the level ``p`` pauses while it has focus."""

    CURSOR_WHEN_BLURRED = False
    COLUMNS = (("priority", "Priority"), ("depth", "Depth"), ("oldest", "Oldest"), ("state", "Dispatch"))

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._paused: dict[str, bool] = {}

    def show_queues(self, queues: Sequence[Mapping[str, Any]]) -> None:
        """Show one row per level, in the order the control plane gives (critical first)."""
        rows: list[Row] = []
        self._paused = {}
        for queue in queues:
            level = str(queue.get("priority", ""))
            paused = bool(queue.get("paused", False))
            self._paused[level] = paused
            depth = int(queue.get("depth", 0) or 0)
            oldest = format_duration(float(queue.get("oldest_age", 0.0) or 0.0)) if depth else "-"
            marker = Text("PAUSED", style="bold black on yellow") if paused else Text("running", style="green")
            rows.append((level, (priority_text(level), Text(format_count(depth)), Text(oldest), marker)))
        self.sync(rows)

    def is_paused(self, priority: str) -> bool:
        """Whether the last snapshot showed this level paused."""
        return self._paused.get(priority, False)
