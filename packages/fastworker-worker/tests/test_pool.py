"""ProcessPool runs sync tasks in spawned children and survives children that crash, hang, leak or get cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastworker.protocol.payload import decode_value, encode_arguments
from fastworker.worker.errors import TaskLoadError
from fastworker.worker.executor import Outcome
from fastworker.worker.pool import ProcessPool

TASKS_DIR = str(Path(__file__).parent)
TASK_MODULE = "pool_tasks_for_tests"  # imported by the children only, through sys_path

MakePool = Callable[..., Awaitable[ProcessPool]]

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses /proc and process groups as Linux has them"
)


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    """Start pools of the test tasks; close every one of them after the test."""
    pools: list[ProcessPool] = []

    async def make(size: int = 1, **options: Any) -> ProcessPool:
        options.setdefault("sys_path", [TASKS_DIR])
        pool = ProcessPool(size, [TASK_MODULE], **options)
        pools.append(pool)
        await pool.start()
        return pool

    yield make
    for pool in pools:
        await pool.close()


_ids = iter(range(1_000_000))


async def run(pool: ProcessPool, name: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Outcome:
    return await pool.run(f"task-{next(_ids)}", name, encode_arguments(args, kwargs), timeout=timeout)


def value(outcome: Outcome) -> Any:
    assert outcome.succeeded, outcome.error
    assert outcome.error is None and outcome.result is not None
    return decode_value(outcome.result)


def error_of(outcome: Outcome) -> tuple[str, str]:
    assert not outcome.succeeded and outcome.result is None and outcome.error is not None
    return outcome.error.type, outcome.error.message


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def assert_gone(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # also fails for a zombie: the pool reaped it


async def test_a_task_runs_in_a_child_and_returns_its_value(make_pool: MakePool) -> None:
    pool = await make_pool()

    outcome = await run(pool, "pool.add", 2, y=3)

    assert value(outcome) == 5
    assert outcome.started_at <= outcome.finished_at
    assert value(await run(pool, "pool.pid")) in pool.pids
    assert os.getpid() not in pool.pids
    assert value(await run(pool, "pool.echo", {"t": (1, b"x")})) == {"t": (1, b"x")}
    assert (pool.size, pool.busy, pool.restarts) == (1, 0, 0)


async def test_large_arguments_and_results_cross_the_pipes_whole(make_pool: MakePool) -> None:
    pool = await make_pool()
    blob = os.urandom(6 * 2**20)

    assert value(await run(pool, "pool.echo", blob)) == blob
    assert value(await run(pool, "pool.add", 1, 2)) == 3


async def test_an_exception_is_a_failure_with_its_traceback(make_pool: MakePool) -> None:
    pool = await make_pool()
    child = pool.pids

    outcome = await run(pool, "pool.fail", "boom")

    assert error_of(outcome) == ("ValueError", "boom")
    assert outcome.error is not None
    assert "pool_tasks_for_tests.py" in outcome.error.traceback
    assert "raise ValueError(message)" in outcome.error.traceback
    assert pool.pids == child and pool.restarts == 0


async def test_wrong_arguments_fail_with_the_type_error(make_pool: MakePool) -> None:
    pool = await make_pool()

    type_, message = error_of(await run(pool, "pool.add", 1, 2, 3))

    assert type_ == "TypeError"
    assert "positional argument" in message


async def test_unknown_and_async_tasks_never_reach_a_child(make_pool: MakePool) -> None:
    pool = await make_pool()

    assert error_of(await run(pool, "pool.nope"))[0] == "UnknownTask"
    with pytest.raises(TypeError, match="async"):
        await run(pool, "pool.async")
    assert value(await run(pool, "pool.add", 1, 1)) == 2


async def test_a_child_that_aborts_is_replaced_and_the_next_task_succeeds(make_pool: MakePool) -> None:
    pool = await make_pool(1)
    [crashed] = pool.pids

    type_, message = error_of(await run(pool, "pool.abort"))

    assert type_ == "WorkerCrashed"
    assert "SIGABRT" in message and str(crashed) in message
    assert value(await run(pool, "pool.add", 1, 2)) == 3
    assert crashed not in pool.pids and len(pool.pids) == 1
    assert pool.restarts == 1
    assert_gone([crashed])


async def test_the_hard_time_limit_kills_the_child_and_the_next_task_succeeds(make_pool: MakePool) -> None:
    pool = await make_pool(1)
    [hung] = pool.pids

    began = time.monotonic()
    outcome = await run(pool, "pool.sleep", 30, timeout=1.0)
    elapsed = time.monotonic() - began

    type_, message = error_of(outcome)
    assert type_ == "TimeLimitExceeded"
    assert "1 s" in message and "pool.sleep" in message
    assert 1.0 <= elapsed < 2.0
    assert value(await run(pool, "pool.add", 2, 2)) == 4
    assert hung not in pool.pids and pool.restarts == 1
    await pool.close()
    assert_gone([hung])


def ended(pid: int) -> bool:
    """True once pid is gone or a zombie (its parent, maybe init, has yet to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


async def wait_ended(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not ended(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@linux_only
async def test_the_time_limit_also_kills_the_processes_the_task_started(make_pool: MakePool, tmp_path: Path) -> None:
    pool = await make_pool(1)
    pid_file = tmp_path / "grandchild.pid"

    outcome = await run(pool, "pool.spawn_and_hang", str(pid_file), timeout=1.0)

    assert error_of(outcome)[0] == "TimeLimitExceeded"
    assert await wait_ended(int(pid_file.read_text()))


@linux_only
async def test_a_crash_is_seen_even_when_a_forked_grandchild_holds_the_pipes(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool = await make_pool(1)
    pid_file = tmp_path / "grandchild.pid"

    outcome = await asyncio.wait_for(run(pool, "pool.fork_and_abort", str(pid_file)), 5)

    type_, message = error_of(outcome)
    assert type_ == "WorkerCrashed" and "SIGABRT" in message
    assert await wait_ended(int(pid_file.read_text()))
    assert value(await run(pool, "pool.add", 1, 2)) == 3


async def test_cancel_kills_a_running_task_and_replaces_its_child(make_pool: MakePool) -> None:
    pool = await make_pool(1)
    [child] = pool.pids
    running = asyncio.create_task(pool.run("sleeper", "pool.sleep", encode_arguments([30], {})))
    await until(lambda: pool.busy == 1)  # run() sends the task on its first step

    assert pool.cancel("sleeper") is True
    outcome = await asyncio.wait_for(running, 5)

    assert error_of(outcome)[0] == "TaskCancelled"
    assert pool.cancel("sleeper") is False
    assert pool.cancel("never-submitted") is False
    assert value(await run(pool, "pool.add", 3, 4)) == 7
    assert child not in pool.pids and pool.restarts == 1


async def test_cancel_of_a_task_waiting_for_a_child_means_it_never_runs(make_pool: MakePool) -> None:
    pool = await make_pool(1)
    first = asyncio.create_task(pool.run("first", "pool.sleep", encode_arguments([30], {})))
    second = asyncio.create_task(pool.run("second", "pool.add", encode_arguments([1, 2], {})))
    await until(lambda: pool.busy == 1)
    await asyncio.sleep(0)  # second is waiting for the only child now

    assert pool.cancel("second") is True
    assert error_of(await asyncio.wait_for(second, 5))[0] == "TaskCancelled"
    assert pool.restarts == 0  # nothing was killed for it
    assert pool.cancel("first") is True
    assert error_of(await asyncio.wait_for(first, 5))[0] == "TaskCancelled"


async def test_a_caller_that_stops_waiting_takes_the_task_and_its_child_down(make_pool: MakePool) -> None:
    pool = await make_pool(1)
    [child] = pool.pids

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run(pool, "pool.sleep", 30), 0.2)

    assert pool.busy == 0 and pool.restarts == 1
    assert value(await run(pool, "pool.add", 1, 2)) == 3
    assert child not in pool.pids


async def test_max_tasks_per_child_retires_children(make_pool: MakePool) -> None:
    pool = await make_pool(1, max_tasks_per_child=2)
    [first] = pool.pids

    pids = [value(await run(pool, "pool.pid")) for _ in range(5)]

    assert [value(await run(pool, "pool.add", i, i)) for i in range(3)] == [0, 2, 4]
    assert pids[0] == pids[1] == first
    assert pids[2] == pids[3] != first
    assert pids[4] not in (first, pids[2])
    assert pool.restarts == 4
    await pool.close()
    assert_gone(sorted(set(pids)))


async def test_a_child_over_max_rss_is_replaced(make_pool: MakePool) -> None:
    probe = await make_pool(1)
    baseline = value(await run(probe, "pool.rss"))
    pool = await make_pool(1, max_rss_bytes=baseline + 60 * 2**20)
    [leaky] = pool.pids

    assert value(await run(pool, "pool.rss")) < baseline + 60 * 2**20
    assert pool.pids == [leaky]
    rss = value(await run(pool, "pool.hoard", 100))

    assert rss > baseline + 90 * 2**20
    assert leaky not in pool.pids and pool.restarts == 1
    assert value(await run(pool, "pool.rss")) < baseline + 60 * 2**20
    await pool.close()
    assert_gone([leaky])


async def test_an_import_failure_in_the_children_is_a_task_load_error(tmp_path: Path) -> None:
    (tmp_path / "pool_broken_tasks.py").write_text("raise RuntimeError('no database here')\n")
    pool = ProcessPool(2, ["pool_broken_tasks"], sys_path=[str(tmp_path)])

    with pytest.raises(TaskLoadError, match="no database here") as caught:
        await pool.start()

    assert caught.value.module == "pool_broken_tasks"
    with pytest.raises(RuntimeError):
        await pool.run("x", "pool.add", encode_arguments([1, 2], {}))
    assert pool.pids == []


async def test_two_children_run_two_tasks_at_the_same_time(make_pool: MakePool) -> None:
    pool = await make_pool(2)

    first, second = await asyncio.gather(run(pool, "pool.stamp", 0.5), run(pool, "pool.stamp", 0.5))

    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = value(first), value(second)
    assert pid_a != pid_b
    assert {pid_a, pid_b} == set(pool.pids)
    assert max(start_a, start_b) < min(end_a, end_b)  # the two sleeps overlapped


async def test_more_runs_than_children_wait_for_a_free_child(make_pool: MakePool) -> None:
    pool = await make_pool(2)

    outcomes = await asyncio.gather(*(run(pool, "pool.add", i, 1) for i in range(10)))

    assert [value(outcome) for outcome in outcomes] == list(range(1, 11))
    assert pool.busy == 0 and pool.restarts == 0


async def test_close_leaves_no_child_alive_and_refuses_new_tasks(make_pool: MakePool) -> None:
    pool = await make_pool(2)
    pids = pool.pids
    assert len(pids) == 2

    await pool.close()

    assert_gone(pids)
    assert pool.pids == []
    with pytest.raises(RuntimeError, match="closed"):
        await run(pool, "pool.add", 1, 2)


async def test_close_kills_a_task_that_does_not_finish_in_time(make_pool: MakePool) -> None:
    pool = await make_pool(1)
    pids = pool.pids
    running = asyncio.create_task(run(pool, "pool.sleep", 30))
    await until(lambda: pool.busy == 1)

    await pool.close(timeout=0.2)

    assert error_of(await running)[0] == "WorkerLost"
    assert_gone(pids)


#: A process that owns a pool whose one child runs ``pool.spawn_and_hang``; it writes its reaper's pid.
OWNER = r"""
import asyncio, signal, sys
from pathlib import Path
from fastworker.protocol.payload import encode_arguments
from fastworker.worker.pool import ProcessPool

tasks_dir, pid_file, reaper_file = sys.argv[1:]
for signum in (signal.SIGINT, signal.SIGTERM):  # a handler, not SIG_IGN, which the reaper would inherit
    signal.signal(signum, lambda *_: None)

async def main():
    pool = ProcessPool(1, ["pool_tasks_for_tests"], sys_path=[tasks_dir])
    await pool.start()
    Path(reaper_file).write_text(str(pool._reaper.pid))
    await pool.run("t", "pool.spawn_and_hang", encode_arguments([pid_file], {}))

asyncio.run(main())
"""


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):  # not written yet, or half written
        return None


@contextlib.contextmanager
def pool_owner(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """Run OWNER in a session of its own: (it, its reaper's pid, the pid of its task's subprocess)."""
    grandchild_file, reaper_file = tmp_path / "grandchild.pid", tmp_path / "reaper.pid"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, TASKS_DIR, str(grandchild_file), str(reaper_file)], start_new_session=True
    )
    grandchild = reaper = None
    try:
        deadline = time.monotonic() + 30
        while (grandchild := read_pid(grandchild_file)) is None or (reaper := read_pid(reaper_file)) is None:
            assert owner.poll() is None, f"the pool's owner exited with {owner.returncode}"
            assert time.monotonic() < deadline, "the pool's owner did not start its task in time"
            time.sleep(0.01)
        yield owner, reaper, grandchild
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait(5)
        for pid in (grandchild, reaper):
            if pid is not None and not ended(pid):
                os.kill(pid, signal.SIGKILL)


def ignored_signals(pid: int) -> set[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return {signum for signum in range(1, 64) if mask & (1 << (signum - 1))}


@linux_only
async def test_a_sigkilled_owner_takes_down_the_processes_its_tasks_started(tmp_path: Path) -> None:
    with pool_owner(tmp_path) as (owner, reaper, grandchild):
        assert not ended(grandchild)

        owner.kill()  # as kill -9, the OOM killer or a supervisor's stop timeout do to a worker
        owner.wait(5)

        assert await wait_ended(grandchild, timeout=5)
        assert await wait_ended(reaper, timeout=5)


@linux_only
async def test_stop_signals_meant_for_the_worker_never_make_the_reaper_kill(tmp_path: Path) -> None:
    with pool_owner(tmp_path) as (owner, reaper, grandchild):
        wanted = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        await until(lambda: wanted <= ignored_signals(reaper))

        for signum in (signal.SIGINT, signal.SIGTERM):
            os.killpg(owner.pid, signum)  # a terminal's Ctrl-C, a supervisor's kill -TERM -PGID
        for signum in wanted:
            os.kill(reaper, signum)
        await asyncio.sleep(0.3)

        assert owner.poll() is None and not ended(reaper) and not ended(grandchild)
        owner.kill()  # it still does its job
        owner.wait(5)
        assert await wait_ended(grandchild, timeout=5)


@linux_only
async def test_close_reaps_the_reaper_which_kills_nothing_a_child_that_exited_left_behind(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool = await make_pool(1)
    reaper = pool._reaper.pid
    assert reaper is not None and not ended(reaper)
    left_behind = value(await run(pool, "pool.spawn_and_return", str(tmp_path / "left.pid")))
    try:
        await pool.close()

        assert_gone([reaper])
        assert not ended(left_behind)  # given up with its child's clean exit, as before
    finally:
        os.kill(left_behind, signal.SIGKILL)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        ProcessPool(0, [TASK_MODULE])
    with pytest.raises(ValueError):
        ProcessPool(1, [TASK_MODULE], max_tasks_per_child=-1)
    with pytest.raises(TypeError):
        ProcessPool(1, TASK_MODULE)
