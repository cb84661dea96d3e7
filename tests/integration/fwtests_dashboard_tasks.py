"""Tasks for the web dashboard's browser tests, loaded by the subworker (``--task-modules fwtests_dashboard_tasks``).

One task is registered under a name full of HTML, so the tests can check that every page shows
names as text and never as markup.
"""

from __future__ import annotations

import time
from typing import Any

from fastworker.client import task

#: A task name that is HTML (and a script): pages must show it literally.
MARKUP_NAME = 'fwdash.<b id="fwdash-bold">markup</b>&amp;<script>window.fwdashXss = 1</script>'


@task(name="fwdash.add")
def add(x: int, y: int) -> int:
    """The sum: a task that succeeds at once."""
    return x + y


@task(name="fwdash.sleep")
def sleep(seconds: float) -> float:
    """Sleep, then return the seconds slept: a long-running task to cancel."""
    time.sleep(seconds)
    return seconds


@task(name="fwdash.fail")
def fail(message: str) -> None:
    """Raise RuntimeError with the message (no retries), for the traceback and retry tests."""
    raise RuntimeError(f"fwdash failure: {message}")


@task(name="fwdash.echo")
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments it got: for checking how pages show arguments and results."""
    return {"args": list(args), "kwargs": kwargs}


@task(name=MARKUP_NAME)
def markup() -> str:
    """A task whose name is HTML; its result is HTML too."""
    return "<i>not italic</i>"


@task(name="fwdash.progress")
def progress(first_gate: str, second_gate: str) -> str:
    """Report 3/10, wait for the first gate file, report 7/10, wait for the second, return (bounded waits)."""
    from pathlib import Path

    from fastworker.client import report_progress

    for gate, (done, message) in ((first_gate, (3, "rendering")), (second_gate, (7, "almost there"))):
        report_progress(done, 10, message)
        deadline = time.monotonic() + 60
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return "rendered"


@task(name="fwdash.limited", rate_limit="50/s", max_concurrency=2)
def limited(x: int) -> int:
    """Return x: a task whose definition limits it, so the overview's Limits panel lists it."""
    return x
