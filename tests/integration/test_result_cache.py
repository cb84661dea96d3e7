"""The result cache forgets finished tasks by count (least recently used first) and by age."""

from __future__ import annotations

import asyncio

import pytest

from fastworker.client import TaskNotFound, TaskState


async def test_only_the_last_five_of_ten_finished_tasks_stay_readable_with_a_cache_of_five(start_cp, make_client):
    control_plane = start_cp("--result-cache-size", "5")
    client = make_client(control_plane)
    ids = []
    for i in range(10):
        task_id = await client.delay("fwtests.add", i, 100)
        assert await client.result(task_id, timeout=10) == i + 100
        ids.append(task_id)

    for task_id in ids[:5]:
        with pytest.raises(TaskNotFound) as caught:
            await client.status(task_id)
        assert caught.value.task_id == task_id
    with pytest.raises(TaskNotFound):
        await client.result(ids[0], timeout=5)
    for i, task_id in enumerate(ids[5:], start=5):
        info = await client.status(task_id)
        assert (info.state, info.result) == (TaskState.SUCCESS, i + 100)


async def test_a_finished_task_is_readable_at_once_and_forgotten_after_its_ttl(start_cp, make_client):
    control_plane = start_cp("--result-ttl", "1")
    client = make_client(control_plane)
    task_id = await client.delay("fwtests.add", 1, 2)
    assert await client.result(task_id, timeout=10) == 3

    info = await client.status(task_id)
    assert (info.state, info.result) == (TaskState.SUCCESS, 3)

    await asyncio.sleep(1.5)
    with pytest.raises(TaskNotFound):
        await client.status(task_id)
