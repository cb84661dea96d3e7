"""Tasks for the fastworker-top integration tests, loaded by the subworker (``--task-modules fwtests_top_tasks``).

One task is registered under a name that is Rich/Textual markup, so the tests can check that the
terminal UI shows names as text and never interprets them.
"""

from __future__ import annotations

import time

from fastworker.client import task


@task(name="fwtop.add")
def add(x: int, y: int) -> int:
    """The sum: a task that succeeds at once."""
    return x + y


@task(name="fwtop.sleep")
def sleep(seconds: float) -> float:
    """Sleep, then return the seconds slept: a long-running task to cancel."""
    time.sleep(seconds)
    return seconds


@task(name="fwtop.fail")
def fail(message: str) -> None:
    """Raise ValueError with the message (no retries), for the traceback and retry tests."""
    raise ValueError(f"fwtop failure: {message}")


@task(name="[bold]x[/]")
def markup() -> str:
    """A task whose name is markup; the UI must show the brackets."""
    return "[bold]x[/]"


@task(name="fwtop.progress")
def progress(gate: str) -> str:
    """Report 4/10 "rendering", wait for the gate file (bounded), report 10/10 "done"."""
    from pathlib import Path

    from fastworker.client import report_progress

    report_progress(4, 10, "rendering")
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    report_progress(10, 10, "done")
    return "rendered"
