"""Task semantics end to end: retries, Retry(delay), countdown, cancel of scheduled tasks, periodic runs, events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastworker.client import Client, ControlPlaneUnavailable, TaskState
from fastworker.controlplane.testing import start_controlplane, start_worker

TESTS_DIR = Path(__file__).resolve().parent
MODULES = ("fwtests_semantics_tasks",)


def _env() -> dict[str, str]:
    import os

    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(part for part in (str(TESTS_DIR), existing) if part)}


def _start_cp(tmp_path: Path, *args: str) -> Any:
    return start_controlplane(task_modules=MODULES, extra_args=list(args), env=_env(), workdir=tmp_path)


async def test_a_failing_task_is_retried_with_backoff_on_a_worker_until_it_succeeds(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path, "--local-concurrency", "0")
    worker = start_worker(cp.discovery, task_modules=MODULES, env=_env(), workdir=tmp_path, worker_id="sem-w1")
    try:
        async with Client(cp.discovery) as client:
            task_id = await client.delay("fwtests_sem.flaky", "k1", str(tmp_path), 2)
            states = [info.state async for info in client.watch(task_id, timeout=15)]
            info = await client.status(task_id)
        assert info.state is TaskState.SUCCESS
        assert info.result == 3
        assert info.attempts == 3
        assert info.worker == "sem-w1"
        assert TaskState.RETRYING in states
        assert (tmp_path / "k1.count").stat().st_size == 3
    finally:
        worker.stop()
        assert cp.stop() == 0


async def test_retry_on_a_class_retries_its_subclass_raised_in_a_worker_s_child_process(tmp_path: Path) -> None:
    # The error's base classes travel from the child process through the worker to the control plane
    cp = _start_cp(tmp_path, "--local-concurrency", "0")
    worker = start_worker(cp.discovery, task_modules=MODULES, env=_env(), workdir=tmp_path, worker_id="sem-w2")
    try:
        async with Client(cp.discovery) as client:
            value = await client.submit("fwtests_sem.reset_then_ok", "k9", str(tmp_path), timeout=15)
            assert value == 2
    finally:
        worker.stop()
        assert cp.stop() == 0


async def test_a_task_raising_retry_runs_again_after_its_delay(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path)
    try:
        async with Client(cp.discovery) as client:
            started = time.monotonic()
            value = await client.submit("fwtests_sem.asks_again", "k2", str(tmp_path), timeout=10)
            elapsed = time.monotonic() - started
            assert value == 2
            assert elapsed >= 0.1  # the asked-for delay was honoured (a lower bound, not a speed check)
    finally:
        assert cp.stop() == 0


async def test_a_countdown_task_is_scheduled_then_runs_once_when_due(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path)
    try:
        async with Client(cp.discovery) as client:
            task_id = await client.delay("fwtests_sem.count", "k3", str(tmp_path), countdown=0.5)
            assert (await client.status(task_id)).state is TaskState.SCHEDULED
            info = await client.wait(task_id, timeout=10)
        assert info.state is TaskState.SUCCESS
        assert info.started_at is not None and info.queued_at is not None
        assert info.started_at - info.queued_at >= 0.45
        assert (tmp_path / "k3.count").stat().st_size == 1
    finally:
        assert cp.stop() == 0


async def test_a_cancelled_scheduled_task_never_runs(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path)
    try:
        async with Client(cp.discovery) as client:
            task_id = await client.delay("fwtests_sem.count", "k4", str(tmp_path), countdown=0.3)
            result = await client.cancel(task_id)
            assert result.cancelled and result.previous_state is TaskState.SCHEDULED
            await asyncio.sleep(0.6)
            assert (await client.status(task_id)).state is TaskState.CANCELLED
        assert not (tmp_path / "k4.count").exists()
    finally:
        assert cp.stop() == 0


async def test_a_periodic_task_runs_on_schedule_once_per_slot_even_with_two_workers_that_have_it(
    tmp_path: Path,
) -> None:
    cp = _start_cp(tmp_path, "--local-concurrency", "0")
    workers = [
        start_worker(cp.discovery, task_modules=MODULES, env=_env(), workdir=tmp_path, worker_id=f"sem-p{i}")
        for i in range(2)
    ]
    try:
        async with Client(cp.discovery) as client:
            deadline = time.monotonic() + 30
            while True:  # until 3 runs finished (bounded)
                batch = await client.events(after=0, timeout=0)
                now = time.time()
                runs = [e for e in batch.events if e.task is not None and e.task.name == "fwtests_sem.tick"]
                finished = {e.task.id for e in runs if e.task.state is TaskState.SUCCESS}
                if len(finished) >= 3:
                    break
                assert time.monotonic() < deadline, f"only {len(finished)} runs of the 1 s periodic task in 30 s"
                await asyncio.sleep(0.1)
        first_queued = min(e.task.queued_at or now for e in runs)
        # One scheduler: at most one run per 1 s slot since the first (plus the slot in progress),
        # never one per worker (two schedulers would double it)
        assert len(finished) <= int(now - first_queued) + 2
        assert len({e.task.worker for e in runs if e.task.state is TaskState.SUCCESS}) >= 1
        # Each run is queued a little before its slot: SCHEDULED first, as a countdown is
        first_state: dict[str, TaskState] = {}
        for event in runs:
            first_state.setdefault(event.task.id, event.task.state)
        assert {first_state[task_id] for task_id in finished} == {TaskState.SCHEDULED}
    finally:
        for worker in workers:
            worker.stop()
        assert cp.stop() == 0


async def test_the_event_stream_reports_workers_and_state_changes_and_on_complete_fires(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path)
    try:
        async with Client(cp.discovery) as client:
            after = (await client.events(after=0, timeout=0)).last_sequence
            worker = start_worker(cp.discovery, task_modules=MODULES, env=_env(), workdir=tmp_path, worker_id="sem-e1")
            try:
                online = await client.events(after=after, timeout=5)
                assert any(e.kind == "worker_online" and e.worker_id == "sem-e1" for e in online.events)
                finished: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                task_id = await client.delay("fwtests_sem.slow", 0.3)
                client.on_complete(task_id, lambda info: finished.set_result(info))
                states = [info.state async for info in client.watch(task_id, timeout=10)]
                info = await asyncio.wait_for(finished, 10)
            finally:
                worker.stop()
        assert states[-1] is TaskState.SUCCESS
        assert TaskState.RUNNING in states or TaskState.PENDING in states
        assert info.state is TaskState.SUCCESS and info.result == "done"
    finally:
        assert cp.stop() == 0


async def test_following_the_event_stream_by_next_after_in_small_batches_misses_no_event(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path)
    try:
        async with Client(cp.discovery) as client:
            ids = await client.delay_many([("fwtests_sem.slow", (0.0,), {}) for _ in range(15)])
            await client.wait_many(ids, timeout=20)
            newest = (await client.events(after=0, timeout=0, limit=1)).last_sequence
            seen: list[int] = []
            after = 0
            while after < newest:
                batch = await client.events(after=after, timeout=0, limit=7)
                assert not batch.gap
                seen += [event.sequence for event in batch.events]
                after = batch.next_after
        # Every event, once, in order: last_sequence (the newest) would have skipped all but the first 7
        assert seen == list(range(1, newest + 1)) and newest > 3 * 7
    finally:
        assert cp.stop() == 0


async def test_a_soft_time_limit_raises_inside_a_sync_task_on_a_worker_which_can_clean_up(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path, "--local-concurrency", "0")
    worker = start_worker(cp.discovery, task_modules=MODULES, env=_env(), workdir=tmp_path, worker_id="sem-s1")
    try:
        async with Client(cp.discovery) as client:
            task_id = await client.delay("fwtests_sem.soft", str(tmp_path))
            info = await client.wait(task_id, timeout=10)
        assert info.state is TaskState.FAILURE
        assert info.error is not None and info.error.type == "SoftTimeLimitExceeded"
        # worded as every pool words it (a thread's, an async task's): the task and its limit
        assert info.error.message == "task 'fwtests_sem.soft' exceeded its soft time limit of 0.3 s"
        assert (tmp_path / "soft.cleaned").read_text() == "yes"
    finally:
        worker.stop()
        assert cp.stop() == 0


async def test_a_hard_time_limit_stops_an_async_task_run_by_the_control_plane(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path)
    try:
        async with Client(cp.discovery) as client:
            task_id = await client.delay("fwtests_sem.async_hang")
            info = await client.wait(task_id, timeout=10)
        assert info.state is TaskState.FAILURE
        assert info.error is not None and info.error.type == "TimeLimitExceeded"
        assert "hard time limit of 0.3 s" in info.error.message
    finally:
        assert cp.stop() == 0


async def test_cancelling_running_tasks_on_a_worker_stops_them_and_they_end_cancelled(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path, "--local-concurrency", "0")
    worker = start_worker(
        cp.discovery, task_modules=MODULES, env=_env(), workdir=tmp_path, worker_id="sem-c1", concurrency=2
    )
    try:
        async with Client(cp.discovery) as client:
            sync_id = await client.delay("fwtests_sem.long", 20)
            async_id = await client.delay("fwtests_sem.async_long", 20)
            for task_id in (sync_id, async_id):
                async with asyncio.timeout(10):
                    while (await client.status(task_id)).state is not TaskState.RUNNING:
                        await asyncio.sleep(0.05)
            started = time.monotonic()
            for task_id in (sync_id, async_id):
                result = await client.cancel(task_id)
                assert result.cancelled and result.previous_state is TaskState.RUNNING
                # The reply waits for the worker to stop it: a status read right after says so.
                assert (await client.status(task_id)).state is TaskState.CANCELLED
            infos = [await client.wait(task_id, timeout=10) for task_id in (sync_id, async_id)]
            assert time.monotonic() - started < 10
            assert [info.state for info in infos] == [TaskState.CANCELLED, TaskState.CANCELLED]
            # The worker lives on and its slots were freed
            assert await client.submit("fwtests_sem.long", 0, timeout=10) == "finished"
    finally:
        worker.stop()
        assert cp.stop() == 0


async def test_a_task_not_started_before_it_expires_ends_cancelled(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path, "--local-concurrency", "1")
    try:
        async with Client(cp.discovery) as client:
            blocker = await client.delay("fwtests_sem.slow", 0.6)
            doomed = await client.delay("fwtests_sem.count", "k9", str(tmp_path), expires=time.time() + 0.2)
            info = await client.wait(doomed, timeout=10)
            assert (await client.wait(blocker, timeout=10)).state is TaskState.SUCCESS
        assert info.state is TaskState.CANCELLED
        assert info.error is not None and info.error.type == "Expired"
        assert not (tmp_path / "k9.count").exists()
    finally:
        assert cp.stop() == 0


async def test_a_closed_client_refuses_further_calls_instead_of_waiting_forever(tmp_path: Path) -> None:
    cp = _start_cp(tmp_path)
    try:
        client = Client(cp.discovery)
        task_id = await client.delay("fwtests_sem.slow", 0.01)
        await client.aclose()
        for call in (client.result(task_id), client.wait(task_id), client.status(task_id)):
            try:
                async with asyncio.timeout(5):
                    await call
            except ControlPlaneUnavailable:
                continue
            raise AssertionError("a call on a closed client answered")
    finally:
        assert cp.stop() == 0
