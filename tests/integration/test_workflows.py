"""Workflows end to end: chains, groups, chords and ``depends_on`` held by a real control plane.

Every test runs twice: on a control plane that runs the steps itself, and on one that runs
nothing (``--local-concurrency 0``) with two subworkers. The steps (``fwtests_workflows``) create
one file per execution, so "each step ran exactly once" and "nothing after the failed step ran"
are counted across processes; each test uses its own key prefix. The last test kills the control
plane with SIGKILL in the middle of a chord and finishes the chord on a restarted one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import (
    Client,
    FastworkerError,
    Signature,
    SyncClient,
    TaskFailed,
    TaskInfo,
    TaskNotFound,
    TaskState,
    WorkflowHandle,
    chain,
    chord,
    group,
    signature,
)
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker, start_controlplane, start_worker

TESTS_DIR = Path(__file__).resolve().parent
TASKS = ("fwtests_workflows",)
RUNS_ENV = "FWTESTS_WORKFLOW_RUNS"
BOUND = 60.0
DEPENDENCY_FAILED = "DependencyFailed"


def child_env(runs: Path) -> dict[str, str]:
    """This directory first on the children's PYTHONPATH, and where the steps record their executions."""
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(part for part in (str(TESTS_DIR), existing) if part), RUNS_ENV: str(runs)}


def executions(runs: Path, prefix: str) -> Counter[str]:
    """How many times each key starting with ``prefix`` ran (one ``KEY@UNIQUE`` file per execution)."""
    keys = (name.partition("@")[0] for name in os.listdir(runs))
    return Counter(key for key in keys if key.startswith(prefix))


def step(name: str, *args: object, key: str, **kwargs: object) -> Signature[Any]:
    """A signature of one of the ``fwwf.*`` test tasks."""
    return signature(f"fwwf.{name}", args, {"key": key, **kwargs})


@dataclass
class Fleet:
    """A control plane that runs the steps (itself or on two subworkers), and where executions are recorded."""

    kind: str
    runs: Path
    control_plane: RunningControlPlane
    workers: list[RunningWorker] = field(default_factory=list)

    def stop(self) -> None:
        for daemon in [*self.workers, self.control_plane]:
            daemon.stop()

    def logs(self) -> str:
        return "\n".join(
            f"---- pid {d.pid} ({' '.join(d.argv[3:])}) ----\n{d.log()}" for d in [self.control_plane, *self.workers]
        )


