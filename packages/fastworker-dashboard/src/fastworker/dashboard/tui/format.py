"""Turns admin-API values into short display text: durations, sizes, load bars, and styled states.

Everything returned is a ``rich.text.Text`` or a plain ``str`` meant for one; nothing here is ever
parsed as markup, so task names, ids and values from the control plane always show literally.
"""

from __future__ import annotations

import math
import pprint
import time
from typing import Any

from rich.text import Text

from fastworker.client import Priority, Progress, TaskInfo, TaskState
from fastworker.client.workflowtree import (
    state_text as state_text,  # the one state colouring, with the TUI's formatters
)

#: Shown where a value is not known (yet).
MISSING = "-"


_PRIORITY_STYLES: dict[Priority, str] = {
    Priority.CRITICAL: "bold red",
    Priority.HIGH: "yellow",
    Priority.NORMAL: "",
    Priority.LOW: "dim",
}


def short_id(task_id: str, length: int = 8) -> str:
    """The first characters of a task id: enough to tell rows apart and to type as a search prefix."""
    return task_id[:length]


def format_duration(seconds: float | None) -> str:
    """A compact duration (``0.25s``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``); ``-`` for None."""
    if seconds is None:
        return MISSING
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_age(timestamp: float | None, now: float) -> str:
    """How long ago a Unix timestamp was, as a duration; ``-`` for None or zero."""
    if not timestamp:
        return MISSING
    return format_duration(now - timestamp)


def format_timestamp(timestamp: float | None) -> str:
    """A Unix timestamp as local wall-clock time with milliseconds; ``-`` for None or zero."""
    if not timestamp:
        return MISSING
    local = time.localtime(timestamp)
    return time.strftime("%Y-%m-%d %H:%M:%S", local) + f".{int(timestamp % 1 * 1000):03d}"


def format_bytes(size: int | float | None) -> str:
    """A byte count in binary units (``512 B``, ``12.5 MiB``); ``-`` for None or zero."""
    if not size:
        return MISSING
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop always returns


def format_count(value: Any) -> str:
    """An integer counter with thousands separators (``-`` when absent)."""
    if value is None:
        return MISSING
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def load_bar(in_flight: int, capacity: int, width: int = 10) -> Text:
    """A text bar of a worker's load: ``████░░░░░░ 4/10``, green, then yellow, then red when full."""
    ratio = 0.0 if capacity <= 0 else min(1.0, in_flight / capacity)
    filled = math.ceil(ratio * width)  # any load shows, and a bar is full only at capacity
    style = "green" if ratio < 0.5 else "yellow" if ratio < 1.0 else "red"
    bar = Text()
    bar.append("█" * filled, style=style)
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {in_flight}/{capacity}")
    return bar


def progress_bar(progress: Progress | None, width: int = 10) -> Text:
    """A task's progress: ``███░░░░░░░ 3/10``, or the bare count when the total is unknown; empty without progress."""
    bar = Text()
    if progress is None:
        return bar
    fraction = progress.fraction
    if fraction is None:
        bar.append(f"{progress.done:,}")
        return bar
    filled = math.floor(fraction * width)  # full only once done
    bar.append("█" * filled, style="yellow")
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {progress.done:,}/{progress.total:,}")
    return bar


def progress_text(task: TaskInfo, now: float) -> Text:
    """The detail screen's progress line: the bar, the percentage, the message and (while running) the time left."""
    progress = task.progress
    if progress is None:
        return Text(MISSING)
    text = progress_bar(progress, width=20)
    if progress.fraction is not None:
        text.append(f" {progress.fraction:.0%}")
    if progress.message:
        text.append("  ")
        text.append(progress.message)
    if task.state is TaskState.RUNNING:
        left = progress.remaining(task.started_at, now)
        if left is not None:
            text.append(f"  ~{format_duration(left)} left", style="dim")
    return text


def priority_text(priority: Priority | str) -> Text:
    """A priority level in its colour."""
    try:
        parsed = Priority.parse(priority)
    except ValueError:
        return Text(str(priority))
    return Text(parsed.value, style=_PRIORITY_STYLES.get(parsed, ""))


def pretty(value: Any) -> str:
    """A value as readable multi-line text (for arguments and results)."""
    return pprint.pformat(value, width=100, sort_dicts=False)
