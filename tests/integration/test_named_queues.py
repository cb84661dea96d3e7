"""Named queues with real processes: each task runs only on a worker serving its queue.

Two subworkers serve different queues (a control plane that runs nothing itself); tasks go to the
"default" queue, to a task's own queue (``@task(queue="reports")``) and to a queue named per
submission. A queue nobody serves keeps its tasks waiting, visibly, until a worker serving it joins.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

from fastworker.client import TaskState

TASKS = ("fwtests_queue_tasks",)


def tagged(queue: str) -> str:
    """A task id that says which queue the test submitted it for (the task echoes it back)."""
    return f"{queue}:{uuid.uuid4()}"


async def test_each_task_runs_only_on_a_worker_of_its_queue_and_an_unserved_queue_waits_visibly(
    start_cp_for_workers: Any, start_worker: Any, make_client: Any
) -> None:
    control_plane = start_cp_for_workers()
    await asyncio.gather(
        asyncio.to_thread(start_worker, control_plane, "w-default", task_modules=TASKS, concurrency=2),
        asyncio.to_thread(
            start_worker, control_plane, "w-reports", "--queues", "reports,urgent", task_modules=TASKS, concurrency=2
        ),
    )
    client = make_client(control_plane)

    ids: dict[str, str] = {}  # task id -> the queue it must run from
    for _ in range(20):
        ids[await client.delay("fwtests_queue.plain", task_id=tagged("default"))] = "default"
        ids[await client.delay("fwtests_queue.report", task_id=tagged("reports"))] = "reports"
    for _ in range(10):
        tid = await client.delay("fwtests_queue.plain", task_id=tagged("urgent"), queue="urgent")
        ids[tid] = "urgent"
    waiting = [await client.delay("fwtests_queue.plain", task_id=tagged("nobody"), queue="nobody") for _ in range(5)]

    infos = await client.wait_many(list(ids), timeout=60)
    assert [info.state for info in infos] == [TaskState.SUCCESS] * len(ids)
    served_by = {"default": "w-default", "reports": "w-reports", "urgent": "w-reports"}
    wrong = [(info.id, info.result) for info in infos if info.result != [served_by[ids[info.id]], ids[info.id]]]
    assert wrong == []
    assert Counter(info.queue for info in infos) == {"default": 20, "reports": 20, "urgent": 10}

    # The unserved queue's tasks wait, and the queue listing says why
    statuses = [await client.status(tid) for tid in waiting]
    assert {(s.state, s.queue) for s in statuses} == {(TaskState.PENDING, "nobody")}
    listing = {(q["queue"], q["priority"]): q for q in await client.queues()}
    assert listing[("nobody", "normal")]["depth"] == 5
    assert listing[("nobody", "normal")]["servers"] == 0
    assert listing[("reports", "normal")]["servers"] == 1
    assert listing[("default", "normal")]["servers"] == 1  # w-default; the control plane runs nothing itself
    # and the worker listing says who serves what (Celery's "inspect active_queues")
    assert {w["worker_id"]: w["queues"] for w in await client.workers()} == {
        "w-default": ["default"],
        "w-reports": ["reports", "urgent"],
    }

    # A worker serving it joins: they run there
    await asyncio.to_thread(start_worker, control_plane, "w-nobody", "--queues", "nobody", task_modules=TASKS)
    done = await client.wait_many(waiting, timeout=30)
    assert [info.result for info in done] == [["w-nobody", "nobody"]] * 5


async def test_the_control_plane_s_own_slots_serve_its_queues_flag(start_cp: Any, make_client: Any) -> None:
    control_plane = start_cp("--queues", "fast,default")
    client = make_client(control_plane)

    fast = await client.delay("fwtests.add", 1, 2, queue="fast")
    other = await client.delay("fwtests.add", 3, 4, queue="elsewhere")

    assert (await client.wait_many([fast], timeout=30))[0].result == 3
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        assert (await client.status(other)).state is TaskState.PENDING
        await asyncio.sleep(0.05)
    listing = {(q["queue"], q["priority"]): q for q in await client.queues()}
    assert listing[("fast", "normal")]["servers"] == 1
    assert (listing[("elsewhere", "normal")]["depth"], listing[("elsewhere", "normal")]["servers"]) == (1, 0)
