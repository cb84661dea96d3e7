"""Frames between the control plane and a subworker never outgrow what the reader takes: many large
results or arguments travel over several frames, and a result that fits no frame fails its task."""

from __future__ import annotations

from typing import Any

from fastworker.client import TaskState

MIB = 1024 * 1024


async def test_results_larger_together_than_a_frame_arrive_over_several_frames(
    start_cp_for_workers: Any, start_worker: Any, make_client: Any
) -> None:
    # Eight results of 6 MB finished together made one 48 MB report: refused again and again, the
    # worker sent nothing else for ever (its tasks RUNNING, the rest of the queue stuck behind it)
    control_plane = start_cp_for_workers()
    start_worker(control_plane, "big", concurrency=8)
    client = make_client(control_plane)
    ids = [await client.delay("fwtests_worker.blob", 6_000_000) for _ in range(8)]
    infos = await client.wait_many(ids, timeout=120)
    assert [(i.state, len(i.result)) for i in infos] == [(TaskState.SUCCESS, 6_000_000)] * 8
    assert await client.submit("fwtests_worker.length", b"x", timeout=30) == 1  # and the worker goes on


async def test_arguments_larger_together_than_a_frame_go_to_the_worker_over_several_frames(
    start_cp_for_workers: Any, start_worker: Any, make_client: Any
) -> None:
    # Four tasks with 6 MB of arguments each, queued together for a worker with four free slots:
    # one 24 MB dispatch frame could not be sent
    control_plane = start_cp_for_workers()
    start_worker(control_plane, "wide", concurrency=4)
    client = make_client(control_plane)
    ids = await client.delay_many([("fwtests_worker.length", (b"a" * 6_000_000,)) for _ in range(4)])
    infos = await client.wait_many(ids, timeout=120)
    assert [(i.state, i.result) for i in infos] == [(TaskState.SUCCESS, 6_000_000)] * 4


async def test_a_result_too_large_for_the_control_planes_frames_fails_its_task_and_the_worker_goes_on(
    start_cp_for_workers: Any, start_worker: Any, make_client: Any
) -> None:
    # A control plane reading frames of 2 MiB at most: a 2.1 MB result could never reach it (the
    # worker retried its report for ever); now that task fails saying why, and the worker goes on
    control_plane = start_cp_for_workers("--max-frame-size", str(2 * MIB))
    start_worker(control_plane, "small", concurrency=2)
    client = make_client(control_plane)
    too_large = await client.delay("fwtests_worker.blob", 2_100_000)
    fitting = await client.delay("fwtests_worker.blob", 1_000_000)
    infos = await client.wait_many([too_large, fitting], timeout=60)
    assert infos[0].state is TaskState.FAILURE and infos[0].error is not None
    assert infos[0].error.type == "PayloadError" and "does not fit in a frame" in infos[0].error.message
    assert infos[1].state is TaskState.SUCCESS and len(infos[1].result) == 1_000_000
    assert await client.submit("fwtests_worker.length", b"xy", timeout=30) == 2
