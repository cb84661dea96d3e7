"""Prefetch: a worker whose tasks are short holds a few beyond its slots; they show PENDING until they
start there, can be cancelled while held, and go back to the queue without counting an attempt when
the worker is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta
from typing import Any

from fastworker.client import TaskState


async def held_on(client: Any, task_ids: list[str], worker_id: str, timeout: float = 10.0) -> None:
    """Wait until every task is dispatched to the worker but not started there (PENDING, worker set)."""
    deadline = time.monotonic() + timeout
    while True:
        infos = [await client.status(t) for t in task_ids]
        if all(i.state is TaskState.PENDING and i.worker == worker_id for i in infos):
            return
        assert time.monotonic() < deadline, f"not all held by {worker_id}: {infos}"
        await asyncio.sleep(0.02)


async def warm_up(client: Any, count: int = 40) -> None:
    """Enough short tasks that the worker's recent run times allow prefetching."""
    ids = await client.delay_many([("fwtests_worker.sleep_for", (0,), {}) for _ in range(count)])
    await client.wait_many(ids, timeout=20)


async def test_prefetched_tasks_show_pending_then_run_and_can_be_cancelled_while_held(
    start_cp_for_workers: Any, start_worker: Any, make_client: Any
) -> None:
    control_plane = start_cp_for_workers()
    start_worker(control_plane, "pre", "--prefetch", "4", concurrency=1)
    client = make_client(control_plane)
    await warm_up(client)

    blocker = await client.delay("fwtests_worker.sleep_for", 1.5)
    held = [await client.delay("fwtests_worker.sleep_for", 0) for _ in range(3)]
    await held_on(client, held, "pre")
    assert (await client.status(blocker)).state is TaskState.RUNNING
    assert (await client.stats())["running"] == 1  # held tasks are not counted as running

    cancelled = await client.cancel(held[0])
    assert cancelled.cancelled and cancelled.previous_state is TaskState.PENDING
    infos = await client.wait_many([blocker, *held], timeout=20)
    assert [i.state for i in infos] == [TaskState.SUCCESS, TaskState.CANCELLED, TaskState.SUCCESS, TaskState.SUCCESS]
    assert all(i.attempts == 1 for i in infos[2:])


async def test_tasks_held_by_a_lost_worker_run_elsewhere_without_spending_an_attempt(
    start_cp_for_workers: Any, start_worker: Any, make_client: Any
) -> None:
    control_plane = start_cp_for_workers()
    doomed = start_worker(control_plane, "doomed", "--prefetch", "4", concurrency=1)
    client = make_client(control_plane)
    await warm_up(client)

    blocker = await client.delay("fwtests_worker.sleep_for", 30.0)
    held = [await client.delay("fwtests_worker.sleep_no_retry", 0) for _ in range(3)]  # retries=0
    await held_on(client, held, "doomed")
    os.kill(doomed.pid, signal.SIGKILL)
    start_worker(control_plane, "survivor", concurrency=2)

    infos = await client.wait_many(held, timeout=20)
    assert [i.state for i in infos] == [TaskState.SUCCESS] * 3  # never started: not a WorkerLost failure
    assert [i.result for i in infos] == ["survivor"] * 3 and all(i.attempts == 1 for i in infos)
    lost = await client.wait(blocker, timeout=20)  # it had started: a real loss, failed as WorkerLost (no retries)
    assert lost.state is TaskState.FAILURE and lost.error is not None and lost.error.type == "WorkerLost"


async def test_a_prefetched_task_whose_expiry_passes_ends_expired_and_never_starts(
    start_cp_for_workers: Any, start_worker: Any, make_client: Any, tmp_path: Any
) -> None:
    # Held in the worker's prefetch queue behind a long task, it ran after its expiry (SUCCESS)
    control_plane = start_cp_for_workers()
    start_worker(control_plane, "pre", "--prefetch", "4", concurrency=1)
    client = make_client(control_plane)
    await warm_up(client)

    blocker = await client.delay("fwtests_worker.sleep_for", 2.0)
    held = [
        await client.delay("fwtests_worker.marked", f"late{i}", 0.0, str(tmp_path), expires=timedelta(seconds=1))
        for i in range(2)
    ]
    await held_on(client, held, "pre")

    infos = await client.wait_many(held, timeout=20)
    assert [(i.state, i.error.type if i.error else None) for i in infos] == [(TaskState.CANCELLED, "Expired")] * 2
    assert all(i.started_at is None and i.attempts == 0 for i in infos)
    assert (await client.wait(blocker, timeout=20)).state is TaskState.SUCCESS
    await asyncio.sleep(0.5)  # (a run that started anyway would have left its mark by now)
    assert not list(tmp_path.glob("late*"))
