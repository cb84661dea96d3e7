"""Per-task result expiry end to end: a subworker defines ``@task(result_ttl=3)``; the control plane's TTL is an hour.

The task's result is readable at once, gone (``TaskNotFound``, as for any expired result) once
its own TTL passed and not before, while another task's result stays for the global TTL.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastworker.client import Client, TaskNotFound, TaskState
from fastworker.controlplane import testing
from fastworker.controlplane.testing import RunningControlPlane

#: The task's own result TTL, in seconds.
TTL = 3.0
#: Bound on the wait for the result to go, in seconds.
BOUND = 30.0

MODULE = f"""from fastworker.client import task


@task(name="ttl.short", result_ttl={TTL})
def short() -> str:
    return "short"


@task(name="ttl.plain")
def plain() -> str:
    return "plain"
"""


async def test_a_subworker_task_result_ttl_expires_its_results_before_the_global_ttl(
    start_cp_for_workers: Callable[..., RunningControlPlane], tmp_path: Path
) -> None:
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "fwtests_ttl_tasks.py").write_text(MODULE)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)}
    control_plane = start_cp_for_workers("--result-ttl", "3600")
    worker = testing.start_worker(
        control_plane.discovery, task_modules=("fwtests_ttl_tasks",), worker_id="ttl-w1", env=env, workdir=tmp_path
    )
    try:
        async with Client(control_plane.discovery) as client:
            registered = {t["name"]: t for t in await client.tasks()}
            assert registered["ttl.short"]["result_ttl"] == TTL
            assert registered["ttl.plain"]["queue"] == "default"  # where it waits, not the wire's ""
            short = await client.delay("ttl.short")
            plain = await client.delay("ttl.plain")
            assert await client.result(short, timeout=BOUND) == "short"
            assert await client.result(plain, timeout=BOUND) == "plain"
            info = await client.status(short)  # readable while within its TTL
            assert info.state is TaskState.SUCCESS and info.finished_at is not None

            deadline = time.monotonic() + BOUND
            while True:
                try:
                    await client.status(short)
                except TaskNotFound:
                    gone_at = time.time()
                    break
                assert time.monotonic() < deadline, f"the result of ttl.short was still there after {BOUND:g} s"
                await asyncio.sleep(0.05)

            assert gone_at - info.finished_at >= TTL - 0.05  # not before its TTL (one host, one clock)
            with pytest.raises(TaskNotFound):
                await client.result(short, timeout=5)  # what a client gets for any expired result
            assert (await client.list_tasks(name="ttl.short")).total == 0
            kept = await client.status(plain)  # the global TTL holds it
            assert (kept.state, kept.result) == (TaskState.SUCCESS, "plain")
    finally:
        worker.stop()
        print(f"---- worker ----\n{worker.log()}")