@pytest.fixture(scope="module", params=["controlplane", "subworkers"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fleet per kind, shared by this module's tests (each uses its own keys); stopped by pid at the end."""
    workdir = tmp_path_factory.mktemp(f"workflows-{request.param}")
    runs = workdir / "runs"
    runs.mkdir()
    env = child_env(runs)
    if request.param == "controlplane":
        control_plane = start_controlplane(
            task_modules=TASKS, extra_args=["--local-concurrency", "2"], env=env, workdir=workdir
        )
        running = Fleet("controlplane", runs, control_plane)
    else:
        control_plane = start_controlplane(extra_args=["--local-concurrency", "0"], env=env, workdir=workdir)
        running = Fleet("subworkers", runs, control_plane)
        try:
            for worker_id in ("wf-a", "wf-b"):
                running.workers.append(
                    start_worker(
                        control_plane.discovery,
                        task_modules=TASKS,
                        concurrency=2,
                        worker_id=worker_id,
                        env=env,
                        workdir=workdir,
                    )
                )
        except BaseException:
            running.stop()
            raise
    try:
        yield running
    finally:
        running.stop()
        print(running.logs())  # shown by pytest when a test failed


@pytest.fixture
def prefix() -> str:
    """This test's own key prefix."""
    return uuid.uuid4().hex[:10] + "-"


async def until_state(client: Client, task_id: str, state: TaskState, bound: float = BOUND) -> TaskInfo:
    """Poll a task's status until it is in ``state`` (bounded)."""
    deadline = time.monotonic() + bound
    info = await client.status(task_id)
    while info.state is not state:
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} did not reach {state} within {bound:g} s (last: {info.state})")
        await asyncio.sleep(0.02)
        info = await client.status(task_id)
    return info


# ------------------------------------------------------------------------------------------ shapes


async def test_a_chain_passes_each_value_on_and_runs_each_step_once(fleet: Fleet, prefix: str) -> None:
    async with Client(fleet.control_plane.discovery) as client:
        handle = await client.delay_workflow(
            chain(
                step("add", 1, 2, key=prefix + "a"),
                step("add", 10, key=prefix + "b"),
                step("add", 100, key=prefix + "c"),
            )
        )
        assert await handle.result(timeout=BOUND) == 113
        info = await handle.status()

    assert executions(fleet.runs, prefix) == {prefix + "a": 1, prefix + "b": 1, prefix + "c": 1}
    assert info.id == handle.id and info.state is TaskState.SUCCESS
    assert [s.id for s in info.steps] == list(handle.task_ids)
    assert [s.result for s in info.steps] == [3, 13, 113]
    assert all(s.workflow_id == handle.id and s.attempts == 1 for s in info.steps)
    assert [s.depends_on for s in info.steps] == [(), handle.task_ids[:1], handle.task_ids[1:2]]
    assert info.output_ids == handle.task_ids[2:] and not info.output_is_list


async def test_a_sync_client_runs_a_workflow_with_a_blocking_handle(fleet: Fleet, prefix: str) -> None:
    def run() -> tuple[object, TaskState]:
        with SyncClient(fleet.control_plane.discovery) as client:
            handle = client.delay_workflow(chain(step("add", 2, 3, key=prefix + "a"), step("add", 5, key=prefix + "b")))
            return handle.result(timeout=BOUND), handle.status().state

    assert await asyncio.to_thread(run) == (10, TaskState.SUCCESS)
    assert executions(fleet.runs, prefix) == {prefix + "a": 1, prefix + "b": 1}


async def test_a_group_of_100_returns_100_results_in_order(fleet: Fleet, prefix: str) -> None:
    # Every tenth member is slower, so the members finish out of order
    members = [step("item", i, key=f"{prefix}{i}", pause=0.05 if i % 10 == 0 else 0.0) for i in range(100)]
    async with Client(fleet.control_plane.discovery) as client:
        handle = await client.delay_workflow(group(members))
        result = await handle.result(timeout=BOUND)
        info = await handle.status()

    assert result == list(range(100))
    assert info.state is TaskState.SUCCESS and info.output_is_list and len(info.steps) == 100
    assert executions(fleet.runs, prefix) == {f"{prefix}{i}": 1 for i in range(100)}


async def test_a_chord_over_100_calls_its_callback_once_with_all_100(fleet: Fleet, prefix: str) -> None:
    header = [step("item", i, key=f"{prefix}h{i}", pause=0.05 if i % 10 == 0 else 0.0) for i in range(100)]
    async with Client(fleet.control_plane.discovery) as client:
        handle = await client.delay_workflow(chord(header, step("collect", key=prefix + "callback")))
        result = await handle.result(timeout=BOUND)
        info = await handle.status()

    assert result == list(range(100))
    ran = executions(fleet.runs, prefix)
    assert ran.pop(prefix + "callback") == 1
    assert ran == {f"{prefix}h{i}": 1 for i in range(100)}
    callback = info.steps[-1]
    assert set(callback.depends_on) == set(handle.task_ids[:100])
    assert callback.started_at is not None
    assert all(s.finished_at is not None and s.finished_at <= callback.started_at for s in info.steps[:100])


# ---------------------------------------------------------------------------------------- failures


async def test_a_failing_middle_step_fails_the_rest_naming_it_and_nothing_after_it_runs(
    fleet: Fleet, prefix: str
) -> None:
    keys = [prefix + k for k in "abcd"]
    async with Client(fleet.control_plane.discovery) as client:
        handle = await client.delay_workflow(
            chain(
                step("add", 1, 2, key=keys[0]),
                step("fail", key=keys[1]),
                step("add", 1, key=keys[2]),
                step("add", 1, key=keys[3]),
            )
        )
        with pytest.raises(TaskFailed) as failed:
            await handle.result(timeout=BOUND)
        info = await handle.status()
        await asyncio.sleep(0.5)  # time enough for a wrongly released step to run
        ran = executions(fleet.runs, prefix)

    a, b, c, d = info.steps
    failing_id = handle.task_ids[1]
    assert failed.value.info.id == d.id and failed.value.info.error is not None
    assert failed.value.info.error.type == DEPENDENCY_FAILED
    assert info.state is TaskState.FAILURE
    assert (a.state, b.state, c.state, d.state) == (TaskState.SUCCESS, *[TaskState.FAILURE] * 3)
    assert b.error is not None and b.error.type == "RuntimeError"
    for later in (c, d):
        assert later.error is not None and later.error.type == DEPENDENCY_FAILED
        assert "'fwwf.fail'" in later.error.message and failing_id in later.error.message, later.error.message
        assert later.attempts == 0 and later.started_at is None
    assert ran == {keys[0]: 1, keys[1]: 1}


async def test_cancelling_a_running_workflow_stops_it(fleet: Fleet, prefix: str) -> None:
    keys = [prefix + k for k in "abcd"]
    async with Client(fleet.control_plane.discovery) as client:
        handle = await client.delay_workflow(
            chain(
                step("add", 1, 2, key=keys[0]),
                step("slow", key=keys[1]),
                step("add", 1, key=keys[2]),
                step("add", 1, key=keys[3]),
            )
        )
        running_id = handle.task_ids[1]
        await until_state(client, running_id, TaskState.RUNNING)
        deadline = time.monotonic() + BOUND
        while not executions(fleet.runs, keys[1]) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # it really started

        cancelled = await handle.cancel()
        running = await client.wait(running_id, timeout=BOUND)
        info = await handle.status()
        await asyncio.sleep(0.5)  # time enough for a wrongly released step to run
        ran = executions(fleet.runs, prefix)
        with pytest.raises(TaskFailed) as failed:
            await handle.result(timeout=BOUND)

    assert cancelled == 3
    assert running.state is TaskState.CANCELLED
    assert [s.state for s in info.steps] == [TaskState.SUCCESS, *[TaskState.CANCELLED] * 3]
    assert info.state is TaskState.CANCELLED
    assert running.finished_at is not None and running.started_at is not None
    assert running.finished_at - running.started_at < 30, "stopped by the cancel, not after its own 60 s"
    assert ran == {keys[0]: 1, keys[1]: 1}
    assert failed.value.info.id == handle.task_ids[3] and failed.value.info.state is TaskState.CANCELLED


async def test_a_plain_unique_submission_runs_on_its_own_beside_a_waiting_workflow_step_of_its_key(
    fleet: Fleet, prefix: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    doomed, cancelled = prefix + "doomed", prefix + "cancelled"

    def unique_step(key: str) -> Signature[Any]:
        return signature("fwwf.unique_add", (1, 2), {"key": key}, immutable=True)

    async with Client(fleet.control_plane.discovery) as client:
        # Given someone's workflows whose unique step waits: behind a step that fails, and behind one to be cancelled
        failing = await client.delay_workflow(
            chain(
                step("wait_for", str(gate), key=prefix + "gate"), step("fail", key=prefix + "fail"), unique_step(doomed)
            )
        )
        stopped = await client.delay_workflow(chain(step("slow", key=prefix + "slow"), unique_step(cancelled)))

        # When an independent caller submits the same unique calls
        mine = [await client.delay("fwwf.unique_add", 1, 2, key=key) for key in (doomed, cancelled)]

        # Then each is a task of its own, which runs whatever becomes of those workflows
        assert mine[0] != failing.task_ids[2] and mine[1] != stopped.task_ids[1]
        await stopped.cancel()
        gate.touch()
        with pytest.raises(TaskFailed):
            await failing.result(timeout=BOUND)
        for task_id in mine:
            info = await client.wait(task_id, timeout=BOUND)
            assert (info.state, info.result, info.workflow_id) == (TaskState.SUCCESS, 3, None)
        assert (await client.status(failing.task_ids[2])).state is TaskState.FAILURE
        assert (await client.status(stopped.task_ids[1])).state is TaskState.CANCELLED

    assert executions(fleet.runs, doomed) == {doomed: 1} and executions(fleet.runs, cancelled) == {cancelled: 1}


# -------------------------------------------------------------------------------------- depends_on


async def test_depends_on_runs_a_task_once_both_succeeded_and_fails_it_when_one_failed(
    fleet: Fleet, prefix: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with Client(fleet.control_plane.discovery) as client:
        # Given a task that waits for the gate and one that succeeds at once
        first = await client.delay("fwwf.wait_for", str(gate), key=prefix + "first")
        second = await client.delay("fwwf.add", 1, 2, key=prefix + "second")
        await until_state(client, second, TaskState.SUCCESS)
        await until_state(client, first, TaskState.RUNNING)

        # When a task depends on both, it waits while the first runs
        both = await client.delay("fwwf.add", 5, 5, key=prefix + "both", depends_on=[first, second])
        await asyncio.sleep(0.3)
        waiting = await client.status(both)
        assert waiting.state is TaskState.SCHEDULED and waiting.depends_on == (first, second)
        assert not executions(fleet.runs, prefix + "both")

        # and runs once the first succeeded, with its own arguments
        gate.touch()
        done = await client.wait(both, timeout=BOUND)
        assert (done.state, done.result) == (TaskState.SUCCESS, 10)
        first_info = await client.status(first)
        assert done.started_at is not None and first_info.finished_at is not None
        assert done.started_at >= first_info.finished_at

        # When one of its dependencies fails, it fails naming it and never runs
        failing = await client.delay("fwwf.fail", key=prefix + "failing")
        doomed = await client.delay("fwwf.add", 1, 1, key=prefix + "doomed", depends_on=[second, failing])
        failed = await client.wait(doomed, timeout=BOUND)
        assert failed.state is TaskState.FAILURE and failed.error is not None
        assert failed.error.type == DEPENDENCY_FAILED
        assert "'fwwf.fail'" in failed.error.message and failing in failed.error.message

        # An unknown dependency is refused at submission, clearly
        with pytest.raises(FastworkerError, match="no-such-task"):
            await client.delay("fwwf.add", 1, 1, key=prefix + "orphan", depends_on=["no-such-task"], task_id=prefix)
        with pytest.raises(TaskNotFound):
            await client.status(prefix)
        # and an unknown workflow id is named as one
        for ask in (client.workflow, client.cancel_workflow):
            with pytest.raises(TaskNotFound, match=f"^workflow {prefix}no-workflow is not known"):
                await ask(prefix + "no-workflow")

    assert executions(fleet.runs, prefix) == {
        prefix + "first": 1,
        prefix + "second": 1,
        prefix + "both": 1,
        prefix + "failing": 1,
    }


# ----------------------------------------------------------------------------------- kill -9, replay


async def test_a_chord_survives_a_kill_9_of_the_control_plane_and_each_step_runs_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    env = child_env(runs)
    journal = tmp_path / "cp.journal"
    started: list[RunningControlPlane | RunningWorker] = []

    def control_plane() -> RunningControlPlane:
        daemon = start_controlplane(
            extra_args=["--local-concurrency", "0", "--journal", str(journal)], env=env, workdir=tmp_path
        )
        started.append(daemon)
        return daemon

    def worker(cp: RunningControlPlane, worker_id: str, concurrency: int) -> RunningWorker:
        daemon = start_worker(
            cp.discovery, task_modules=TASKS, concurrency=concurrency, worker_id=worker_id, env=env, workdir=tmp_path
        )
        started.append(daemon)
        return daemon

    size = 20
    try:
        # Given a chord whose header steps (0.3 s each) run one at a time on one worker
        first = control_plane()
        only = worker(first, "wf-before", 1)
        header = [step("item", i, key=f"h{i}", pause=0.3) for i in range(size)]
        async with Client(first.discovery) as client:
            handle = await client.delay_workflow(chord(header, step("collect", key="callback")))
            header_ids, callback_id = list(handle.task_ids[:size]), handle.task_ids[size]

            async def finished() -> int:
                infos = await asyncio.gather(*(client.status(t) for t in header_ids))
                return sum(info.state is TaskState.SUCCESS for info in infos)

            deadline = time.monotonic() + BOUND
            while await finished() < 3:
                assert time.monotonic() < deadline, "the first header steps did not finish"
                await asyncio.sleep(0.02)

            # When the worker stops (it finishes the step it runs and hands back the rest)
            await asyncio.to_thread(only.stop)
            before = {t: await client.status(t) for t in [*header_ids, callback_id]}
            done = [t for t in header_ids if before[t].state is TaskState.SUCCESS]
            assert {before[t].state for t in header_ids} == {TaskState.SUCCESS, TaskState.PENDING}
            assert before[callback_id].state is TaskState.SCHEDULED
            assert sum(executions(runs, "h").values()) == len(done), "every header step started also finished"
            # (a wait answers only once what it reports is on disk)
            assert [i.state for i in await client.wait_many(done, timeout=BOUND)] == [TaskState.SUCCESS] * len(done)

        # and the control plane, running nothing and with no worker attached, is killed with SIGKILL
        os.kill(first.pid, signal.SIGKILL)
        assert first.process.wait(BOUND) == -signal.SIGKILL

        # and restarted on the same journal, and a worker attaches
        second = control_plane()
        async with Client(second.discovery) as client:
            again = await client.workflow(handle.id)
            assert [s.id for s in again.steps] == list(handle.task_ids)
            assert {s.id for s in again.steps if s.state is TaskState.SUCCESS} == set(done)
            worker(second, "wf-after", 2)
            resumed = WorkflowHandle(handle.id, handle.task_ids, handle.output_ids, handle.output_is_list, client)
            result = await resumed.result(timeout=BOUND)
            final = await resumed.status()

        # Then the chord completes, and every step ran exactly once
        assert result == list(range(size))
        assert final.state is TaskState.SUCCESS
        assert executions(runs, "") == {"callback": 1, **{f"h{i}": 1 for i in range(size)}}
        assert [s.attempts for s in final.steps] == [1] * (size + 1)
    finally:
        for daemon in reversed(started):
            daemon.stop()
        for daemon in started:
            print(f"---- pid {daemon.pid} ({' '.join(daemon.argv[3:])}) ----\n{daemon.log()}")


async def test_a_step_that_left_the_result_cache_is_listed_as_forgotten_while_its_workflow_goes_on(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    gate = tmp_path / "gate"
    cp = start_controlplane(
        task_modules=TASKS,
        extra_args=["--local-concurrency", "2", "--result-cache-size", "20"],
        env=child_env(runs),
        workdir=tmp_path,
    )
    try:
        async with Client(cp.discovery) as client:
            # Given a chord whose quick member finished while the other waits at a gate
            handle = await chord(
                group(step("add", 1, 1, key="quick"), step("wait_for", str(gate), key="gated")),
                step("collect", key="cb"),
            ).delay()
            quick, gated, callback = handle.task_ids
            await until_state(client, quick, TaskState.SUCCESS)
            # When 100 other results push the quick member's record out of the result cache
            ids = [await client.delay("fwwf.add", i, i, key="filler") for i in range(100)]
            await client.results(ids[-5:], timeout=BOUND)  # the earlier ones left the cache too
            with pytest.raises(TaskNotFound):
                await client.status(quick)

            # Then the workflow still reads: the quick member listed as forgotten, the others as they are
            info = await handle.status()
            assert info.state is TaskState.RUNNING and info.forgotten == (quick,)
            assert [(s.id, s.state) for s in info.steps] == [
                (gated, TaskState.RUNNING),
                (callback, TaskState.SCHEDULED),
            ]
            shown = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fastworker.client",
                    "--control-plane",
                    cp.discovery,
                    "workflow",
                    handle.id,
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=BOUND,
            )
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["forgotten"] == [quick]
            # and the chord ends as it would have (the callback got both values, kept for it)
            gate.touch()
            assert await handle.result(timeout=BOUND) == [2, "gated"]
    finally:
        cp.stop()
