"""Cancel says what it did; a cancelled task never runs; retry re-runs it under the same id."""

from __future__ import annotations

import asyncio

import pytest

from fastworker.client import CancelResult, InvalidRequest, TaskState


async def test_cancelling_a_queued_task_stops_it_from_ever_running_and_retry_runs_it_again(
    start_cp, make_client, wait_for_state, tmp_path
):
    control_plane = start_cp("--local-concurrency", "1")
    client = make_client(control_plane)
    release = tmp_path / "release"
    blocker = await client.delay("fwtests.block_until", str(release), "cancel-blocker")
    await wait_for_state(client, blocker, TaskState.RUNNING)
    queued = await client.delay("fwtests.record", "cancelled-then-retried")
    assert (await client.status(queued)).state is TaskState.PENDING

    assert await client.cancel(queued) == CancelResult(cancelled=True, previous_state=TaskState.PENDING)
    info = await client.status(queued)
    assert info.state is TaskState.CANCELLED
    assert info.attempts == 0

    release.touch()
    assert await client.result(blocker, timeout=15) is True
    # Everything queued after the cancelled task has run, so it would have run by now too.
    after = await client.delay("fwtests.record", "after-the-cancel")
    assert await client.result(after, timeout=10) == "after-the-cancel"
    assert (await client.status(queued)).state is TaskState.CANCELLED
    assert await client.submit("fwtests.execution_counts", "cancelled-then-retried", timeout=10) == {}

    assert await client.cancel(blocker) == CancelResult(cancelled=False, previous_state=TaskState.SUCCESS)
    assert (await client.status(blocker)).state is TaskState.SUCCESS

    assert await client.retry(queued) in (TaskState.PENDING, TaskState.RUNNING, TaskState.SUCCESS)
    assert await client.result(queued, timeout=10) == "cancelled-then-retried"
    info = await client.status(queued)
    assert (info.id, info.state, info.attempts) == (queued, TaskState.SUCCESS, 1)
    assert await client.submit("fwtests.execution_counts", "cancelled-then-retried", timeout=10) == {
        "cancelled-then-retried": 1
    }


async def test_retrying_a_failed_task_runs_it_again_and_counts_both_attempts(start_cp, make_client):
    control_plane = start_cp()
    client = make_client(control_plane)
    task_id = await client.delay("fwtests.fail_first_time", "retry-after-failure")
    info = await client.wait(task_id, timeout=10)
    assert (info.state, info.attempts) == (TaskState.FAILURE, 1)
    assert info.error is not None and info.error.type == "RuntimeError"

    await client.retry(task_id)
    info = await client.wait(task_id, timeout=10)
    assert (info.id, info.state, info.attempts, info.result, info.error) == (
        task_id,
        TaskState.SUCCESS,
        2,
        "retry-after-failure",
        None,
    )


@pytest.mark.parametrize("name", ["fwtests.spin_then_mark", "fwtests.async_sleep_then_mark"])
async def test_cancelling_a_task_running_on_the_control_planes_own_slots_stops_it(
    start_cp, make_client, tmp_path, name
):
    # Given a sync (on a slot thread) or async (on the loop) task running on a control plane alone
    control_plane = start_cp("--local-concurrency", "2")
    client = make_client(control_plane)
    started, marker = tmp_path / "started", tmp_path / "marker"
    task_id = await client.delay(name, str(started), str(marker))
    async with asyncio.timeout(15):
        while not started.exists():
            await asyncio.sleep(0.02)

    # When it is cancelled
    result = await client.cancel(task_id)

    # Then the reply says it stopped, it ends CANCELLED, and its remaining code never ran
    assert result == CancelResult(cancelled=True, previous_state=TaskState.RUNNING)
    info = await client.status(task_id)
    assert info.state is TaskState.CANCELLED
    assert info.error is not None and info.error.type == "TaskCancelled"
    await asyncio.sleep(0.3)
    assert not marker.exists()
    # And the slot it ran on serves the next task
    assert await client.submit("fwtests.add", 2, 3, timeout=10) == 5


async def test_cancelling_a_local_sync_task_blocked_in_a_call_into_c_ends_it_at_once_and_its_code_never_resumes(
    start_cp, make_client, tmp_path
):
    # Given a sync task on a control-plane slot, inside time.sleep (no Python instruction runs
    # until it returns, so the interrupt waits for it)
    control_plane = start_cp("--local-concurrency", "2")
    client = make_client(control_plane)
    started, marker = tmp_path / "started", tmp_path / "marker"
    task_id = await client.delay("fwtests.block_in_c_then_mark", str(started), str(marker), 4.0)
    async with asyncio.timeout(15):
        while not started.exists():
            await asyncio.sleep(0.02)

    # When it is cancelled, the reply says so (after the grace for stopping) and it is CANCELLED
    assert await client.cancel(task_id) == CancelResult(cancelled=True, previous_state=TaskState.RUNNING)
    info = await client.status(task_id)
    assert info.state is TaskState.CANCELLED
    assert info.error is not None and info.error.type == "TaskCancelled"
    # And while its thread is still inside the call, the id cannot be run again
    with pytest.raises(InvalidRequest, match="has not returned yet"):
        await client.retry(task_id)

    # Once the call returned (a retry is accepted then), the rest of its code had not run
    async with asyncio.timeout(15):
        while True:
            try:
                await client.retry(task_id)
                break
            except InvalidRequest:
                await asyncio.sleep(0.1)
    assert not marker.exists()
    assert (await client.status(task_id)).state in (TaskState.PENDING, TaskState.RUNNING)
    assert await client.submit("fwtests.add", 2, 3, timeout=10) == 5


async def test_with_local_pool_processes_a_sync_task_that_kills_its_process_costs_a_child_not_the_control_plane(
    start_cp, make_client
):
    # Given a control plane alone, running its own sync tasks in child processes
    control_plane = start_cp("--local-concurrency", "1", "--local-pool", "processes")
    client = make_client(control_plane)

    # When a task ends the process it runs in
    task_id = await client.delay("fwtests.exit_process", 3)

    # Then the task fails as a crash, and the control plane goes on serving (a child replaced)
    info = await client.wait(task_id, timeout=20)
    assert info.state is TaskState.FAILURE
    assert info.error is not None and info.error.type == "WorkerCrashed"
    assert control_plane.process.poll() is None
    assert await client.submit("fwtests.add", 2, 3, timeout=20) == 5
