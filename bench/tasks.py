"""Trivial tasks for the benchmark suite, loaded by the control plane with ``--task-modules tasks``.

``bench/run.py`` puts ``bench/`` on the control plane's ``PYTHONPATH``; the tasks do as little as
possible so that the numbers measure FastWorker's own overhead (submit, queue, run, report).
"""

from __future__ import annotations

from fastworker.client import task


@task
def noop() -> None:
    """Do nothing (measures pure per-task overhead)."""
    return None


@task
def add(x: int, y: int) -> int:
    """Return ``x + y`` (lets the benchmark check every result)."""
    return x + y


@task
def spin(ms: float) -> float:
    """Burn CPU for ``ms`` milliseconds (a CPU-bound task for the scaling scenarios)."""
    import time

    end = time.perf_counter() + ms / 1000
    count = 0
    while time.perf_counter() < end:
        count += 1
    return ms


@task
def limited(x: int) -> int:
    """Return ``x``; the flow-control scenarios give it a rate limit at run time and queue a backlog behind it.

    No limit in its definition: a limit here would put a gate in front of every scenario's queue.
    """
    return x
