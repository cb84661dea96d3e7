"""Task hooks end to end (issue 19, item 5): in order around local and remote runs, and a raising hook fails nothing.

A control plane runs ``fwtests_hooks_tasks`` on its own slots (``local``: a sync task on a slot
thread, an async one on its loop), or a control plane that runs nothing dispatches them to a real
subworker (``worker``: a sync task in one of its child processes, an async one on its loop;
``worker-threads``: ``--pool threads``, a sync task on one of its threads). The
module's hooks, registered at its import, write what they see to a file; each recording hook comes
after a hook that raises. This process's ``on_submit`` hook sees every submission.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import Client, TaskState, hooks
from fastworker.client.hooks import Submission
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker

HOOK_TASKS = ("fwtests_hooks_tasks",)
WORKER_ID = "w-hooks"
#: Bound on waiting for a hook's line (written before the outcome is reported, so normally there already).
WAIT = 15.0


@pytest.fixture
def hooks_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the daemons' hooks append to (the daemons inherit the variable from this process)."""
    path = tmp_path / "hooks.jsonl"
    monkeypatch.setenv("FWTESTS_HOOKS_LOG", str(path))
    return path


@pytest.fixture
def cluster(start_cp: Any, start_cp_for_workers: Any, start_worker: Any, hooks_log: Path) -> Callable[..., Any]:
    """``cluster(where)``: the hook tasks on the control plane's slots (``"local"``) or on one subworker
    (``"worker"``: sync tasks in child processes; ``"worker-threads"``: ``--pool threads``)."""

    def start(where: str) -> tuple[RunningControlPlane, RunningWorker | None]:
        if where == "local":
            return start_cp(task_modules=HOOK_TASKS), None
        control_plane = start_cp_for_workers()
        flags = ("--pool", "threads") if where == "worker-threads" else ()
        return control_plane, start_worker(control_plane, WORKER_ID, *flags, task_modules=HOOK_TASKS, concurrency=2)

    return start


