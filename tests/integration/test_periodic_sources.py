"""Where a periodic schedule comes from, end to end: a control plane without the task, two subworkers that disagree.

Worker ``pa`` registers ``beat`` every 1 s, then worker ``pb`` the same name every 2 s: ``pa``'s
schedule is in force (the earliest registered) and ``pb`` is logged once; when ``pa`` leaves,
``pb``'s 2 s schedule applies; when ``pb`` leaves too, nothing is submitted any more.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fastworker.client import Client
from fastworker.controlplane import testing
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker

#: Bound on every wait for something to happen, in seconds.
BOUND = 30.0

MODULES = {
    "fwtests_beat_a": "every=1.0",
    "fwtests_beat_b": "every=2.0",
    "fwtests_unrelated": None,
}


def _write_modules(folder: Path) -> None:
    for module, schedule in MODULES.items():
        if schedule is None:
            body = '@task(name="unrelated")\ndef unrelated() -> str:\n    return "x"\n'
        else:
            body = f'@task(name="beat", {schedule})\ndef beat() -> str:\n    return {module!r}\n'
        (folder / f"{module}.py").write_text("from fastworker.client import task\n\n\n" + body)


@pytest.fixture
def start_module_worker(tmp_path: Path) -> Iterator[Callable[[RunningControlPlane, str, str], RunningWorker]]:
    """Start subworkers loading one module written in ``tmp_path/modules``; all are stopped by pid afterwards."""
    folder = tmp_path / "modules"
    folder.mkdir()
    _write_modules(folder)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)}
    started: list[RunningWorker] = []

    def start(control_plane: RunningControlPlane, worker_id: str, module: str) -> RunningWorker:
        worker = testing.start_worker(
            control_plane.discovery, task_modules=(module,), worker_id=worker_id, env=env, workdir=tmp_path
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    for worker in started:
        print(f"---- worker {worker.worker_id} ----\n{worker.log()}")


async def _runs(client: Client) -> list[float]:
    """When each run of ``beat`` was queued, oldest first."""
    page = await client.list_tasks(name="beat", limit=500)
    return sorted(task.queued_at or 0.0 for task in page.tasks)


async def _until_runs_after(client: Client, since: float, count: int) -> list[float]:
    """Poll (bounded) until ``count`` runs of ``beat`` were queued after ``since``; their queue times."""
    deadline = time.monotonic() + BOUND
    while True:
        runs = [at for at in await _runs(client) if at > since]
        if len(runs) >= count:
            return runs
        assert time.monotonic() < deadline, f"only {len(runs)} runs of beat after {since} within {BOUND:g} s"
        await asyncio.sleep(0.05)


async def _until_logged(control_plane: RunningControlPlane, text: str) -> None:
    deadline = time.monotonic() + BOUND
    while text not in control_plane.log():
        assert time.monotonic() < deadline, f"the control plane never logged {text!r}"
        await asyncio.sleep(0.05)


async def test_the_earliest_worker_schedule_applies_then_the_next_one_then_none(
    start_cp_for_workers: Callable[..., RunningControlPlane],
    start_module_worker: Callable[[RunningControlPlane, str, str], RunningWorker],
) -> None:
    control_plane = start_cp_for_workers()  # no task modules of its own
    first = start_module_worker(control_plane, "pa", "fwtests_beat_a")
    second = start_module_worker(control_plane, "pb", "fwtests_beat_b")
    start_module_worker(control_plane, "pc", "fwtests_unrelated")  # one more fleet change while both are there
    disagreement = "worker pb defines every 2 s, but every 1 s (worker pa) is in force"

    async with Client(control_plane.discovery) as client:
        registered = {t["name"]: t for t in await client.tasks()}
        assert registered["beat"]["every"] == 1.0  # the listing shows the definition in force

        # pa's schedule: runs every 1 s (pb's would be 2 s)
        runs = await _until_runs_after(client, 0.0, 4)
        assert statistics.median(b - a for a, b in zip(runs, runs[1:], strict=False)) < 1.5
        assert control_plane.log().count(disagreement) == 1

        # pa leaves: pb's schedule applies, after pa's last run
        first.stop()
        await _until_logged(control_plane, "periodic task 'beat': now every 2 s, from worker pb")
        handed_over = time.time()
        runs = await _until_runs_after(client, handed_over, 4)
        # Each run has its own slot, 2 s apart: three more slots take 6 s (pa's would take 3 s);
        # a late first run shortens that by its lateness only.
        assert runs[3] - runs[0] >= 4.5

        # pb leaves: nobody defines beat, nothing is submitted (no runs queued that nobody could run)
        second.stop()
        await _until_logged(control_plane, "no connected subworker defines it any more")
        gone = time.time()
        await asyncio.sleep(2.5)  # an observation window: pa's schedule would make 2 runs, pb's 1
        assert [at for at in await _runs(client) if at > gone] == []
    log = control_plane.log()
    assert log.count(disagreement) == 1
    assert "refused" not in log
