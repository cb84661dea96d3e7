"""Tasks for the /metrics test of a real control-plane process (imported by that child via PYTHONPATH)."""

from __future__ import annotations

from fastworker.client import Retry, task

_flaky_runs = 0


@task(name="metrics.add")
def add(x: int, y: int) -> int:
    return x + y


@task(name="metrics.missing")
def missing(key: str) -> None:
    raise KeyError(key)


@task(name="metrics.flaky", retries=2)
def flaky() -> str:
    """Asks for a retry on its first run in this process, succeeds after."""
    global _flaky_runs
    _flaky_runs += 1
    if _flaky_runs == 1:
        raise Retry(delay=0.05)
    return "ok"
