"""Many tasks at once: every one returns its own result, none is lost, none runs twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from fastworker.client import SyncClient, TaskState

SUBMITTER = Path(__file__).resolve().parent / "fwtests_submitter.py"
TASKS_PER_CLIENT = 10_000
CLIENT_PROCESSES = 4


async def test_ten_thousand_concurrent_delays_from_one_client_all_return_their_own_result_exactly_once(
    start_cp, make_client
):
    control_plane = start_cp("--result-cache-size", "100000")
    client = make_client(control_plane)
    arguments = list(range(TASKS_PER_CLIENT))

    ids = await asyncio.gather(*(client.delay("fwtests.square", n) for n in arguments))
    infos = await client.wait_many(ids, timeout=60)

    assert len(set(ids)) == TASKS_PER_CLIENT
    lost = [(n, info.state) for n, info in zip(arguments, infos, strict=True) if info.state is not TaskState.SUCCESS]
    wrong = [
        (n, info.result)
        for n, info in zip(arguments, infos, strict=True)
        if info.state is TaskState.SUCCESS and info.result != n * n
    ]
    assert [info.id for info in infos] == ids
    assert lost == []
    assert wrong == []
    assert await client.results(ids[:100], timeout=10) == [n * n for n in arguments[:100]]

    counts = await client.submit("fwtests.execution_counts", "square:", timeout=30)
    assert counts == {f"square:{n}": 1 for n in arguments}


def test_four_client_processes_submitting_ten_thousand_each_get_their_own_results_and_run_each_task_once(
    start_cp,
):
    control_plane = start_cp("--result-cache-size", "100000")
    processes = [
        subprocess.Popen(
            [sys.executable, str(SUBMITTER), control_plane.discovery, str(i * TASKS_PER_CLIENT), str(TASKS_PER_CLIENT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")},
        )
        for i in range(CLIENT_PROCESSES)
    ]
    reports = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=90)
            assert process.returncode == 0, err.decode(errors="replace")
            reports.append(json.loads(out))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    expected = {
        "submitted": TASKS_PER_CLIENT,
        "distinct_ids": TASKS_PER_CLIENT,
        "correct": TASKS_PER_CLIENT,
        "wrong": 0,
        "lost": 0,
    }
    assert reports == [expected] * CLIENT_PROCESSES

    with SyncClient(control_plane.discovery) as client:
        counts = client.submit("fwtests.execution_counts", "square:", timeout=30)
    assert len(counts) == CLIENT_PROCESSES * TASKS_PER_CLIENT
    assert counts == {f"square:{n}": 1 for n in range(CLIENT_PROCESSES * TASKS_PER_CLIENT)}
