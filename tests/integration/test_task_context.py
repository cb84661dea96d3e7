"""Task logs and task context end to end, on the control plane's own slots and on a subworker (issue 19, 2 and 3).

What a task logs reaches the daemon's log with its task id, in ``--log-format text`` and ``json``,
at the daemon's level (a sync task on a slot thread, in a child process on the control plane
when it has a time limit, in a subworker's child process; an async one on an event loop); every
run ends with a ``task NAME[ID] succeeded in ...`` line. A task reads its id, name, attempt,
retries left and worker with ``current_task()``, on a retry too; ``Retry()`` without a delay
waits the task's backoff; after the last retry the error is the task's own, and a task that
succeeded in the end carries no error.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import Client, TaskState
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker

CONTEXT_TASKS = ("fwtests_context_tasks",)
WORKER_ID = "w-context"
#: ``retry_backoff`` of ``fwcontext.backoff`` (the task module's BACKOFF), less its 20% jitter.
LEAST_BACKOFF = 0.8 * 1.0
#: Bound on waiting for a line to appear in a daemon's log, in seconds.
LOG_WAIT = 15.0


@pytest.fixture
def cluster(start_cp: Any, start_cp_for_workers: Any, start_worker: Any) -> Callable[..., Any]:
    """``cluster(where, *flags)``: a control plane running the context tasks itself (``"local"``), or one
    subworker running them (``"worker"``, processes pool); ``flags`` go to every daemon. Stopped by pid."""

    def start(where: str, *flags: str) -> tuple[RunningControlPlane, RunningWorker | None, str]:
        if where == "local":
            return start_cp(*flags, task_modules=CONTEXT_TASKS), None, "controlplane"
        control_plane = start_cp_for_workers(*flags)
        worker = start_worker(control_plane, WORKER_ID, *flags, task_modules=CONTEXT_TASKS, concurrency=2)
        return control_plane, worker, WORKER_ID

    return start


async def log_of(daemon: RunningControlPlane | RunningWorker, *needles: str) -> str:
    """The daemon's log once it holds every needle (bounded: the test fails with the log otherwise)."""
    deadline = time.monotonic() + LOG_WAIT
    while True:
        text = daemon.log()
        if all(needle in text for needle in needles):
            return text
        if time.monotonic() > deadline:
            missing = [needle for needle in needles if needle not in text]
            pytest.fail(f"not in the log after {LOG_WAIT:g} s: {missing}\n{text}")
        await asyncio.sleep(0.05)


#: A sync task (slot thread / worker child), a time-limited one (a child on the control plane too), an async one.
HELLOS = ("fwcontext.hello", "fwcontext.hello_limited", "fwcontext.hello_async")


@pytest.mark.parametrize("where", ["local", "worker"])
async def test_what_a_task_logs_reaches_the_daemons_text_log_with_its_task_id(
    cluster: Any, make_client: Any, where: str
) -> None:
    control_plane, worker, worker_id = await asyncio.to_thread(cluster, where)
    daemon = worker or control_plane
    client: Client = make_client(control_plane)
    for name in HELLOS:
        info = await client.wait(await client.delay(name), timeout=30)
        assert info.state is TaskState.SUCCESS, info.error
        task_id = info.id
        said = f"fwtests.context: hello from {task_id} [task_id={task_id} task_name={name} worker_id={worker_id} attempt=1]"
        text = await log_of(daemon, said)
        assert re.search(rf" INFO fwtests\.context: hello from {task_id} \[", text)
        assert f"debug from {task_id}" not in text  # DEBUG stays below the daemon's INFO
        assert f"task {name}[{task_id}] succeeded in " not in text  # so does the per-task success line


@pytest.mark.parametrize("where", ["local", "worker"])
async def test_what_a_task_logs_reaches_the_daemons_json_log_with_its_fields(
    cluster: Any, make_client: Any, where: str
) -> None:
    control_plane, worker, worker_id = await asyncio.to_thread(
        cluster, where, "--log-format", "json", "--log-level", "DEBUG"
    )
    daemon = worker or control_plane
    client: Client = make_client(control_plane)
    for name in HELLOS:
        info = await client.wait(await client.delay(name), timeout=30)
        assert info.state is TaskState.SUCCESS, info.error
        task_id = info.id
        text = await log_of(daemon, f"hello from {task_id}", f"task {name}[{task_id}] succeeded in ")
        objects = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        mine = [entry for entry in objects if entry.get("task_id") == task_id]
        (said,) = [entry for entry in mine if entry["logger"] == "fwtests.context" and entry["level"] == "INFO"]
        assert {k: said[k] for k in ("message", "level", "task_id", "task_name", "worker_id", "attempt")} == {
            "message": f"hello from {task_id}",
            "level": "INFO",
            "task_id": task_id,
            "task_name": name,
            "worker_id": worker_id,
            "attempt": 1,
        }
        (ended,) = [entry for entry in mine if entry["logger"] == "fastworker.task"]
        assert ended["task_name"] == name and ended["level"] == "DEBUG"
        assert ended["message"].startswith(f"task {name}[{task_id}] succeeded in ")


@pytest.mark.parametrize("where", ["local", "worker"])
async def test_a_task_reads_its_context_across_a_retry_and_retry_follows_the_backoff(
    cluster: Any, make_client: Any, tmp_path: Path, where: str
) -> None:
    control_plane, worker, worker_id = await asyncio.to_thread(cluster, where)
    client: Client = make_client(control_plane)

    # current_task() on the first attempt and on its retry (retries=2)
    first = tmp_path / "first-attempt.json"
    info = await client.wait(await client.delay("fwcontext.whoami", str(first)), timeout=30)
    assert info.state is TaskState.SUCCESS and info.attempts == 2, info.error
    assert json.loads(first.read_text()) == [info.id, "fwcontext.whoami", 1, 2, worker_id, None]
    assert info.result == [info.id, "fwcontext.whoami", 2, 1, worker_id, None]
    assert info.error is None  # the first attempt's ConnectionError is gone with the success
    daemon = worker or control_plane
    await log_of(daemon, f"task fwcontext.whoami[{info.id}] retry in ~0.05 s after ")

    # Retry() with no delay waits the task's retry_backoff (1 s, +-20%), not "at once"
    stamps = tmp_path / "stamps.jsonl"
    info = await client.wait(await client.delay("fwcontext.backoff", str(stamps)), timeout=30)
    assert info.state is TaskState.SUCCESS and info.result == 2 and info.error is None, info.error
    (attempt_1, _, ended_1), (attempt_2, started_2, _) = (json.loads(line) for line in stamps.read_text().splitlines())
    assert (attempt_1, attempt_2) == (1, 2)
    assert started_2 - ended_1 >= LEAST_BACKOFF, f"the retry started {started_2 - ended_1:.3f} s after the first run"

    # After the last retry the error is the task's own, not the Retry that asked for it
    info = await client.wait(await client.delay("fwcontext.always_down"), timeout=30)
    assert info.state is TaskState.FAILURE and info.attempts == 2
    assert info.error is not None and (info.error.type, info.error.message) == ("ConnectionError", "upstream down")
    await log_of(daemon, f"task fwcontext.always_down[{info.id}] failed in ")

    # A task that failed once and then succeeded carries no error
    info = await client.wait(await client.delay("fwcontext.flaky_once", str(tmp_path / "flaky")), timeout=30)
    assert (info.state, info.attempts, info.result, info.error) == (TaskState.SUCCESS, 2, "ok", None)
