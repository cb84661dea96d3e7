"""Tasks for the security suite, loaded by control planes and workers (``--task-modules fwsec_tasks``).

``fwsec.record`` leaves one file per execution that ran to completion, named after the task id, so
a test can count how many times each task completed, whatever process or host ran it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fastworker.client import task


@task(name="fwsec.noop")
def noop() -> None:
    """Nothing: the cheapest round trip."""


@task(name="fwsec.echo")
def echo(value: Any = None) -> Any:
    """Return the argument unchanged."""
    return value


@task(name="fwsec.record", retries=5)
def record(key: str, directory: str, seconds: float = 0.0) -> str:
    """Sleep, then create ``directory/KEY.PID.NS``: one file per completed execution of task ``key``."""
    time.sleep(seconds)
    path = Path(directory) / f"{key}.{os.getpid()}.{time.monotonic_ns()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    return key
