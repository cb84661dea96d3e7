"""Dispatch order: strict priority between levels, first-in first-out within one level."""

from __future__ import annotations

import asyncio

from fastworker.client import Priority, TaskState

LOW_TASKS = 50
NORMAL_TASKS = 10


async def test_a_critical_task_queued_after_fifty_low_ones_starts_before_all_of_them(
    start_cp, make_client, wait_for_state, tmp_path
):
    control_plane = start_cp("--local-concurrency", "1")
    client = make_client(control_plane)
    release = tmp_path / "release"
    blocker = await client.delay("fwtests.block_until", str(release), "blocker")
    await wait_for_state(client, blocker, TaskState.RUNNING)

    low = await asyncio.gather(*(client.delay("fwtests.record", f"low-{i}", priority="low") for i in range(LOW_TASKS)))
    critical = await client.delay("fwtests.record", "critical", priority=Priority.CRITICAL)
    release.touch()

    assert await client.result(blocker, timeout=15) is True
    await client.wait_many([*low, critical], timeout=15)
    critical_info = await client.status(critical)
    low_infos = await asyncio.gather(*(client.status(task_id) for task_id in low))

    assert critical_info.state is TaskState.SUCCESS
    assert critical_info.priority is Priority.CRITICAL
    assert all(info.state is TaskState.SUCCESS and info.priority is Priority.LOW for info in low_infos)
    assert critical_info.started_at is not None
    late = [info.id for info in low_infos if info.started_at is None or info.started_at <= critical_info.started_at]
    assert late == [], "low tasks started no later than the critical one"


async def test_tasks_of_one_priority_start_in_the_order_they_were_submitted(
    start_cp, make_client, wait_for_state, tmp_path
):
    control_plane = start_cp("--local-concurrency", "1")
    client = make_client(control_plane)
    release = tmp_path / "release"
    blocker = await client.delay("fwtests.block_until", str(release), "blocker")
    await wait_for_state(client, blocker, TaskState.RUNNING)

    submitted = [await client.delay("fwtests.record", f"normal-{i}") for i in range(NORMAL_TASKS)]
    release.touch()

    await client.wait_many([blocker, *submitted], timeout=15)
    infos = [await client.status(task_id) for task_id in submitted]
    assert all(info.state is TaskState.SUCCESS for info in infos)
    started = [info.started_at for info in infos]
    assert None not in started
    by_start = [info.id for info in sorted(infos, key=lambda info: info.started_at or 0.0)]
    assert by_start == submitted
    assert len(set(started)) == NORMAL_TASKS
