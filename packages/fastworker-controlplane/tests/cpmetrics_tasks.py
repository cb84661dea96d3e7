"""Tasks for the /metrics test of a real control-plane process (imported by that child via PYTHONPATH)."""

from __future__ import annotations

import os
import time

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


@task(name="metrics.wait_for")
def wait_for(path: str) -> str:
    """Runs until the test creates ``path`` (bounded), so it is seen in flight."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "released"


@task(name="metrics.loaded")
def loaded(packages: list[str]) -> list[str]:
    """Those of ``packages`` (modules or packages) that this process, the control plane itself, has imported."""
    import sys

    return sorted(package for package in packages if package in sys.modules)
