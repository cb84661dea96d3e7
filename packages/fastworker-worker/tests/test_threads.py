"""ThreadPool runs sync tasks on threads of this process; limits and cancels interrupt a thread they cannot kill."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fastworker.client.models import Progress
from fastworker.client.task import TaskRegistry
from fastworker.protocol.payload import decode_value, encode_arguments
from fastworker.protocol.v1.task_pb2 import CODEC_MSGPACK, CODEC_PICKLE, Payload
from fastworker.worker.executor import Outcome
from fastworker.worker.loader import load_task_modules
from fastworker.worker.threads import ThreadPool

TASKS_DIR = str(Path(__file__).parent)
TASK_MODULE = "pool_tasks_for_tests"  # the tasks test_pool.py runs in children, imported here

MakePool = Callable[..., Awaitable[ThreadPool]]


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> TaskRegistry:
    monkeypatch.syspath_prepend(TASKS_DIR)
    return load_task_modules([TASK_MODULE])


@pytest.fixture
async def make_pool(registry: TaskRegistry) -> AsyncIterator[MakePool]:
    """Start thread pools of the test tasks; close every one of them after the test."""
    pools: list[ThreadPool] = []

    async def make(size: int = 1, **options: Any) -> ThreadPool:
        pool = ThreadPool(size, registry, **options)
        pools.append(pool)
        await pool.start()
        return pool

    yield make
    for pool in pools:
        await pool.close(timeout=0)


_ids = iter(range(1_000_000))


async def run(pool: ThreadPool, name: str, *args: Any, **options: Any) -> Outcome:
    return await pool.run(f"task-{next(_ids)}", name, encode_arguments(args, {}), **options)


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


async def test_a_task_runs_on_a_thread_of_this_process_and_returns_its_value(make_pool: MakePool) -> None:
    pool = await make_pool()

    outcome = await run(pool, "pool.add", 2, 3)

    assert value(outcome) == 5
    assert outcome.started_at <= outcome.finished_at
    assert value(await run(pool, "pool.pid")) == os.getpid()
    assert value(await run(pool, "pool.echo", {"t": (1, b"x")})) == {"t": (1, b"x")}
    assert (pool.size, pool.busy, pool.pids) == (1, 0, [])


async def test_an_exception_is_a_failure_with_its_traceback(make_pool: MakePool) -> None:
    pool = await make_pool()

    outcome = await run(pool, "pool.fail", "boom")

    assert error_of(outcome) == ("ValueError", "boom")
    assert outcome.error is not None
    assert "pool_tasks_for_tests.py" in outcome.error.traceback
    assert "raise ValueError(message)" in outcome.error.traceback
    assert value(await run(pool, "pool.add", 1, 1)) == 2


async def test_unknown_and_async_tasks_and_bad_payloads_never_run(make_pool: MakePool) -> None:
    pool = await make_pool()

    assert error_of(await run(pool, "pool.nope"))[0] == "UnknownTask"
    with pytest.raises(TypeError, match="async"):
        await run(pool, "pool.async")
    corrupt = await pool.run("corrupt", "pool.add", Payload(codec=CODEC_MSGPACK, data=b"\xc1"))
    assert error_of(corrupt)[0] == "PayloadError"
    refused = await pool.run("pickled", "pool.add", Payload(codec=CODEC_PICKLE, data=b"not for you"))
    type_, message = error_of(refused)
    assert type_ == "PayloadError" and "pool.add" in message
    assert value(await run(pool, "pool.add", 1, 2)) == 3


async def test_no_more_tasks_run_at_once_than_the_pool_has_threads(make_pool: MakePool) -> None:
    pool = await make_pool(2)
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(pool.busy)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    outcomes = await asyncio.gather(*(run(pool, "pool.stamp", 0.2) for _ in range(6)))
    watcher.cancel()

    spans = sorted((start, end) for _, start, end in (value(outcome) for outcome in outcomes))
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2
    assert max(seen) == 2 and pool.busy == 0


async def test_runs_that_end_while_the_loop_is_busy_are_settled_together_with_one_wakeup(make_pool: MakePool) -> None:
    # Given four runs handed to four threads
    pool = await make_pool(4)
    deliveries: list[int] = []
    deliver = pool._deliver_ended

    def counted() -> None:
        deliveries.append(len(pool._ended))
        deliver()

    pool._deliver_ended = counted  # type: ignore[method-assign]
    runs = [asyncio.ensure_future(run(pool, "pool.add", i, 1)) for i in range(4)]
    await asyncio.sleep(0)  # each run is handed to its thread

    # When they all end while the loop is busy
    time.sleep(0.3)
    outcomes = await asyncio.gather(*runs)

    # Then one loop callback settled all four, each with its own outcome
    assert [value(outcome) for outcome in outcomes] == [1, 2, 3, 4]
    assert deliveries == [4]
    assert pool.busy == 0


async def test_a_run_whose_settling_fails_leaves_the_others_of_its_batch_settled(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two runs that end together, the first of which fails to settle (a callback of the runtime raised)
    pool = await make_pool(2)
    settle = pool._on_done
    broken: list[str] = []

    def on_done(run_: Any, outcome: Outcome) -> None:
        if value(outcome) == 2:  # the first run's (1 + 1), whichever thread ends first
            broken.append(run_.task_id)
            raise RuntimeError("settling failed")
        settle(run_, outcome)

    pool._on_done = on_done  # type: ignore[method-assign]
    first = asyncio.ensure_future(run(pool, "pool.add", 1, 1))
    second = asyncio.ensure_future(run(pool, "pool.add", 2, 2))
    await asyncio.sleep(0)
    time.sleep(0.3)  # both end before the loop settles them

    # When the loop settles the batch, then the second run still gets its outcome, and the failure is logged
    with caplog.at_level(logging.ERROR, logger="fastworker.worker.threads"):
        assert value(await asyncio.wait_for(second, 5)) == 4
    assert broken and "settling failed" in caplog.text
    first.cancel()


async def test_the_soft_time_limit_raises_in_the_task_which_can_clean_up(make_pool: MakePool) -> None:
    pool = await make_pool()

    began = time.monotonic()
    handled = await run(pool, "pool.soft_cleanup", 10, soft_timeout=0.2)
    unhandled = await run(pool, "pool.spin", 10, soft_timeout=0.2)
    elapsed = time.monotonic() - began

    assert value(handled) == "cleaned up after SoftTimeLimitExceeded"
    type_, message = error_of(unhandled)
    assert type_ == "SoftTimeLimitExceeded"
    assert "0.2 s" in message and "pool.spin" in message
    assert unhandled.error is not None and "pool_tasks_for_tests.py" in unhandled.error.traceback
    assert elapsed < 2.0
    assert value(await run(pool, "pool.add", 1, 2)) == 3


async def test_the_hard_time_limit_fails_the_run_at_once_and_its_thread_keeps_the_slot_until_it_returns(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await make_pool(1)
    returned: list[int] = []
    pool.on_abandoned_returned = lambda: returned.append(pool.abandoned)

    began, began_wall = time.monotonic(), time.time()
    outcome = await run(pool, "pool.sleep", 3.0, timeout=0.3)
    failed_after = time.monotonic() - began
    assert pool.busy == 1 and pool.abandoned == 1  # the sleep still holds the only thread
    assert returned == []
    next_one = await run(pool, "pool.stamp", 0)

    type_, message = error_of(outcome)
    assert type_ == "TimeLimitExceeded"
    assert "0.3 s" in message and "pool.sleep" in message
    assert 0.3 <= failed_after < 2.5  # at the limit, not when the sleep returned
    assert value(next_one)[1] - began_wall >= 2.95  # it started once the sleep returned, not before
    assert returned == [0]  # the runtime is told the slot is free again
    assert pool.busy == 0 and pool.abandoned == 0
    assert any(r.levelno == logging.WARNING and "hard time limit" in r.getMessage() for r in caplog.records)


async def test_the_hard_time_limit_interrupts_pure_python_code_at_once(make_pool: MakePool, tmp_path: Path) -> None:
    pool = await make_pool(1)
    marker = tmp_path / "stopped"

    outcome = await run(pool, "pool.spin", 30, str(marker), timeout=0.2)

    assert error_of(outcome)[0] == "TimeLimitExceeded"
    await until(lambda: pool.busy == 0)
    assert marker.read_text() == "TaskInterrupted True"
    assert value(await run(pool, "pool.add", 2, 2)) == 4


async def test_cancel_fails_a_running_task_at_once_and_interrupts_its_thread(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool = await make_pool(1)
    marker = tmp_path / "stopped"
    running = asyncio.create_task(pool.run("spinner", "pool.spin", encode_arguments([30, str(marker)], {})))
    await until(lambda: pool.busy == 1)

    assert pool.cancel("spinner") is True
    outcome = await asyncio.wait_for(running, 1)

    assert error_of(outcome)[0] == "TaskCancelled"
    assert pool.cancel("spinner") is False
    assert pool.cancel("never-submitted") is False
    await until(lambda: pool.busy == 0)
    assert marker.read_text() == "TaskCancelled True"  # a TaskInterrupted: one except clause serves both
    assert value(await run(pool, "pool.add", 3, 4)) == 7


async def test_cancel_of_a_task_waiting_for_a_thread_means_it_never_runs(make_pool: MakePool, tmp_path: Path) -> None:
    pool = await make_pool(1)
    marker = tmp_path / "second"
    first = asyncio.create_task(pool.run("first", "pool.spin", encode_arguments([30], {})))
    second = asyncio.create_task(pool.run("second", "pool.spin", encode_arguments([0, str(marker)], {})))
    await until(lambda: pool.busy == 1)
    await asyncio.sleep(0)  # second is waiting for the only thread now

    assert pool.cancel("second") is True
    assert error_of(await asyncio.wait_for(second, 5))[0] == "TaskCancelled"
    assert pool.cancel("first") is True
    assert error_of(await asyncio.wait_for(first, 5))[0] == "TaskCancelled"
    await until(lambda: pool.busy == 0)
    assert not marker.exists()


async def test_a_caller_that_stops_waiting_interrupts_the_task(make_pool: MakePool, tmp_path: Path) -> None:
    pool = await make_pool(1)
    marker = tmp_path / "stopped"

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run(pool, "pool.spin", 30, str(marker)), 0.2)

    await until(lambda: pool.busy == 0)
    assert marker.read_text() == "TaskInterrupted True"
    assert value(await run(pool, "pool.add", 1, 2)) == 3


async def test_progress_reaches_the_sink_while_the_task_runs(make_pool: MakePool) -> None:
    pool = await make_pool()
    reported: list[Progress] = []

    running = asyncio.create_task(run(pool, "pool.progress_then_sleep", 0.3, progress=reported.append))
    await until(lambda: bool(reported))

    assert not running.done()
    assert reported == [Progress(1, 2, "sleeping")]
    assert value(await running) == "slept"


async def test_close_fails_a_task_that_does_not_finish_in_time_and_refuses_new_tasks(make_pool: MakePool) -> None:
    pool = await make_pool(2)
    running = asyncio.create_task(run(pool, "pool.spin", 30))
    await until(lambda: pool.busy == 1)

    await pool.close(timeout=0.2)

    assert error_of(await running)[0] == "WorkerLost"
    await until(lambda: pool.busy == 0)
    with pytest.raises(RuntimeError, match="closed"):
        await run(pool, "pool.add", 1, 2)


def test_bad_arguments_are_refused(registry: TaskRegistry) -> None:
    with pytest.raises(ValueError):
        ThreadPool(0, registry)
    with pytest.raises(TypeError):
        ThreadPool(True, registry)
