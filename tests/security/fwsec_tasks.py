"""Tasks for the security suite, loaded by control planes and workers (``--task-modules fwsec_tasks``).

``fwsec.record`` leaves one file per execution that ran to completion, named after the task id, so
a test can count how many times each task completed, whatever process or host ran it.
``fwsec.exec`` (retries=2) and ``fwsec.exec_once`` (retries=0) log each execution's start and end,
so a test also knows which worker ran what, and when, relative to a fault.
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


# ------------------------------------------------------------------------------ execution log

#: File (in the task's ``directory``) where ``fwsec.exec``/``fwsec.exec_once`` log every execution.
EXECUTIONS_LOG = "executions.log"


def _log_execution(event: str, key: str, directory: str) -> None:
    """Append ``EVENT KEY ATTEMPT WORKER PID TIME``: one O_APPEND write, so lines from every host never mix.

    The worker id comes from ``FWSEC_WORKER_ID`` (set by the test on each worker, inherited by its
    children); the attempt from the task context where the client library offers one, else 0.
    """
    attempt = 0
    try:
        from fastworker.client import current_task  # type: ignore[attr-defined]  # not in every version
    except ImportError:
        pass
    else:
        attempt = int(current_task().attempt)
    worker = os.environ.get("FWSEC_WORKER_ID", "?")
    line = f"{event} {key} {attempt} {worker} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(Path(directory) / EXECUTIONS_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@task(name="fwsec.exec", retries=2)
def execute(key: str, directory: str, seconds: float = 0.0) -> str:
    """Log the start, sleep, log the end: every execution is counted, with where and when it ran."""
    _log_execution("start", key, directory)
    time.sleep(seconds)
    _log_execution("end", key, directory)
    return key


@task(name="fwsec.exec_once", retries=0)
def execute_once(key: str, directory: str, seconds: float = 0.0) -> str:
    """``fwsec.exec`` with no retries: a re-run of it is only ever a duplicate."""
    _log_execution("start", key, directory)
    time.sleep(seconds)
    _log_execution("end", key, directory)
    return key
