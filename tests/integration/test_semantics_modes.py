"""Issue 5's semantics, each on the control plane alone and with 2 subworkers (local execution off)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import Client, TaskState
from fastworker.controlplane.testing import RunningControlPlane, start_controlplane, start_worker

TESTS_DIR = Path(__file__).resolve().parent
MODULES = ("fwtests_semantics_tasks",)
MODES = ["controlplane", "workers"]


def _env() -> dict[str, str]:
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(part for part in (str(TESTS_DIR), existing) if part)}


@pytest.fixture(params=MODES)
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, RunningControlPlane]]:
    """A control plane running tasks itself (2 slots), or one with 2 subworkers (1 slot each) doing all the work."""
    mode = request.param
    workers = []
    if mode == "controlplane":
        cp = start_controlplane(
            task_modules=MODULES, extra_args=["--local-concurrency", "2"], env=_env(), workdir=tmp_path
        )
    else:
        cp = start_controlplane(extra_args=["--local-concurrency", "0"], env=_env(), workdir=tmp_path)
        workers = [
            start_worker(
                cp.discovery, task_modules=MODULES, env=_env(), workdir=tmp_path, worker_id=f"m{i}", concurrency=1
            )
            for i in range(2)
        ]
    try:
        yield mode, cp
    finally:
        for worker in workers:
            worker.stop()
        assert cp.stop() == 0


async def test_a_task_failing_twice_then_succeeding_ends_success_after_three_attempts_with_backoff_gaps(
    system: tuple[str, RunningControlPlane], tmp_path: Path
) -> None:
    _, cp = system
    async with Client(cp.discovery) as client:
        task_id = await client.delay("fwtests_sem.twice_then_ok", "tw", str(tmp_path))
        info = await client.wait(task_id, timeout=20)
    assert info.state is TaskState.SUCCESS
    assert info.attempts == 3
    starts = [float(line) for line in (tmp_path / "tw.times").read_text().split()]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # retry_backoff 0.2 doubled per retry, with at most 20% jitter: at least 0.16 s, then 0.32 s
    assert gaps[0] >= 0.16 and gaps[1] >= 0.32


async def test_a_sync_task_in_an_infinite_loop_is_killed_at_its_hard_limit_and_serving_goes_on(
    system: tuple[str, RunningControlPlane],
) -> None:
    _, cp = system
    async with Client(cp.discovery) as client:
        task_id = await client.delay("fwtests_sem.spin_forever")
        info = await client.wait(task_id, timeout=20)
        assert info.state is TaskState.FAILURE
        assert info.error is not None and info.error.type == "TimeLimitExceeded"
        assert info.finished_at is not None and info.started_at is not None
        assert info.finished_at - info.started_at < 5
        assert await client.submit("fwtests_sem.held", 0, timeout=20) == "finished"


async def test_a_two_second_countdown_runs_once_two_seconds_later(
    system: tuple[str, RunningControlPlane], tmp_path: Path
) -> None:
    _, cp = system
    async with Client(cp.discovery) as client:
        task_id = await client.delay("fwtests_sem.count", "cd", str(tmp_path), countdown=2)
        assert (await client.status(task_id)).state is TaskState.SCHEDULED
        info = await client.wait(task_id, timeout=20)
    assert info.state is TaskState.SUCCESS
    assert info.started_at is not None and info.queued_at is not None
    assert 1.9 <= info.started_at - info.queued_at <= 3.0
    assert (tmp_path / "cd.count").stat().st_size == 1


async def test_an_every_second_task_runs_five_plus_or_minus_one_times_in_five_seconds(
    system: tuple[str, RunningControlPlane],
) -> None:
    _, cp = system
    async with Client(cp.discovery) as client:
        window_start = time.time()
        await asyncio.sleep(5.0)
        window_end = time.time()
        batch = await client.events(after=0, timeout=0)
    runs = {
        e.task.id
        for e in batch.events
        if e.task is not None
        and e.task.name == "fwtests_sem.each_second"
        and e.task.queued_at is not None
        and window_start <= e.task.queued_at < window_end
    }
    assert 4 <= len(runs) <= 6  # one scheduler: 5±1, not one per worker (10)


async def test_cancel_of_queued_scheduled_and_running_tasks_leaves_each_cancelled_from_its_state(
    system: tuple[str, RunningControlPlane], tmp_path: Path
) -> None:
    _, cp = system
    async with Client(cp.discovery) as client:
        # Both slots busy with held tasks; then one queued and one scheduled task
        running = [await client.delay("fwtests_sem.held", 30) for _ in range(2)]
        for task_id in running:
            async with asyncio.timeout(20):
                while (await client.status(task_id)).state is not TaskState.RUNNING:
                    await asyncio.sleep(0.05)
        queued = await client.delay("fwtests_sem.count", "cq", str(tmp_path))
        scheduled = await client.delay("fwtests_sem.count", "cs", str(tmp_path), countdown=30)
        assert (await client.status(queued)).state is TaskState.PENDING
        assert (await client.status(scheduled)).state is TaskState.SCHEDULED

        results = {
            "queued": await client.cancel(queued),
            "scheduled": await client.cancel(scheduled),
            "running": await client.cancel(running[0]),
        }
        assert results["queued"].cancelled and results["queued"].previous_state is TaskState.PENDING
        assert results["scheduled"].cancelled and results["scheduled"].previous_state is TaskState.SCHEDULED
        assert results["running"].cancelled and results["running"].previous_state is TaskState.RUNNING
        for task_id in (queued, scheduled, running[0]):
            info = await client.wait(task_id, timeout=20)
            assert info.state is TaskState.CANCELLED, task_id
        # A cancelled task never runs; the other held task is unaffected and is cancelled to end the test
        assert not (tmp_path / "cq.count").exists() and not (tmp_path / "cs.count").exists()
        assert (await client.status(running[1])).state is TaskState.RUNNING
        assert (await client.cancel(running[1])).cancelled


async def test_retry_of_a_failed_task_runs_it_again_under_the_same_id(system: tuple[str, RunningControlPlane]) -> None:
    _, cp = system
    async with Client(cp.discovery) as client:
        task_id = await client.delay("fwtests_sem.always_fails")
        first: Any = await client.wait(task_id, timeout=20)
        assert first.state is TaskState.FAILURE and first.attempts == 1
        assert await client.retry(task_id) in (TaskState.PENDING, TaskState.RUNNING)
        second = await client.wait(task_id, timeout=20)
    assert second.state is TaskState.FAILURE
    assert second.attempts == 2


async def test_an_async_task_that_catches_its_cancellation_still_ends_cancelled(
    system: tuple[str, RunningControlPlane],
) -> None:
    _, cp = system
    async with Client(cp.discovery) as client:
        task_id = await client.delay("fwtests_sem.async_stubborn", 30)
        async with asyncio.timeout(20):
            while (await client.status(task_id)).state is not TaskState.RUNNING:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        cancelled_at = time.time()
        assert (await client.cancel(task_id)).cancelled
        info = await client.wait(task_id, timeout=20)
        assert info.state is TaskState.CANCELLED and info.result is None
        assert info.error is not None and "caught the cancellation" in info.error.message
        # It ran from its start, not from the cancel (the run's log line says how long it ran)
        assert info.started_at is not None and info.started_at <= cancelled_at - 0.25
