"""Tasks that submit tasks reach the control plane that runs them: on its own slots, on subworkers, in their children.

The daemons run with a shared secret and with ``FASTWORKER_CONTROL_PLANE`` naming an address where
nothing listens: a task's submission must go to the control plane that runs it, with its secret,
whatever the environment says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import SyncClient
from fastworker.controlplane.testing import run_controlplane, run_worker

SECRET = "fan-out-secret"
MODULES = ["fwtests_fanout_tasks"]
SPAWNERS = [("fanout.spawn_sync", 1), ("fanout.spawn_async", 2), ("fanout.spawn_workflow_sync", 3)]


def _env() -> dict[str, str]:
    """This folder first on the daemons' path, and an environment that names the wrong control plane."""
    path = os.pathsep.join(
        part for part in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if part
    )
    return {"PYTHONPATH": path, "FASTWORKER_CONTROL_PLANE": "tcp://127.0.0.1:9"}  # nothing listens there


def _spawned_results(client: SyncClient) -> list[Any]:
    """Run each spawner once; the results of the tasks they submitted, as the caller sees them."""
    results = []
    for name, _ in SPAWNERS:
        child_id = client.submit(name, 40, timeout=30)
        results.append(client.result(child_id, timeout=30))
    return results


def test_a_task_on_the_control_planes_own_slots_submits_to_that_control_plane(tmp_path: Path) -> None:
    with run_controlplane(
        task_modules=MODULES, extra_args=["--local-concurrency", "2", "--secret", SECRET], env=_env(), workdir=tmp_path
    ) as control_plane:
        with SyncClient(control_plane.discovery, secret=SECRET) as client:
            assert _spawned_results(client) == [40 + offset for _, offset in SPAWNERS]


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_a_task_on_a_subworker_submits_to_its_control_plane(tmp_path: Path, pool: str) -> None:
    with run_controlplane(
        extra_args=["--local-concurrency", "0", "--secret", SECRET], env=_env(), workdir=tmp_path
    ) as control_plane:
        with run_worker(
            control_plane.discovery,
            task_modules=MODULES,
            concurrency=2,
            extra_args=["--secret", SECRET, "--pool", pool],
            env=_env(),
            workdir=tmp_path,
        ):
            with SyncClient(control_plane.discovery, secret=SECRET) as client:
                assert _spawned_results(client) == [40 + offset for _, offset in SPAWNERS]
