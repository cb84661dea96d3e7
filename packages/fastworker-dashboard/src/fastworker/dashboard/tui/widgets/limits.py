"""The limits panel: one row per task name with a rate or concurrency limit, and what the limits hold back.

Hidden while no name is limited, so the layout of a fleet without flow control does not change.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from fastworker.client import TaskLimits
from fastworker.dashboard.tui.format import MISSING, format_count
from fastworker.dashboard.tui.widgets.table import KeyedTable, Row


class LimitTable(KeyedTable):
    """Limited task names, by name: rate, concurrency, running, waiting and starts in the last second."""

    CURSOR_WHEN_BLURRED = False
    COLUMNS = (
        ("name", "Task"),
        ("rate", "Rate"),
        ("concurrency", "Max"),
        ("running", "Run"),
        ("waiting", "Wait"),
        ("current", "Now/s"),
    )

    def show_limits(self, limits: Iterable[TaskLimits]) -> None:
        """Show one row per limited name; a name an operator set at run time is marked with ``*``."""
        rows: list[Row] = []
        for entry in sorted(limits, key=lambda e: e.name):
            name = Text(entry.name, style="bold")
            if entry.overridden:
                name.append("*", style="bold yellow")
            busy = entry.max_concurrency is not None and entry.running >= entry.max_concurrency
            cells = (
                name,
                Text(entry.rate_limit or MISSING),
                Text(format_count(entry.max_concurrency) if entry.max_concurrency else MISSING),
                Text(format_count(entry.running), style="bold yellow" if busy else ""),
                Text(format_count(entry.waiting), style="yellow" if entry.waiting else ""),
                Text(f"{entry.current_rate:.1f}"),
            )
            rows.append((entry.name, cells))
        self.sync(rows)
        self.display = bool(rows)
