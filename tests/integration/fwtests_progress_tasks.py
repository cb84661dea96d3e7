"""Tasks that report progress, for ``test_progress.py``: loaded by a control plane or by a subworker.

Each floods ``report_progress`` with one value (the rate limit must keep that off the wire), then
holds its "rendering" progress until the test creates the gate file, then reports its last value
and returns. Sync tasks run on a slot thread or a worker's child process, ``limited`` (it has a
time limit) in a child process on the control plane too, async ones on an event loop.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fastworker.client import report_progress, task

#: Calls of report_progress in each task's flood.
FLOOD = 20_000
#: Longest a task waits for its gate, in seconds (a failed test must not leave it running for ever).
GATE_WAIT = 60.0


def _flood() -> None:
    for _ in range(FLOOD):
        report_progress(3, 10, "rendering")


def _wait_for(gate: str) -> None:
    deadline = time.monotonic() + GATE_WAIT
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


@task(name="fwprogress.sync")
def sync_steps(gate: str) -> str:
    """Floods, waits for the gate, reports 10/10 "done"."""
    _flood()
    _wait_for(gate)
    report_progress(10, 10, "done")
    return "ok"


@task(name="fwprogress.limited", timeout=120)
def limited_steps(gate: str) -> str:
    """As ``sync``, with a time limit (run in a child process everywhere)."""
    return sync_steps.fn(gate)


@task(name="fwprogress.async")
async def async_steps(gate: str) -> str:
    """As ``sync``, on the event loop (the gate is polled without blocking it)."""
    _flood()
    deadline = time.monotonic() + GATE_WAIT
    while not Path(gate).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    report_progress(10, 10, "done")
    return "ok"


@task(name="fwprogress.unknown_total")
def unknown_total() -> int:
    """Reports counts without a total, then returns at once."""
    for done in range(5):
        report_progress(done + 1, message="counting")
    return 5


@task(name="fwprogress.retried", retries=1, retry_backoff=0.01)
def retried(marker: str) -> str:
    """Reports 1/2 and fails on its first attempt; its retry reports nothing and succeeds."""
    path = Path(marker)
    if not path.exists():
        path.write_text("first attempt")
        report_progress(1, 2, "first attempt")
        raise RuntimeError("fail once")
    return "second attempt"