async def lines_of(path: Path, task_id: str, last_kind: str, count: int) -> list[dict[str, Any]]:
    """The hooks log's lines for one task, once ``count`` of them ended with ``last_kind`` (bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [entry for entry in map(json.loads, text.splitlines()) if entry["id"] == task_id]
        if len(lines) >= count and lines[-1]["kind"] == last_kind:
            return lines
        if time.monotonic() > deadline:
            pytest.fail(f"hooks of {task_id} incomplete after {WAIT:g} s: {lines}")
        await asyncio.sleep(0.05)


async def log_of(daemon: RunningControlPlane | RunningWorker, *needles: str) -> str:
    deadline = time.monotonic() + WAIT
    while True:
        text = daemon.log()
        if all(needle in text for needle in needles):
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"not in the log after {WAIT:g} s: {[n for n in needles if n not in text]}\n{text}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("where", ["local", "worker", "worker-threads"])
async def test_hooks_run_in_order_where_the_task_runs_and_raising_hooks_fail_nothing(
    cluster: Any, make_client: Any, hooks_log: Path, tmp_path: Path, where: str
) -> None:
    control_plane, worker = await asyncio.to_thread(cluster, where)
    daemon = worker or control_plane
    worker_id = WORKER_ID if worker else "controlplane"
    submitted: list[tuple[str, str]] = []

    def on_submit(submission: Submission) -> None:
        submitted.append((submission.name, submission.task_id))

    hooks.on_submit(on_submit)
    client: Client = make_client(control_plane)
    try:
        ids = {
            "sync": await client.delay("fwhooks.add", 1, 2),
            "async": await client.delay("fwhooks.add_async", 3, 4),
            "flaky": await client.delay("fwhooks.flaky", str(tmp_path / "flaky-marker")),
            "down": await client.delay("fwhooks.always_down"),
        }
    finally:
        hooks.remove(on_submit)
    infos = {key: await client.wait(task_id, timeout=30) for key, task_id in ids.items()}

    # on_submit ran in this process for each submission, with the id the task got
    assert submitted == [
        ("fwhooks.add", ids["sync"]),
        ("fwhooks.add_async", ids["async"]),
        ("fwhooks.flaky", ids["flaky"]),
        ("fwhooks.always_down", ids["down"]),
    ]

    # Every hook kind had a raising hook before its recording one: the tasks ended as without hooks.
    assert (infos["sync"].state, infos["sync"].result) == (TaskState.SUCCESS, 3)
    assert (infos["async"].state, infos["async"].result) == (TaskState.SUCCESS, 7)
    assert (infos["flaky"].state, infos["flaky"].attempts, infos["flaky"].result) == (TaskState.SUCCESS, 2, "ok")
    down = infos["down"]
    assert (down.state, down.attempts) == (TaskState.FAILURE, 2)
    assert down.error is not None and (down.error.type, down.error.message) == ("ConnectionError", "upstream down")

    # before -> task -> after, in the process and thread that ran the task
    for key, value in (("sync", 3), ("async", 7)):
        lines = await lines_of(hooks_log, ids[key], "after", 3)
        assert [line["kind"] for line in lines] == ["before", "task", "after"], lines
        assert lines[-1]["detail"] == {"succeeded": True, "value": value, "error": None}
        assert {line["worker"] for line in lines} == {worker_id}
        assert len({(line["pid"], line["thread"]) for line in lines}) == 1, lines  # where the task ran
        pid = lines[0]["pid"]
        if worker is None:
            assert pid == control_plane.pid  # the control plane's slot thread, or its loop
        elif key == "sync" and where == "worker":
            assert pid not in (worker.pid, control_plane.pid)  # a child process, which imported the hooks itself
        else:
            assert pid == worker.pid  # the subworker's event loop, or one of its slot threads
    sync_thread = (await lines_of(hooks_log, ids["sync"], "after", 3))[0]["thread"]
    async_thread = (await lines_of(hooks_log, ids["async"], "after", 3))[0]["thread"]
    if where != "worker":  # one process: the sync task ran on a slot thread, not the event loop's
        assert sync_thread != async_thread

    # A retried task: on_retry, then after_task of the failed attempt; the retry succeeds
    lines = await lines_of(hooks_log, ids["flaky"], "after", 5)
    assert [(line["kind"], line["attempt"]) for line in lines] == [
        ("before", 1),
        ("retry", 1),
        ("after", 1),
        ("before", 2),
        ("after", 2),
    ]
    assert lines[1]["detail"] == "ConnectionError: first attempt fails"
    assert lines[2]["detail"]["succeeded"] is False and lines[4]["detail"]["succeeded"] is True

    # A task that keeps failing: on_retry, then on_failure on its last attempt (what the control plane did)
    lines = await lines_of(hooks_log, ids["down"], "after", 6)
    assert [(line["kind"], line["attempt"]) for line in lines] == [
        ("before", 1),
        ("retry", 1),
        ("after", 1),
        ("before", 2),
        ("failure", 2),
        ("after", 2),
    ]
    assert lines[4]["detail"] == "ConnectionError: upstream down"

    # The raising hooks were logged by the daemon that ran them, with the task and a traceback
    sync_id, down_id = ids["sync"], ids["down"]
    text = await log_of(
        daemon,
        f"before_task hook fwtests_hooks_tasks.broken_before raised for task fwhooks.add[{sync_id}]",
        f"after_task hook fwtests_hooks_tasks.broken_after raised for task fwhooks.add[{sync_id}]",
        f"on_retry hook fwtests_hooks_tasks.broken_retry raised for task fwhooks.always_down[{down_id}]",
        f"on_failure hook fwtests_hooks_tasks.broken_failure raised for task fwhooks.always_down[{down_id}]",
    )
    assert "RuntimeError: broken before_task hook" in text and "Traceback (most recent call last)" in text
