"""The admin API against real processes: task listings, detail, purge, pause/resume, drain, history."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import Priority, TaskNotFound, TaskState


async def test_list_tasks_filters_pages_newest_first_and_task_detail_reads_arguments_and_timings(
    start_cp: Any, make_client: Any, wait_for_state: Any
) -> None:
    client = make_client(start_cp("--local-concurrency", "2"))
    ok_ids = [await client.delay("fwtests.add", n, 1) for n in range(30)]
    failed = await client.delay("fwtests.fail", "<script>boom</script>", priority="high")
    await client.wait_many(ok_ids, timeout=10)
    await wait_for_state(client, failed, TaskState.FAILURE)

    everything = await client.list_tasks(limit=500)
    assert everything.total == 31
    assert [t.id for t in everything.tasks] == [failed, *reversed(ok_ids)]  # newest first
    assert all(t.result is None for t in everything.tasks)  # listings carry no payloads

    page = await client.list_tasks(name="fwtests.add", offset=10, limit=5)
    assert page.total == 30
    assert [t.id for t in page.tasks] == list(reversed(ok_ids))[10:15]

    failures = await client.list_tasks(states=[TaskState.FAILURE])
    assert [t.id for t in failures.tasks] == [failed]
    assert failures.tasks[0].error is not None and failures.tasks[0].error.type == "ValueError"
    assert (await client.list_tasks(priority="high")).total == 1
    assert (await client.list_tasks(states=["pending", "running"])).total == 0
    assert (await client.list_tasks(worker="controlplane")).total == 31
    assert (await client.list_tasks(worker="nobody")).total == 0
    assert [t.id for t in (await client.list_tasks(search=ok_ids[7][:13])).tasks] == [ok_ids[7]]

    detail = await client.task_detail(failed)
    assert detail.args == ["<script>boom</script>"] and detail.kwargs == {}
    assert detail.info.state is TaskState.FAILURE and detail.info.priority is Priority.HIGH
    assert detail.info.error is not None and "fwtests: the raising line" in detail.info.error.traceback
    assert detail.wait_time is not None and detail.wait_time >= 0
    assert detail.run_time is not None and detail.run_time >= 0
    ok_detail = await client.task_detail(ok_ids[3])
    assert ok_detail.args == [3, 1] and ok_detail.info.result == 4

    with pytest.raises(TaskNotFound):
        await client.task_detail("no-such-task")
    with pytest.raises(ValueError, match="priority"):
        await client.list_tasks(priority="urgent")


async def test_a_paused_level_waits_while_others_run_and_runs_once_resumed(
    start_cp: Any, make_client: Any, wait_for_state: Any
) -> None:
    client = make_client(start_cp("--local-concurrency", "1"))
    assert await client.pause("low") is True
    assert [q["paused"] for q in await client.queues()] == [False, False, False, True]
    low = await client.delay("fwtests.add", 1, 1, priority="low")
    normal = await client.delay("fwtests.add", 2, 2)
    assert await client.result(normal, timeout=10) == 4
    await asyncio.sleep(0.3)  # a paused level must not run even with the slot idle
    assert (await client.status(low)).state is TaskState.PENDING
    batch = await client.events(0, timeout=0)
    assert any(e.kind == "queue_changed" and "low paused" in e.detail for e in batch.events)

    assert await client.resume("low") is False
    assert await client.result(low, timeout=10) == 2
    assert not any(q["paused"] for q in await client.queues())


async def test_purge_cancels_the_waiting_tasks_of_one_level_only(
    start_cp: Any, make_client: Any, tmp_path: Path, wait_for_state: Any
) -> None:
    client = make_client(start_cp("--local-concurrency", "1"))
    gate = tmp_path / "gate"
    blocker = await client.delay("fwtests.block_until", str(gate), "purge-blocker", priority="critical")
    await wait_for_state(client, blocker, TaskState.RUNNING)
    lows = [await client.delay("fwtests.add", n, 0, priority="low") for n in range(5)]
    high = await client.delay("fwtests.add", 9, 9, priority="high")

    assert await client.purge("low") == 5
    for task_id in lows:
        info = await client.status(task_id)
        assert info.state is TaskState.CANCELLED
        assert info.error is not None and "purged" in info.error.message
    assert (await client.status(blocker)).state is TaskState.RUNNING  # running tasks are not purged
    gate.touch()
    assert await client.result(high, timeout=10) == 18
    assert await client.purge("low") == 0
    stats = await client.stats()
    assert stats["cancelled"] == 5


async def test_stats_history_counts_successes_and_failures_per_second(
    start_cp: Any, make_client: Any, wait_for_state: Any
) -> None:
    client = make_client(start_cp("--local-concurrency", "2"))
    ids = [await client.delay("fwtests.add", n, n) for n in range(20)]
    bad = [await client.delay("fwtests.fail", "x") for _ in range(3)]
    await client.wait_many([*ids, *bad], timeout=10)
    history = (await client.stats())["history"]
    assert len(history) == 120
    seconds = [sample["at"] for sample in history]
    assert seconds == sorted(seconds) and seconds[-1] - seconds[0] == 119
    assert sum(s["succeeded"] for s in history) == 20
    assert sum(s["failed"] for s in history) == 3
    assert abs(seconds[-1] - time.time()) < 5


async def test_drain_worker_finishes_its_tasks_then_the_worker_leaves_and_exits_zero(
    start_cp_for_workers: Any, start_worker: Any, make_client: Any
) -> None:
    control_plane = start_cp_for_workers()
    worker = start_worker(control_plane, "drain-me", concurrency=2)
    client = make_client(control_plane)
    running = [await client.delay("fwtests_worker.sleep_for", 0.5) for _ in range(2)]
    deadline = time.monotonic() + 10
    while (await client.workers())[0]["in_flight"] < 2:
        assert time.monotonic() < deadline, "the tasks never reached the worker"
        await asyncio.sleep(0.02)

    assert await client.drain_worker("drain-me", timeout=10) is True
    assert (await client.workers())[0]["draining"] is True
    queued = await client.delay("fwtests_worker.sleep_for", 0.0)  # no worker may take it now

    assert await client.results(running, timeout=10) == ["drain-me", "drain-me"]
    assert worker.process.wait(timeout=15) == 0
    deadline = time.monotonic() + 5
    while await client.workers():
        assert time.monotonic() < deadline, "the drained worker is still listed"
        await asyncio.sleep(0.05)
    assert (await client.status(queued)).state is TaskState.PENDING
    batch = await client.events(0, timeout=0)
    assert any(e.kind == "worker_offline" and e.worker_id == "drain-me" for e in batch.events)
    assert await client.drain_worker("drain-me") is False
