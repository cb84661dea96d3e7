"""Tasks for the workflow tests (``test_workflows.py``), loaded by a control plane or by its subworkers.

Every execution creates its own file ``KEY@UNIQUE`` in the directory named by the environment
variable ``FWTESTS_WORKFLOW_RUNS``, so the number of times a step ran is countable across
processes and restarts, whoever ran it. Each step takes its ``key`` as a keyword argument, so a
chain's previous result is still its first positional argument.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from fastworker.client import task

#: The environment variable naming the directory of execution records.
RUNS_ENV = "FWTESTS_WORKFLOW_RUNS"
#: Longest a waiting task waits for the test, in seconds (a failed test must not leave it running for ever).
WAIT_BOUND = 60.0


def mark(key: str) -> None:
    """Record one execution of ``key``."""
    (Path(os.environ[RUNS_ENV]) / f"{key}@{uuid.uuid4().hex}").touch()


@task(name="fwwf.add")
def add(x: int, y: int, *, key: str) -> int:
    """Record the execution; return x + y."""
    mark(key)
    return x + y


@task(name="fwwf.unique_add", unique=True)
def unique_add(x: int, y: int, *, key: str) -> int:
    """add, declared unique: a submission with the same arguments while one is live shares its id."""
    return add(x, y, key=key)


@task(name="fwwf.item")
def item(i: int, *, key: str, pause: float = 0.0) -> int:
    """Record the execution, sleep ``pause`` seconds; return i."""
    mark(key)
    time.sleep(pause)
    return i


@task(name="fwwf.collect")
def collect(values: list[int], *, key: str) -> list[int]:
    """Record the execution; return the list it was given (a chord's callback)."""
    mark(key)
    return values


@task(name="fwwf.fail")
def fail(*args: Any, key: str) -> None:
    """Record the execution, then fail."""
    mark(key)
    raise RuntimeError("this step fails on purpose")


@task(name="fwwf.slow")
def slow(value: Any = None, *, key: str) -> Any:
    """Record the execution, then sleep in short steps (so that a cancel lands) for at most WAIT_BOUND."""
    mark(key)
    deadline = time.monotonic() + WAIT_BOUND
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return value


@task(name="fwwf.wait_for")
def wait_for(gate: str, *, key: str) -> str:
    """Record the execution, then wait until the file ``gate`` exists (bounded); return the key."""
    mark(key)
    deadline = time.monotonic() + WAIT_BOUND
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise RuntimeError("the test never opened the gate")
        time.sleep(0.01)
    return key
