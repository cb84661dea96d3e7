"""The reaper process of a pool kills the process groups still listed when its pipe closes, and only those.

Stand-in groups are ``sleep`` processes started as group leaders (``process_group=0``), as pool
children are; closing the reaper's pipe is what the death of the pool's process does. Every
process is stopped by pid, bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator

import pytest

from fastworker.worker import _groupreaper
from fastworker.worker._groupreaper import GroupReaper

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="watches the reaper's exit with a pidfd (Linux)")

BOUND = 5.0


@pytest.fixture
def leaders() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two ``sleep 60`` processes, each leading its own process group; killed at teardown."""
    started = [subprocess.Popen(["sleep", "60"], process_group=0) for _ in range(2)]
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(BOUND)


async def until(condition: Callable[[], bool], timeout: float = BOUND) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_end_of_file_kills_the_groups_still_listed_and_no_forgotten_one(
    leaders: list[subprocess.Popen[bytes]],
) -> None:
    listed, forgotten = leaders
    reaper = GroupReaper()
    reaper.start(asyncio.get_running_loop())
    pid = reaper.pid
    reaper.watch(listed.pid)
    reaper.watch(forgotten.pid)
    reaper.forget(forgotten.pid)

    await reaper.close()

    assert listed.wait(BOUND) == -signal.SIGKILL
    assert forgotten.poll() is None
    assert reaper.pid is None
    with pytest.raises(ProcessLookupError):  # reaped: not even a zombie
        os.kill(pid or 0, 0)


async def test_a_reaper_that_dies_is_replaced_and_told_every_group(
    leaders: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_groupreaper, "RESTART_INTERVAL", 0.0)
    listed, forgotten = leaders
    reaper = GroupReaper()
    reaper.start(asyncio.get_running_loop())
    reaper.watch(listed.pid)
    reaper.watch(forgotten.pid)
    reaper.forget(forgotten.pid)
    first = reaper.pid
    assert first is not None

    with caplog.at_level(logging.WARNING, logger=_groupreaper.__name__):
        os.kill(first, signal.SIGKILL)
        await until(lambda: reaper.pid not in (None, first))
    assert f"reaper process (pid {first}) stopped: it exited with code -9; starting another" in caplog.text
    with pytest.raises(ProcessLookupError):  # the dead one is reaped
        os.kill(first, 0)
    assert listed.poll() is None and forgotten.poll() is None  # the one killed acted on nothing

    await reaper.close()

    assert listed.wait(BOUND) == -signal.SIGKILL
    assert forgotten.poll() is None


async def test_a_process_forked_without_exec_does_not_keep_the_pipe_open(
    leaders: list[subprocess.Popen[bytes]],
) -> None:
    listed = leaders[0]
    reaper = GroupReaper()
    reaper.start(asyncio.get_running_loop())
    reaper.watch(listed.pid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a process with threads
        forked = os.fork()
    if forked == 0:  # holds every fd it inherited, for longer than the test waits
        time.sleep(BOUND * 2)
        os._exit(0)
    try:
        await reaper.close()
        assert listed.wait(BOUND) == -signal.SIGKILL
    finally:
        os.kill(forked, signal.SIGKILL)
        os.waitpid(forked, 0)
