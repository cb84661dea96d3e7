"""Tasks that test_pool.py runs in ProcessPool children (imported there through ``sys_path``), and test_threads.py on threads."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from fastworker.client.context import current_task
from fastworker.client.errors import SoftTimeLimitExceeded, TaskInterrupted
from fastworker.client.task import task
from fastworker.worker.child import read_rss

#: What ``hoard`` keeps referenced, so that the child's RSS stays up after the task.
_HOARD: list[bytes] = []


@task(name="pool.add")
def add(x: int, y: int) -> int:
    return x + y


@task(name="pool.echo")
def echo(value: Any) -> Any:
    return value


@task(name="pool.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@task(name="pool.pid")
def pid() -> int:
    return os.getpid()


@task(name="pool.abort")
def abort() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file for this deliberate crash
    os.abort()


@task(name="pool.sleep")
def sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@task(name="pool.stamp")
def stamp(seconds: float) -> list[float]:
    """Sleep, and say which process did it and when (wall clock)."""
    started = time.time()
    time.sleep(seconds)
    return [os.getpid(), started, time.time()]


@task(name="pool.hoard")
def hoard(megabytes: int) -> int:
    _HOARD.append(b"\x01" * (megabytes * 1024 * 1024))  # touched pages: really resident
    return read_rss()


@task(name="pool.rss")
def rss() -> int:
    return read_rss()


@task(name="pool.async")
async def async_task() -> None:
    return None


@task(name="pool.spawn_and_hang")
def spawn_and_hang(pid_file: str) -> None:
    """Start a grandchild process, say its pid, and hang."""
    grandchild = subprocess.Popen(["sleep", "60"])
    Path(pid_file).write_text(str(grandchild.pid))
    time.sleep(30)


@task(name="pool.spawn_and_return")
def spawn_and_return(pid_file: str) -> int:
    """Start a grandchild process that outlives the task, say its pid, and return it."""
    grandchild = subprocess.Popen(["sleep", "60"])
    Path(pid_file).write_text(str(grandchild.pid))
    return grandchild.pid


@task(name="pool.fork_and_abort")
def fork_and_abort(pid_file: str) -> None:
    """Fork a grandchild that holds every pipe of this child open, say its pid, then crash."""
    grandchild = os.fork()
    if grandchild == 0:  # outlive the child, holding its fds
        time.sleep(60)
        os._exit(0)
    Path(pid_file).write_text(str(grandchild))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.abort()


@task(name="pool.progress_flood")
def progress_flood(calls: int) -> int:
    """Reports ``calls`` values in a tight loop (done = 1..calls of calls); the pool sees only a few."""
    from fastworker.client import report_progress

    for done in range(1, calls + 1):
        report_progress(done, calls, f"step {done}")
    return calls


@task(name="pool.progress_then_sleep")
def progress_then_sleep(seconds: float) -> str:
    """Reports 1/2 once, then sleeps: the value must reach the pool while the task still runs."""
    from fastworker.client import report_progress

    report_progress(1, 2, "sleeping")
    time.sleep(seconds)
    return "slept"


@task(name="pool.spin")
def spin(seconds: float, marker: str = "") -> int:
    """Loop in pure Python (an exception raised in its thread lands at once); write what stopped it to ``marker``."""
    deadline = time.monotonic() + seconds
    loops = 0
    try:
        while time.monotonic() < deadline:
            loops += 1
    except BaseException as exc:
        if marker:  # its class, and whether a task can catch it as fastworker.client.TaskInterrupted
            Path(marker).write_text(f"{type(exc).__name__} {isinstance(exc, TaskInterrupted)}")
        raise
    return loops


@task(name="pool.soft_cleanup")
def soft_cleanup(seconds: float) -> str:
    """Loop in pure Python; on its soft time limit, clean up and return."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            pass
    except SoftTimeLimitExceeded as exc:
        return f"cleaned up after {type(exc).__name__}"
    return "finished"


@task(name="pool.whoami")
def whoami() -> list[Any]:
    """The running task's context, as current_task() gives it."""
    context = current_task()
    return [context.id, context.name, context.attempt, context.retries_left, context.worker_id, context.traceparent]


@task(name="pool.log")
def log(text: str) -> None:
    """Log at INFO and DEBUG from the task (a logger of its own module)."""
    logger = logging.getLogger("pool_tasks_for_tests")
    logger.info("info %s from %s", text, current_task().id)
    logger.debug("debug %s", text)
