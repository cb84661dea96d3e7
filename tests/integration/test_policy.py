"""One rule for a task's retries and time limits, whichever way it runs.

The control plane loads ``fwtests_policy_cp`` (retries=2; a 1 s time limit); a subworker loads
``fwtests_policy_worker`` (no retries; no limit) under the same names. The documented rule
(docs/retries-and-time-limits.md, "Which definition wins"): the submission's values, else the
control plane's definition, else the fleet's. So every path below ends the same way: three
attempts, and ``TimeLimitExceeded`` after about one second.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import Client, TaskInfo, TaskState
from fastworker.controlplane.eager import EagerClient
from fastworker.controlplane.testing import RunningControlPlane, start_controlplane


def child_env() -> dict[str, str]:
    """This directory first on the children's PYTHONPATH, so that they import the task modules."""
    existing = os.environ.get("PYTHONPATH", "")
    here = str(Path(__file__).resolve().parent)
    return {"PYTHONPATH": os.pathsep.join(part for part in (here, existing) if part)}


FAILS = "fwtests_policy.always_fails"
SLOW = "fwtests_policy.too_slow"
CP_TASKS = ("fwtests_policy_cp",)
WORKER_TASKS = ("fwtests_policy_worker",)
BOUND = 30.0


def assert_the_control_planes_rule(fails: TaskInfo, slow: TaskInfo) -> None:
    assert fails.state is TaskState.FAILURE
    assert fails.attempts == 3, "retries=2 from the control plane's definition, not the worker's 0"
    assert fails.error is not None and fails.error.type == "ValueError"
    assert slow.state is TaskState.FAILURE
    assert slow.error is not None and slow.error.type == "TimeLimitExceeded", slow.error
    assert slow.finished_at - slow.started_at < 20, "stopped by the 1 s limit, not after its 60 s sleep"


async def run_both(client: Any) -> tuple[TaskInfo, TaskInfo]:
    fails = await client.delay(FAILS)
    slow = await client.delay(SLOW)
    return await finished(client, fails), await finished(client, slow)


async def finished(client: Any, task_id: str) -> TaskInfo:
    """The task's info once it is final (bounded)."""
    async with asyncio.timeout(BOUND):
        info = await client.status(task_id)
        while not info.state.is_final:
            await asyncio.sleep(0.05)
            info = await client.status(task_id)
    return info


def launch(tmp_path: Path, *extra: str) -> RunningControlPlane:
    return start_controlplane(task_modules=CP_TASKS, extra_args=list(extra), env=child_env(), workdir=tmp_path)


@pytest.fixture
def processes() -> Any:
    started: list[Any] = []
    yield started
    for process in started:
        process.stop()
    for process in started:
        print(process.log())


async def test_run_on_the_control_planes_own_slots(tmp_path: Path, processes: list[Any]) -> None:
    control_plane = launch(tmp_path)
    processes.append(control_plane)
    async with Client(control_plane.discovery) as client:
        fails, slow = await run_both(client)
    assert fails.worker == slow.worker == "controlplane"
    assert_the_control_planes_rule(fails, slow)


async def test_run_on_a_subworker_with_other_definitions(
    tmp_path: Path, processes: list[Any], start_worker: Any
) -> None:
    control_plane = launch(tmp_path, "--local-concurrency", "0")
    processes.append(control_plane)
    start_worker(control_plane, "w-policy", task_modules=WORKER_TASKS)
    async with Client(control_plane.discovery) as client:
        fails, slow = await run_both(client)
    assert fails.worker == slow.worker == "w-policy"
    assert_the_control_planes_rule(fails, slow)


async def test_run_after_a_journal_replay(tmp_path: Path, processes: list[Any], start_worker: Any) -> None:
    # Accepted by a control plane that cannot run them, which then dies without a goodbye
    journal = tmp_path / "policy.journal"
    first = launch(tmp_path, "--local-concurrency", "0", "--journal", str(journal))
    processes.append(first)
    async with Client(first.discovery) as client:
        fails_id = await client.delay(FAILS)
        slow_id = await client.delay(SLOW)
    os.kill(first.pid, signal.SIGKILL)
    first.stop()

    # Replayed by its successor, and run on a subworker with other definitions
    second = launch(tmp_path, "--local-concurrency", "0", "--journal", str(journal))
    processes.append(second)
    start_worker(second, "w-replay", task_modules=WORKER_TASKS)
    async with Client(second.discovery) as client:
        fails, slow = await finished(client, fails_id), await finished(client, slow_id)
    assert_the_control_planes_rule(fails, slow)


async def test_run_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    async with EagerClient(task_modules=CP_TASKS) as client:
        fails, slow = await run_both(client)
    assert_the_control_planes_rule(fails, slow)
