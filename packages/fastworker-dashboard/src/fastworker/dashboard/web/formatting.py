"""Human formatting for the pages (durations, ages, times, sizes, payloads), registered as Jinja filters.

Everything here returns plain text; the templates' autoescaping makes it safe to show.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastworker.client import Progress, TaskInfo, TaskState
from fastworker.dashboard.web.preview import TRACEBACK_CHARS, clip, preview

#: Shown for a value that does not exist (yet).
MISSING = "—"

#: CSS class suffix per task state (the stylesheet colours them).
_STATE_CLASS = {
    TaskState.PENDING: "pending",
    TaskState.SCHEDULED: "scheduled",
    TaskState.RUNNING: "running",
    TaskState.RETRYING: "retrying",
    TaskState.SUCCESS: "success",
    TaskState.FAILURE: "failure",
    TaskState.CANCELLED: "cancelled",
}

#: States a task can be cancelled in, and states it can be retried from.
CANCELLABLE = frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.RUNNING, TaskState.RETRYING})
RETRYABLE = frozenset({TaskState.FAILURE, TaskState.CANCELLED})


def duration(seconds: float | None) -> str:
    """A span of time for people: ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 07 min``, ``3 d 04 h``."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86400} d {whole % 86400 // 3600:02d} h"


def ago(timestamp: float | None, now: float | None = None) -> str:
    """How long ago a Unix time was, in whole seconds at best (``just now``, ``3 s ago``); ``—`` when unknown.

    Coarse on purpose: a live panel is re-sent only when its text changes.
    """
    if not timestamp:
        return MISSING
    elapsed = (now if now is not None else time.time()) - timestamp
    if elapsed < 1:
        return "just now"
    if elapsed < 60:
        return f"{int(elapsed)} s ago"
    return f"{duration(elapsed)} ago"


def clock(timestamp: float | None) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS.mmm UTC``; ``—`` when unknown."""
    if not timestamp:
        return MISSING
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def short_clock(timestamp: float | None) -> str:
    """A Unix time as ``HH:MM:SS`` (UTC); ``—`` when unknown."""
    if not timestamp:
        return MISSING
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S")


def mib(size: float | None) -> str:
    """Bytes as mebibytes with one decimal."""
    if not size:
        return MISSING
    return f"{size / (1024 * 1024):.1f} MiB"


def size(count: float | None) -> str:
    """A byte count for people: ``512 B``, ``4.0 KiB``, ``6.7 MiB``."""
    if count is None:
        return MISSING
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return MISSING  # pragma: no cover - the loop always returns


def number(value: Any) -> str:
    """An integer with thousands separators; other numbers with up to two decimals."""
    if isinstance(value, bool) or value is None:
        return MISSING if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.2f}"
    return str(value)


def percent(part: float, whole: float) -> float:
    """``part / whole`` as a percentage clamped to 0..100 (0 when whole is 0)."""
    if whole <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * part / whole))


def width_class(pct: float | None) -> str:
    """The ``w-N`` class (N: whole percent, 0..100) that gives a bar its width.

    A class rather than a ``style`` attribute: the Content-Security-Policy allows no inline styles.
    None (an unknown total) is a full bar.
    """
    value = 100.0 if pct is None or math.isnan(pct) else max(0.0, min(100.0, pct))
    return f"w-{round(value)}"


def progress_percent(progress: Progress | None) -> float | None:
    """How far a task got as a percentage (0..100), or None without progress or without a total."""
    fraction = progress.fraction if progress is not None else None
    return None if fraction is None else 100.0 * fraction


def progress_eta(task: TaskInfo, now: float | None = None) -> str:
    """``about 12.3 s left`` for a running task, at the rate of its progress so far; empty when unknown."""
    progress = task.progress
    if progress is None or task.state is not TaskState.RUNNING:
        return ""
    left = progress.remaining(task.started_at, time.time() if now is None else now)
    if left is None:
        return ""
    return "almost done" if left < 1 else f"about {duration(left)} left"


def short_id(task_id: str) -> str:
    """The first 8 characters of a task id (the full id goes in the link's title)."""
    return task_id[:8]


def state_class(state: TaskState | str) -> str:
    """The CSS class for a task state, e.g. ``state-failure``."""
    try:
        return "state-" + _STATE_CLASS[TaskState(state)]
    except ValueError:
        return "state-unknown"


def pretty(value: Any) -> str:
    """A payload as indented JSON where it is JSON, with ``repr`` for anything else (bytes, Decimal, ...)."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=repr, sort_keys=False)
    except (TypeError, ValueError):
        return repr(value)


def can_cancel(state: TaskState | str) -> bool:
    """True for states that cancel applies to."""
    return _as_state(state) in CANCELLABLE


def can_retry(state: TaskState | str) -> bool:
    """True for states that retry applies to."""
    return _as_state(state) in RETRYABLE


def _as_state(state: TaskState | str) -> TaskState | None:
    try:
        return TaskState(state)
    except ValueError:
        return None


#: Every filter the templates use, by name.
FILTERS: dict[str, Callable[..., Any]] = {
    "duration": duration,
    "ago": ago,
    "clock": clock,
    "short_clock": short_clock,
    "mib": mib,
    "number": number,
    "short_id": short_id,
    "state_class": state_class,
    "pretty": pretty,
    "preview": preview,
    "clip": clip,
    "traceback_preview": lambda text: clip(text, TRACEBACK_CHARS),
    "size": size,
    "width_class": width_class,
}
#: Functions the templates call.
GLOBALS: dict[str, Callable[..., Any]] = {
    "percent": percent,
    "progress_percent": progress_percent,
    "progress_eta": progress_eta,
    "can_cancel": can_cancel,
    "can_retry": can_retry,
}
