"""Tasks for the journal tests (``--task-modules fwtests_journal_tasks``), on the control plane and its workers.

Every execution creates its own file ``KEY@UNIQUE`` in the directory the test passes, so the
number of times a task ran is countable across processes and restarts, whoever ran it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from pathlib import Path

from fastworker.client import task

#: Longest a blocking task waits for the test to release it, in seconds.
BLOCK_BOUND = 120.0


def mark(directory: str, key: str) -> None:
    """Record one execution of ``key``."""
    (Path(directory) / f"{key}@{uuid.uuid4().hex}").touch()


def executions(directory: str | os.PathLike[str]) -> Counter[str]:
    """How many times each key ran so far."""
    return Counter(name.partition("@")[0] for name in os.listdir(directory))


@task(name="fwtests_journal.record")
def record(directory: str, key: str) -> str:
    """Record an execution; return the key."""
    mark(directory, key)
    return key


@task(name="fwtests_journal.echo")
def echo(value: object) -> object:
    """Return the value."""
    return value


def _block(directory: str, key: str, release: str) -> str:
    mark(directory, key)
    deadline = time.monotonic() + BLOCK_BOUND
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise RuntimeError("the test never released this task")
        time.sleep(0.02)
    return key


@task(name="fwtests_journal.block")
def block(directory: str, key: str, release: str) -> str:
    """Record an execution, then wait until the file ``release`` exists; no retries."""
    return _block(directory, key, release)


@task(name="fwtests_journal.block_retry", retries=1)
def block_retry(directory: str, key: str, release: str) -> str:
    """The same with one retry."""
    return _block(directory, key, release)
