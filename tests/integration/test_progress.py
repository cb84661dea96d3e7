"""Task progress end to end: ``report_progress`` in a task, ``TaskInfo.progress`` in a client.

The tasks (``fwtests_progress_tasks``) flood ``report_progress`` with one value, hold it until the
test opens their gate, then report a last one. They run on the control plane's own slots (a sync
task on a slot thread, a time-limited one in a child process, an async one on the loop) and on a
real ``fastworker-worker`` (sync in a child process, async on its loop). The client must see the
held value while the task runs, the last value once it finished, and only a handful of events for
the flood.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import Client, Progress, TaskInfo, TaskState
from fastworker.controlplane.testing import RunningControlPlane

PROGRESS_TASKS = ("fwtests_progress_tasks",)
#: The flood is FLOOD calls of one value; far fewer events than that may reach the stream.
MOST_EVENTS = 100


@pytest.fixture
def progress_cp(start_cp: Any) -> Any:
    """Start a control plane (running the progress tasks itself, or none for a worker fleet); stopped by pid."""

    def start(*, local: bool) -> RunningControlPlane:
        if local:
            control_plane: RunningControlPlane = start_cp(task_modules=PROGRESS_TASKS)
        else:
            control_plane = start_cp("--local-concurrency", "0", task_modules=())
        return control_plane

    return start


async def wait_for_progress(client: Client, task_id: str, expected: Progress, timeout: float = 30.0) -> TaskInfo:
    """Poll status until the task shows ``expected`` (bounded); returns that info."""
    deadline = time.monotonic() + timeout
    info = await client.status(task_id)
    while info.progress != expected:
        if info.state.is_final or time.monotonic() > deadline:
            pytest.fail(f"task {task_id} never showed {expected} (last: {info.state} {info.progress})")
        await asyncio.sleep(0.02)
        info = await client.status(task_id)
    return info


async def check_progress_of(client: Client, name: str, gate: Path) -> None:
    task_id = await client.delay(name, str(gate))
    running = await wait_for_progress(client, task_id, Progress(3, 10, "rendering"))
    assert running.state is TaskState.RUNNING
    assert running.progress is not None and running.progress.reported_at > 0
    gate.touch()
    final = await client.wait(task_id, timeout=30)
    assert final.state is TaskState.SUCCESS, final.error
    assert final.progress == Progress(10, 10, "done")  # the last value, kept once finished
    batch = await client.events(0, timeout=0, task_ids=[task_id])
    assert not batch.gap
    assert len(batch.events) <= MOST_EVENTS, f"{len(batch.events)} events for one task"
    # The stream carried the progress too: a RUNNING event with the held value.
    assert any(
        e.task is not None and e.task.state is TaskState.RUNNING and e.task.progress == Progress(3, 10, "rendering")
        for e in batch.events
    )
    assert batch.events[-1].task is not None and batch.events[-1].task.progress == Progress(10, 10, "done")


@pytest.mark.parametrize("name", ["fwprogress.sync", "fwprogress.limited", "fwprogress.async"])
async def test_progress_on_the_control_planes_own_slots_reaches_the_client(progress_cp, make_client, tmp_path, name):
    control_plane = progress_cp(local=True)
    client = make_client(control_plane)
    await check_progress_of(client, name, tmp_path / f"gate-{name}")


@pytest.mark.parametrize("name", ["fwprogress.sync", "fwprogress.async"])
async def test_progress_on_a_subworker_reaches_the_client(progress_cp, start_worker, make_client, tmp_path, name):
    control_plane = progress_cp(local=False)
    await asyncio.to_thread(start_worker, control_plane, "w-progress", task_modules=PROGRESS_TASKS, concurrency=2)
    client = make_client(control_plane)
    await check_progress_of(client, name, tmp_path / f"gate-{name}")
    assert (await client.status(await client.delay("fwprogress.unknown_total"))).worker in (None, "w-progress")


async def test_a_total_may_be_unknown_and_a_retry_starts_without_progress(
    progress_cp, start_worker, make_client, tmp_path
):
    control_plane = progress_cp(local=False)
    await asyncio.to_thread(start_worker, control_plane, "w-progress", task_modules=PROGRESS_TASKS)
    client = make_client(control_plane)
    counted = await client.wait(await client.delay("fwprogress.unknown_total"), timeout=30)
    assert counted.progress == Progress(5, None, "counting")
    retried = await client.wait(await client.delay("fwprogress.retried", str(tmp_path / "marker")), timeout=30)
    assert retried.state is TaskState.SUCCESS and retried.attempts == 2
    assert retried.progress is None  # the first attempt's 1/2 was cleared when it failed
