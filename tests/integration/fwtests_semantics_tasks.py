"""Tasks for the task-semantics integration tests (retries, countdown, periodic runs), loaded by the control plane and workers."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastworker.client import Retry, task


def _bump(directory: str, key: str) -> int:
    """Count one more execution of key in a file under directory (across processes); return the count."""
    path = Path(directory) / f"{key}.count"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    return path.stat().st_size


@task(name="fwtests_sem.flaky", retries=3, retry_backoff=0.05)
def flaky(key: str, directory: str, failures: int) -> int:
    """Fail the first `failures` executions, then succeed with the execution count."""
    count = _bump(directory, key)
    if count <= failures:
        raise ConnectionError(f"attempt {count} fails on purpose")
    return count


@task(name="fwtests_sem.reset_then_ok", retries=2, retry_backoff=0.05, retry_on=(ConnectionError,))
def reset_then_ok(key: str, directory: str) -> int:
    """Fail once with a ConnectionResetError (a subclass of what retry_on names), then succeed."""
    count = _bump(directory, key)
    if count == 1:
        raise ConnectionResetError("reset by peer, on purpose")
    return count


@task(name="fwtests_sem.asks_again", retries=2)
def asks_again(key: str, directory: str) -> int:
    """Ask for one more attempt with Retry(delay=0.1), then succeed."""
    count = _bump(directory, key)
    if count == 1:
        raise Retry(delay=0.1)
    return count


@task(name="fwtests_sem.count")
def count(key: str, directory: str) -> int:
    """Count executions of key."""
    return _bump(directory, key)


@task(name="fwtests_sem.slow")
def slow(seconds: float) -> str:
    """Sleep, then return."""
    time.sleep(seconds)
    return "done"


@task(name="fwtests_sem.tick", every=1)
def tick() -> float:
    """A periodic task: returns when it ran."""
    return time.time()


@task(name="fwtests_sem.soft", soft_timeout=0.3, timeout=5)
def soft(directory: str) -> str:
    """Sleep past the soft limit; clean up on SoftTimeLimitExceeded and report that it did."""
    from fastworker.client import SoftTimeLimitExceeded

    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        (Path(directory) / "soft.cleaned").write_text("yes")
        raise
    return "not reached"


@task(name="fwtests_sem.async_hang", timeout=0.3)
async def async_hang() -> None:
    """Await far past the hard limit."""
    import asyncio

    await asyncio.sleep(30)


@task(name="fwtests_sem.long")
def long(seconds: float) -> str:
    """A sync task that runs long enough to be cancelled while running."""
    time.sleep(seconds)
    return "finished"


@task(name="fwtests_sem.async_long")
async def async_long(seconds: float) -> str:
    """An async task that runs long enough to be cancelled while running."""
    import asyncio

    await asyncio.sleep(seconds)
    return "finished"


@task(name="fwtests_sem.twice_then_ok", retries=3, retry_backoff=0.2, retry_backoff_max=10)
def twice_then_ok(key: str, directory: str) -> int:
    """Fail the first two attempts, recording when each attempt started; then succeed."""
    path = Path(directory) / f"{key}.times"
    with open(path, "a") as times:
        times.write(f"{time.time()}\n")
    attempts = len(path.read_text().split())
    if attempts <= 2:
        raise RuntimeError(f"attempt {attempts} fails on purpose")
    return attempts


@task(name="fwtests_sem.spin_forever", timeout=1)
def spin_forever() -> None:
    """A sync task in an infinite loop: only its hard time limit stops it."""
    while True:
        pass


@task(name="fwtests_sem.each_second", every=1)
def each_second() -> float:
    """A periodic task every second."""
    return time.time()


@task(name="fwtests_sem.held", timeout=60)
def held(seconds: float) -> str:
    """A sync task with a time limit (so it runs in a child process, also on the control plane)."""
    time.sleep(seconds)
    return "finished"


@task(name="fwtests_sem.always_fails")
def always_fails() -> None:
    """Fail (for retry by request)."""
    raise ValueError("fails on purpose")


@task(name="fwtests_sem.async_stubborn")
async def async_stubborn(seconds: float) -> str:
    """An async task that catches its cancellation and returns a value anyway (it must still end CANCELLED)."""
    import asyncio

    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await asyncio.sleep(0.1)
    return "ran on"
