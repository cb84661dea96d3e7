"""Tasks for the subworker tests, loaded by the workers only (``--task-modules fwtests_worker_tasks``).

The control plane in these tests runs with ``--local-concurrency 0`` and without this module, so
every task here runs on a subworker. Sync tasks run in the worker's child processes (or, with
``--pool threads``, on threads of the worker process); each task tells which worker ran it
through ``FWTESTS_WORKER_ID``, which the test fixture sets to the worker's ``--worker-id``
(children inherit the worker's environment). Tasks that must detect a second execution write
files: an append-only log per process, or a marker created with ``O_EXCL`` (a second completion
raises ``FileExistsError`` and fails that attempt).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from fastworker.client import task


def worker_id() -> str:
    """The id of the worker running this task (its parent's pid when the variable is not set)."""
    return os.environ.get("FWTESTS_WORKER_ID") or f"pid-{os.getppid()}"


def _create_once(path: Path, text: str) -> None:
    """Create ``path`` with ``text``; raise FileExistsError if it exists already."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@task(name="fwtests_worker.whoami")
def whoami() -> str:
    """The id of the worker that ran it."""
    return worker_id()


@task(name="fwtests_worker.pid")
def pid(seconds: float = 0.0) -> int:
    """Sleep, then return the pid of the process that ran it."""
    time.sleep(seconds)
    return os.getpid()


@task(name="fwtests_worker.record")
def record(n: int, directory: str) -> list[object]:
    """Append ``n`` to this process's execution log in ``directory``; return ``[n, worker id]``."""
    me = worker_id()
    log = Path(directory) / f"{me}.{os.getpid()}.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{n}\n".encode())
    finally:
        os.close(fd)
    return [n, me]


@task(name="fwtests_worker.interval")
def interval(seconds: float) -> list[object]:
    """Sleep; return ``[worker id, started, ended]`` (wall-clock seconds)."""
    started = time.time()
    time.sleep(seconds)
    return [worker_id(), started, time.time()]


@task(name="fwtests_worker.sleep_for")
def sleep_for(seconds: float) -> str:
    """Sleep, then return the worker id."""
    time.sleep(seconds)
    return worker_id()


@task(name="fwtests_worker.finish_once", retries=2)
def finish_once(key: str, seconds: float, directory: str) -> list[str]:
    """Sleep, then create the marker ``directory/key`` (O_EXCL: a second completion fails); return ``[key, worker]``."""
    time.sleep(seconds)
    me = worker_id()
    _create_once(Path(directory) / key, me)
    return [key, me]


@task(name="fwtests_worker.sleep_no_retry", retries=0)
def sleep_no_retry(seconds: float) -> str:
    """Sleep with no retries allowed; return the worker id."""
    time.sleep(seconds)
    return worker_id()


@task(name="fwtests_worker.marked", retries=1)
def marked(key: str, seconds: float, directory: str) -> str:
    """Write a start marker, sleep, write a finish marker (one pair per execution); return the worker id."""
    me = worker_id()
    execution = f"{key}.{me}.{os.getpid()}.{time.time_ns()}"
    _create_once(Path(directory) / f"{execution}.started", me)
    time.sleep(seconds)
    _create_once(Path(directory) / f"{execution}.finished", me)
    return me


@task(name="fwtests_worker.abort")
def abort() -> None:
    """Kill the process running it with SIGABRT."""
    os.abort()


@task(name="fwtests_worker.spawn_and_hang", retries=0)
def spawn_and_hang(pid_file: str) -> None:
    """Start a ``sleep 60`` subprocess, write its pid to ``pid_file`` (whole, by a rename), and hang."""
    sleeper = subprocess.Popen(["sleep", "60"])
    written = Path(f"{pid_file}.part")
    written.write_text(str(sleeper.pid))
    written.rename(pid_file)
    time.sleep(60)


@task(name="fwtests_worker.hang", timeout=1)
def hang() -> None:
    """Sleep far past its one-second hard time limit."""
    time.sleep(30)


@task(name="fwtests_worker.block_loop")
async def block_loop(seconds: float) -> str:
    """An async task that blocks its worker's event loop (a mistake the worker must name in its log)."""
    time.sleep(seconds)
    return worker_id()


@task(name="fwtests_worker.blob")
def blob(size: int) -> bytes:
    """``size`` bytes (a result near the payload limit)."""
    return b"b" * size


@task(name="fwtests_worker.length")
def length(data: bytes) -> int:
    """How many bytes it was given (arguments near the payload limit)."""
    return len(data)


@task(name="fwtests_worker.heap")
def heap() -> list[int]:
    """How the process running it collects garbage: [young-generation threshold, objects frozen]."""
    import gc

    return [gc.get_threshold()[0], gc.get_freeze_count()]
