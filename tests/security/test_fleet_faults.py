"""Fleet faults that must run no task twice and fail none for nothing, in real processes on loopback.

- Two live workers started with one ``--worker-id`` (a copied env var, pid 1 in two containers):
  the second is refused (its log says why, it exits 3) and no task runs twice.
- The control plane itself stalled (SIGSTOP) for several heartbeat timeouts under load: when it
  resumes it reads what the workers sent before judging them, so no task that completed ends
  FAILURE WorkerLost and none runs twice.
- A worker that registers 2^32-1 slots and never runs anything holds at most ``--max-worker-tasks``;
  an honest worker runs the rest.

Every execution of ``fwsec.record`` leaves one file, so completions per task are counted exactly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from fwsec_support import StartControlPlane, StartWorker

from fastworker.client import Client, TaskInfo, TaskState
from fastworker.controlplane.testing import HarnessError
from fastworker.protocol.v1 import task_pb2, worker_pb2
from fastworker.worker.link import ControlPlaneLink

HEARTBEAT = ("--heartbeat-interval", "0.2", "--heartbeat-timeout", "1")
CP_FLAGS = (*HEARTBEAT, "--local-concurrency", "0")
FINAL = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED})


def completions(directory: Path) -> Counter[str]:
    return Counter(name.split(".", 1)[0] for name in os.listdir(directory))


async def final_infos(client: Client, task_ids: list[str], timeout: float = 60.0) -> dict[str, TaskInfo]:
    """Every task's info once all are final (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        infos = dict(zip(task_ids, await asyncio.gather(*(client.status(t) for t in task_ids)), strict=True))
        pending = [t for t, info in infos.items() if info.state not in FINAL]
        if not pending:
            return infos
        assert time.monotonic() < deadline, f"{len(pending)} tasks not final: {[infos[t] for t in pending[:5]]}"
        await asyncio.sleep(0.1)


def assert_each_completed_once(infos: dict[str, TaskInfo], done: Counter[str]) -> None:
    """Every task succeeded, and its key (its result) left exactly one completion."""
    failed = [(t, str(i.error)) for t, i in infos.items() if i.state is not TaskState.SUCCESS]
    assert failed == [], f"{len(failed)} tasks did not succeed: {failed[:5]}"
    twice = {key: n for key, n in done.items() if n > 1}
    assert twice == {}, f"tasks completed more than once: {twice}"
    missing = [info.result for info in infos.values() if done[str(info.result)] != 1]
    assert missing == [], f"SUCCESS without exactly one completion: {missing[:5]}"


@pytest.mark.timeout(120)
async def test_two_live_workers_with_one_worker_id_the_second_is_refused_and_no_task_runs_twice(
    start_cp: StartControlPlane, start_worker: StartWorker, tmp_path: Path, security_report: Callable[..., None]
) -> None:
    control_plane = start_cp(*CP_FLAGS)
    start_worker(control_plane.discovery, "same-id", concurrency=2)
    done = tmp_path / "done"
    done.mkdir()
    async with Client(control_plane.discovery) as client:
        first = [await client.delay("fwsec.record", f"a{n}", str(done), 0.02) for n in range(60)]

        # The copy starts while tasks flow: the control plane refuses it, it says so and exits 3
        with pytest.raises(HarnessError) as refused:
            await asyncio.to_thread(start_worker, control_plane.discovery, "same-id", concurrency=2)
        message = str(refused.value)
        assert "exited with 3" in message, message
        assert "worker id 'same-id' is in use by a live worker" in message, message

        second = [await client.delay("fwsec.record", f"b{n}", str(done), 0.0) for n in range(60)]
        infos = await final_infos(client, first + second)
        stats = await client.stats()
        workers = await client.workers()

    assert_each_completed_once(infos, completions(done))
    assert [w["worker_id"] for w in workers] == ["same-id"]
    assert stats["duplicate_worker_ids"] >= 1
    assert "in use by a live worker" in control_plane.log()
    security_report(
        fault="a second worker with the same --worker-id",
        faults_injected=1,
        tasks_accepted=len(infos),
        tasks_lost=0,
        ran_twice_held=0,
        ran_twice_after_loss=0,
    )


@pytest.mark.timeout(150)
async def test_a_control_plane_stalled_past_the_heartbeat_timeout_fails_nothing_and_runs_nothing_twice(
    start_cp: StartControlPlane, start_worker: StartWorker, tmp_path: Path, security_report: Callable[..., None]
) -> None:
    control_plane = start_cp(*CP_FLAGS, "--result-cache-size", "100000")
    start_worker(control_plane.discovery, "w1", concurrency=2)
    start_worker(control_plane.discovery, "w2", concurrency=2)
    done = tmp_path / "done"
    done.mkdir()
    async with Client(control_plane.discovery) as client:
        # Short tasks (the workers prefetch them) and longer ones (running when the stall starts),
        # with retries (fwsec.record) and without (fwsec.exec_once would fail WorkerLost if taken back)
        ids = [await client.delay("fwsec.record", f"s{n}", str(done), 0.002) for n in range(200)]
        ids += [await client.delay("fwsec.record", f"l{n}", str(done), 0.4) for n in range(40)]
        once_dir = tmp_path / "once"
        once_dir.mkdir()
        once = [await client.delay("fwsec.exec_once", f"o{n}", str(once_dir), 0.3) for n in range(20)]
        await asyncio.sleep(0.3)

        os.kill(control_plane.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(4.0)  # four heartbeat timeouts: every worker sent and waited meanwhile
        finally:
            os.kill(control_plane.pid, signal.SIGCONT)

        infos = await final_infos(client, ids + once)
        workers = {w["worker_id"] for w in await client.workers()}

    assert_each_completed_once({t: infos[t] for t in ids}, completions(done))
    failed = [(t, str(infos[t].error)) for t in once if infos[t].state is not TaskState.SUCCESS]
    assert failed == [], f"{len(failed)} tasks without retries failed after the stall: {failed[:5]}"
    starts = Counter(
        line.split()[1] for line in (once_dir / "executions.log").read_text().splitlines() if line.startswith("start")
    )
    assert starts == Counter({f"o{n}": 1 for n in range(20)})
    assert workers == {"w1", "w2"}, "a healthy worker was declared lost"
    assert "was stalled" in control_plane.log()
    security_report(
        fault="SIGSTOP of the control plane for 4 heartbeat timeouts",
        faults_injected=1,
        tasks_accepted=len(infos),
        tasks_lost=0,
        ran_twice_held=0,
        ran_twice_after_loss=0,
    )


async def _hoard(discovery: str, stop: asyncio.Event, held: list[str]) -> None:
    """A worker that claims 2^32-1 slots, asks for everything, and never runs or reports a task."""
    link = ControlPlaneLink(discovery)
    try:
        await link.wait_for_control_plane(timeout=10)
        answer = await link.register(
            worker_pb2.RegisterRequest(
                worker_id="hoarder",
                host="nowhere",
                pid=1,
                capacity=2**32 - 1,
                incarnation="hoarder-process",
                tasks=[task_pb2.TaskDefinition(name="fwsec.record")],
            )
        )
        assert answer.accepted, answer.reason
        while not stop.is_set():
            dispatch = await link.pull("hoarder", 0.2, held_task_ids=held, prefetch=2**31)
            held.extend(spec.task_id for spec in dispatch.tasks)
    finally:
        link.close()


@pytest.mark.timeout(120)
async def test_a_worker_claiming_absurd_capacity_holds_at_most_the_cap_and_the_honest_worker_runs_the_rest(
    start_cp: StartControlPlane, start_worker: StartWorker, tmp_path: Path
) -> None:
    control_plane = start_cp(*CP_FLAGS, "--max-worker-tasks", "16")
    done = tmp_path / "done"
    done.mkdir()
    stop, held = asyncio.Event(), list[str]()
    hoarder = asyncio.ensure_future(_hoard(control_plane.discovery, stop, held))
    try:
        async with Client(control_plane.discovery) as client:
            while not any(w["worker_id"] == "hoarder" for w in await client.workers()):
                await asyncio.sleep(0.05)
            ids = [await client.delay("fwsec.record", f"t{n}", str(done), 0.0) for n in range(400)]
            await asyncio.sleep(0.5)  # the hoarder asks, and asks again
            await asyncio.to_thread(start_worker, control_plane.discovery, "honest", concurrency=2)
            deadline = time.monotonic() + 60
            while sum(completions(done).values()) < 400 - len(held) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            hoarder_info = next(w for w in await client.workers() if w["worker_id"] == "hoarder")
            # Counted while the hoarder still holds its tasks: once it hangs up they are re-queued
            # and the honest worker runs them too.
            completed_while_held = sum(completions(done).values())
    finally:
        stop.set()
        await asyncio.wait_for(hoarder, 10)

    assert hoarder_info["capacity"] == 16
    assert len(set(held)) <= 16, f"the hoarder was handed {len(set(held))} tasks"
    assert completed_while_held == 400 - len(set(held)) >= 384
    async with Client(control_plane.discovery) as client:  # the hoarder hung up: what it held runs elsewhere
        assert_each_completed_once(await final_infos(client, ids), completions(done))
