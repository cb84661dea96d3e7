"""The journal (``--journal``) across real process deaths: kill -9 the control plane, restart it, lose nothing.

Control planes here run ``--local-concurrency 0`` with ``fwtests_journal_tasks`` (so every task
runs on a subworker), on loopback ports picked up front so that a restart listens on the same
addresses. Each execution of a task creates a file, so "ran exactly once" is counted across
processes. Every process is stopped by pid at teardown.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from fastworker.client import Client, TaskState
from fastworker.controlplane.journal import ACCEPT, MAGIC
from fastworker.controlplane.testing import HarnessError, RunningControlPlane, RunningWorker, start_controlplane
from fastworker.controlplane.testing import start_worker as launch_worker

pytestmark = pytest.mark.slow

BOUND = 30.0
#: Countdown of the scheduled tasks: long enough that they are still SCHEDULED when the control plane dies.
SCHEDULE_IN = 8.0
RECORD = "fwtests_journal.record"
TESTS_DIR = Path(__file__).resolve().parent


def child_env() -> dict[str, str]:
    """This directory first on the children's PYTHONPATH, so that they import the task modules."""
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(part for part in (str(TESTS_DIR), existing) if part)}


def executions(directory: Path) -> Counter[str]:
    """How many times each key ran (fwtests_journal_tasks creates one ``KEY@UNIQUE`` file per execution)."""
    return Counter(name.partition("@")[0] for name in os.listdir(directory))


def free_addresses() -> dict[str, str]:
    """Three free loopback TCP addresses (discovery, client, dispatch), to listen on again after a restart."""
    sockets = [socket.socket() for _ in range(3)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        ports = [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    return {
        name: f"tcp://127.0.0.1:{port}" for name, port in zip(("discovery", "client", "dispatch"), ports, strict=True)
    }


class Daemons:
    """Starts control planes and workers for one test; all are stopped by pid at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.control_planes: list[RunningControlPlane] = []
        self.workers: list[RunningWorker] = []

    def control_plane(
        self,
        journal: Path,
        addresses: dict[str, str],
        *extra_args: str,
        task_modules: tuple[str, ...] = ("fwtests_journal_tasks",),
        env: dict[str, str] | None = None,
    ) -> RunningControlPlane:
        control_plane = start_controlplane(
            task_modules=task_modules,
            extra_args=["--local-concurrency", "0", "--journal", str(journal), *extra_args],
            env={**child_env(), **(env or {})},
            workdir=self.workdir,
            **addresses,
        )
        self.control_planes.append(control_plane)
        return control_plane

    def worker(self, control_plane: RunningControlPlane, worker_id: str, concurrency: int) -> RunningWorker:
        worker = launch_worker(
            control_plane.discovery,
            task_modules=["fwtests_journal_tasks"],
            concurrency=concurrency,
            worker_id=worker_id,
            env=child_env(),
            workdir=self.workdir,
        )
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for daemon in [*self.workers, *self.control_planes]:
            daemon.stop()
        for daemon in [*self.control_planes, *self.workers]:
            print(f"---- pid {daemon.pid} ({' '.join(daemon.argv[3:])}) ----")  # shown when the test failed
            print(daemon.log())


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path)
    yield started
    started.close()


def kill_9(control_plane: RunningControlPlane) -> None:
    """SIGKILL by pid and reap it: no shutdown code runs."""
    os.kill(control_plane.pid, signal.SIGKILL)
    assert control_plane.process.wait(BOUND) == -signal.SIGKILL


async def until(predicate: Callable[[], Any], bound: float = BOUND) -> None:
    async with asyncio.timeout(bound):
        while not await predicate():
            await asyncio.sleep(0.05)


async def states(client: Client, task_ids: list[str]) -> Counter[TaskState]:
    infos = await asyncio.gather(*(client.status(task_id) for task_id in task_ids))
    return Counter(info.state for info in infos)


async def test_kill_9_with_queued_scheduled_and_running_tasks_then_restart_loses_none_and_runs_each_once(
    daemons: Daemons, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    release = tmp_path / "release"
    journal = tmp_path / "cp.journal"
    addresses = free_addresses()
    first = daemons.control_plane(journal, addresses)
    worker = daemons.worker(first, "wa", concurrency=5)

    async with Client(first.discovery) as client:
        # Results written before the crash
        echoes = [await client.delay("fwtests_journal.echo", {"n": i}, priority="high") for i in range(3)]
        assert await client.results(echoes, timeout=BOUND) == [{"n": i} for i in range(3)]
        # 5 running on the worker: 3 with a retry left, 2 without
        retried = [
            await client.delay("fwtests_journal.block_retry", str(runs), f"r{i}", str(release)) for i in range(3)
        ]
        lost = [await client.delay("fwtests_journal.block", str(runs), f"b{i}", str(release)) for i in range(2)]
        await until(lambda: _all_running(client, retried + lost))
        # 1,000 queued and 10 scheduled, on a paused level so that nothing takes them
        assert await client.pause("low")
        queued = await client.delay_many([(RECORD, (str(runs), f"q{i}")) for i in range(1000)], priority="low")
        scheduled = [
            await client.delay(RECORD, str(runs), f"s{i}", priority="low", countdown=SCHEDULE_IN) for i in range(10)
        ]
        assert await states(client, queued) == {TaskState.PENDING: 1000}
        assert await states(client, scheduled) == {TaskState.SCHEDULED: 10}

    # When the control plane is killed with all of that acknowledged, its worker with it (the node
    # died: nobody can adopt what ran there), and it is restarted on the same addresses
    kill_9(first)
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.process.wait(BOUND) == -signal.SIGKILL
    second = daemons.control_plane(journal, addresses)
    assert "journal" in second.log() and "1000 queued" in second.log()
    assert "5 left to their subworkers" in second.log()

    async with Client(second.discovery) as client:
        # Then the results written before the crash are readable
        for i, task_id in enumerate(echoes):
            info = await client.status(task_id)
            assert (info.state, info.result) == (TaskState.SUCCESS, {"n": i})
        # the tasks that were running stay RUNNING while their worker may come back to adopt them,
        # then those without retries fail with a clear reason
        assert await states(client, lost) == {TaskState.RUNNING: 2}
        await until(lambda: _all_final(client, lost))
        for task_id in lost:
            info = await client.status(task_id)
            assert info.state is TaskState.FAILURE
            assert info.error is not None and info.error.type == "ControlPlaneLost"
            assert "on worker wa" in info.error.message and "no retries left" in info.error.message
        # the level is still paused, with the queue intact
        low = next(q for q in await client.queues() if q["priority"] == "low")
        assert low["paused"] and low["depth"] >= 1000

        # When a worker attaches and the work is let go
        daemons.worker(second, "wb", concurrency=8)
        release.touch()
        assert await client.resume("low") is False
        infos = await client.wait_many(queued + scheduled + retried + lost, timeout=120)

    # Then all 1,015 reached a final state
    by_id = {info.id: info for info in infos}
    assert len(by_id) == 1015
    assert all(info.state.is_final for info in infos)
    # the queued and scheduled ones succeeded, each executed exactly once
    ran = executions(runs)
    for task_id in queued + scheduled:
        assert by_id[task_id].state is TaskState.SUCCESS, by_id[task_id]
        assert by_id[task_id].attempts == 1
    assert {key: ran[key] for key in ran if key[0] in "qs"} == {
        **{f"q{i}": 1 for i in range(1000)},
        **{f"s{i}": 1 for i in range(10)},
    }
    # the running ones with a retry left ran again (at least once delivery), those without did not
    assert [by_id[t].state for t in retried] == [TaskState.SUCCESS] * 3
    assert [by_id[t].attempts for t in retried] == [2, 2, 2]
    assert [ran[f"r{i}"] for i in range(3)] == [2, 2, 2]
    assert [by_id[t].state for t in lost] == [TaskState.FAILURE] * 2
    assert [ran[f"b{i}"] for i in range(2)] == [1, 1]


async def test_kill_9_while_the_control_planes_own_slots_run_tasks_runs_none_of_them_twice(
    daemons: Daemons, tmp_path: Path
) -> None:
    # Given a journaled control plane that runs tasks itself, busy with a stream of tasks without retries
    runs = tmp_path / "runs"
    runs.mkdir()
    journal = tmp_path / "cp.journal"
    addresses = free_addresses()
    first = daemons.control_plane(journal, addresses, "--local-concurrency", "2")
    async with Client(first.discovery) as client:
        task_ids = await client.delay_many([(RECORD, (str(runs), f"k{i}")) for i in range(4000)])
        await until(lambda: _ran_some(runs, 500))
    # When it is killed mid-stream and restarted on the same journal
    kill_9(first)
    second = daemons.control_plane(journal, addresses, "--local-concurrency", "2")
    async with Client(second.discovery) as client:
        infos = await client.wait_many(task_ids, timeout=120)
    # Then every task is final, and none ran twice: a task started only once its start was on disk,
    # so the replay never took one that had run for one still queued
    assert all(info.state.is_final for info in infos)
    ran = executions(runs)
    twice = {key: count for key, count in ran.items() if count > 1}
    assert twice == {}, f"{len(twice)} tasks ran twice, e.g. {sorted(twice)[:5]}"
    # those whose start was on disk but not their end (running, or ended just before the kill) failed
    # with the reason, having run once; every other one succeeded
    for i, info in enumerate(infos):
        if info.state is not TaskState.SUCCESS:
            assert info.error is not None and info.error.type == "ControlPlaneLost", info
            assert ran[f"k{i}"] <= 1


async def _ran_some(runs: Path, count: int) -> bool:
    return len(os.listdir(runs)) >= count


async def test_a_replayed_queue_of_tasks_only_subworkers_define_waits_for_them_not_for_local_slots(
    daemons: Daemons, tmp_path: Path
) -> None:
    # Given a journaled control plane with slots of its own, whose queue holds tasks only its
    # subworker defines, waiting behind one the worker is busy with
    runs = tmp_path / "runs"
    runs.mkdir()
    release = tmp_path / "release"
    journal = tmp_path / "cp.journal"
    addresses = free_addresses()
    own = ("--local-concurrency", "1")
    first = daemons.control_plane(journal, addresses, *own, task_modules=("fwtests_tasks",))
    daemons.worker(first, "wq", concurrency=1)
    async with Client(first.discovery) as client:
        busy = await client.delay("fwtests_journal.block_retry", str(runs), "busy", str(release))
        await until(lambda: _all_running(client, [busy]))
        queued = [await client.delay(RECORD, str(runs), f"q{i}") for i in range(10)]
    # When the control plane restarts from its journal
    kill_9(first)
    second = daemons.control_plane(journal, addresses, *own, task_modules=("fwtests_tasks",))
    async with Client(second.discovery) as client:
        await asyncio.sleep(1.0)  # its own slots are free meanwhile: they must not take these
        assert await states(client, queued) == {TaskState.PENDING: 10}
        # Then they run on the subworker once it is back
        release.touch()
        infos = await client.wait_many(queued, timeout=BOUND)
    assert [(info.state, info.worker) for info in infos] == [(TaskState.SUCCESS, "wq")] * 10


async def _all_running(client: Client, task_ids: list[str]) -> bool:
    return await states(client, task_ids) == {TaskState.RUNNING: len(task_ids)}


async def _all_final(client: Client, task_ids: list[str]) -> bool:
    return all(state.is_final for state in await states(client, task_ids))


@pytest.mark.parametrize("ended_before_the_restart", [True, False])
async def test_a_worker_stopped_while_the_control_plane_is_down_hands_its_tasks_to_the_next_one(
    daemons: Daemons, tmp_path: Path, ended_before_the_restart: bool
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    release = tmp_path / "release"
    journal = tmp_path / "cp.journal"
    addresses = free_addresses()
    first = daemons.control_plane(journal, addresses)
    worker = daemons.worker(first, "wa", concurrency=2)
    async with Client(first.discovery) as client:
        tasks = [await client.delay("fwtests_journal.block", str(runs), f"b{i}", str(release)) for i in range(2)]
        await until(lambda: _all_running(client, tasks))

    # When the control plane dies, then its worker is asked to stop (both rolled, or a node drained),
    # and the tasks end during the worker's drain before the control plane is back, or after
    kill_9(first)
    worker.process.send_signal(signal.SIGTERM)
    if ended_before_the_restart:
        release.touch()
    time.sleep(1.0)
    assert worker.process.poll() is None, worker.log()  # it waits for one, within its drain timeout
    second = daemons.control_plane(journal, addresses)
    if not ended_before_the_restart:
        time.sleep(1.0)  # registered again (draining) with the tasks still running
        release.touch()

    # Then the worker registers with the new instance, which adopts the tasks and takes their outcomes
    assert worker.process.wait(BOUND) == 0
    async with Client(second.discovery) as client:
        infos = await client.wait_many(tasks, timeout=BOUND)
    assert [(info.state, info.attempts) for info in infos] == [(TaskState.SUCCESS, 1)] * 2, infos
    assert executions(runs) == {"b0": 1, "b1": 1}
    if ended_before_the_restart:  # it said why it stayed (it looked stuck for its drain timeout)
        assert "outcomes are not delivered yet: offering them for up to" in worker.log()


async def test_a_restarted_control_plane_adopts_what_its_workers_still_run_and_runs_none_of_it_twice(
    daemons: Daemons, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    early, late = tmp_path / "early", tmp_path / "late"
    journal = tmp_path / "cp.journal"
    addresses = free_addresses()
    first = daemons.control_plane(journal, addresses, "--drain-timeout", "0.5")
    daemons.worker(first, "wa", concurrency=4)
    async with Client(first.discovery) as client:
        ends_meanwhile = await client.delay("fwtests_journal.block", str(runs), "e", str(early))
        running = [await client.delay("fwtests_journal.block", str(runs), f"b{i}", str(late)) for i in range(2)]
        with_a_retry = await client.delay("fwtests_journal.block_retry", str(runs), "r", str(late))
        tasks = [ends_meanwhile, *running, with_a_retry]
        await until(lambda: _all_running(client, tasks))

    # When the control plane stops while its worker runs them (a rollout: the drain timeout passes)
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(BOUND) == 0
    # and one of them ends while no control plane listens (its outcome waits in the worker)
    early.touch()
    time.sleep(0.5)
    second = daemons.control_plane(journal, addresses)
    assert "4 left to their subworkers" in second.log()

    async with Client(second.discovery) as client:
        # Then the worker's registration gives them back: the one that ended reports to the new instance
        info = await client.wait(ends_meanwhile, timeout=BOUND)
        assert (info.state, info.attempts, info.worker) == (TaskState.SUCCESS, 1, "wa"), info
        assert await states(client, tasks[1:]) == {TaskState.RUNNING: 3}
        late.touch()
        infos = await client.wait_many(tasks, timeout=BOUND)
    # and each ran once, to success, in its first attempt (none was re-run nor failed ControlPlaneLost)
    assert [(i.state, i.attempts) for i in infos] == [(TaskState.SUCCESS, 1)] * 4, infos
    assert executions(runs) == {"e": 1, "b0": 1, "b1": 1, "r": 1}
    assert "worker wa adopted 4 tasks" in second.log()


async def test_a_graceful_restart_keeps_the_queue_and_the_journal_tools_read_it(
    daemons: Daemons, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    journal = tmp_path / "cp.journal"
    addresses = free_addresses()
    first = daemons.control_plane(journal, addresses)
    async with Client(first.discovery) as client:
        assert await client.pause("normal")
        waiting = await client.delay_many([(RECORD, (str(runs), f"g{i}")) for i in range(50)])
    assert first.stop() == 0

    # The offline tools read (and compact) the journal of the stopped control plane
    tool = [sys.executable, "-m", "fastworker.controlplane", "journal"]
    env = {**os.environ, **child_env()}
    inspected = subprocess.run([*tool, "inspect", "--json", str(journal)], capture_output=True, text=True, env=env)
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["tasks_by_state"] == {"PENDING": 50}
    assert report["paused"] == ["normal"]
    assert report["in_use"] is False
    compacted = subprocess.run([*tool, "compact", str(journal)], capture_output=True, text=True, env=env)
    assert compacted.returncode == 0, compacted.stderr

    second = daemons.control_plane(journal, addresses)
    daemons.worker(second, "w1", concurrency=4)
    async with Client(second.discovery) as client:
        assert await client.resume("normal") is False
        infos = await client.wait_many(waiting, timeout=60)
    assert [info.state for info in infos] == [TaskState.SUCCESS] * 50
    assert executions(runs) == {f"g{i}": 1 for i in range(50)}

    # While a control plane runs on it, the journal is in use: a second one refuses to start
    with pytest.raises(HarnessError, match="in use by another process"):
        daemons.control_plane(journal, free_addresses())
    busy = subprocess.run([*tool, "compact", str(journal)], capture_output=True, text=True, env=env)
    assert busy.returncode == 1 and "in use" in busy.stderr


@pytest.mark.parametrize("policy", ["run_once", "run_all"])
async def test_a_periodic_schedule_resumes_after_a_kill_with_the_misfire_policy(
    daemons: Daemons, tmp_path: Path, policy: str
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    journal = tmp_path / "cp.journal"
    addresses = free_addresses()
    modules = ("fwtests_journal_tasks", "fwtests_journal_periodic")
    env = {"FWTESTS_JOURNAL_DIR": str(runs)}
    first = daemons.control_plane(journal, addresses, "--local-concurrency", "1", task_modules=modules, env=env)
    async with asyncio.timeout(BOUND):
        while executions(runs)["tick"] < 2:
            await asyncio.sleep(0.05)
    kill_9(first)
    # At least two slots pass while nothing runs (beyond the next one, which may have been queued
    # already: a periodic run is queued half a second before its slot here)
    await asyncio.sleep(4.5)

    flags = ("--local-concurrency", "1", "--misfire-policy", policy)
    second = daemons.control_plane(journal, addresses, *flags, task_modules=modules, env=env)

    # The schedule continues from the journaled last run: the slots missed meanwhile are reported and
    # handled by the policy (run once for all of them, or each: a schedule started afresh would miss none)
    async with asyncio.timeout(BOUND):
        while "fwtests_journal.tick' missed" not in second.log():
            await asyncio.sleep(0.05)
    found = re.search(
        rf"'fwtests_journal.tick' missed [2-9]\d* slot\(s\) \({policy}\): (\d+) run now(?:, (\d+) not started)?",
        second.log(),
    )
    assert found, second.log()
    tried = int(found[1]) + int(found[2] or 0)  # not started: the overlap rule (the first is still running)
    assert tried == 1 if policy == "run_once" else tried >= 2


# ------------------------------------------------------------------------ a corrupt journal


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def batches(path: Path) -> list[tuple[int, list[str]]]:
    """Each batch of a sound journal file: its offset and the ids of the tasks its ACCEPT records accept."""
    data = path.read_bytes()
    found, offset = [], len(MAGIC)
    while offset < len(data):
        length = struct.unpack_from("<I", data, offset)[0]
        records = msgpack.unpackb(data[offset + 8 : offset + 8 + length], raw=False)
        found.append((offset, [record[1] for record in records if record[0] == ACCEPT]))
        offset += 8 + length
    return found


def journal_tool(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fastworker.controlplane", "journal", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **child_env()}, timeout=BOUND)


async def test_a_bit_flip_in_a_mid_file_batch_length_refuses_start_and_salvage_keeps_the_rest(
    daemons: Daemons, tmp_path: Path
) -> None:
    # Given 20 acknowledged tasks in a killed control plane's journal, one flipped bit in a mid-file batch length
    runs = tmp_path / "runs"
    runs.mkdir()
    journal = tmp_path / "cp.journal"
    addresses = free_addresses()
    first = daemons.control_plane(journal, addresses)
    async with Client(first.discovery) as client:
        task_ids = [await client.delay(RECORD, str(runs), f"t{i}") for i in range(20)]
    kill_9(first)
    written = batches(journal)
    bad_index = next(i for i, (_, ids) in enumerate(written) if task_ids[2] in ids)
    bad, lost = written[bad_index]
    after = [task_id for _, ids in written[bad_index + 1 :] for task_id in ids]
    assert len(after) >= 10  # valid batches follow the bad one
    data = bytearray(journal.read_bytes())
    data[bad + 2] ^= 0x10  # bit 20 of the length: it now points 1 MiB past the end of the file
    journal.write_bytes(bytes(data))
    digest = sha256(journal)

    # When it is restarted, Then it exits non-zero naming the offset, and the file is byte-identical
    with pytest.raises(HarnessError, match=rf"(?s)exited with 1 .*corrupt batch at offset {bad} "):
        daemons.control_plane(journal, addresses)
    assert sha256(journal) == digest
    assert not list(tmp_path.glob("cp.journal.compact*"))

    # When what is readable is salvaged into a new file
    salvaged = tmp_path / "salvaged.journal"
    result = journal_tool("salvage", str(journal), str(salvaged))
    assert result.returncode == 0, result.stderr
    assert f"offset {bad}: " in result.stdout and f"{20 - len(lost)} tasks" in result.stdout
    assert sha256(journal) == digest

    # Then a control plane on the salvaged file has every task but the bad batch's, those after it included
    second = daemons.control_plane(salvaged, addresses)
    async with Client(second.discovery) as client:
        kept = [task_id for task_id in task_ids if task_id not in lost]
        assert await states(client, kept) == {TaskState.PENDING: len(kept)}
        assert set(after) <= set(kept)
        assert sum(q["depth"] for q in await client.queues()) == len(kept)


def limit_file_size() -> None:
    """In the child: files may not grow past 64 KiB, and going beyond fails with EFBIG instead of a signal."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


async def test_a_disk_that_refuses_to_grow_the_journal_stops_start_up_naming_it_and_leaves_no_stray_files(
    daemons: Daemons, tmp_path: Path
) -> None:
    # Given a journal of about 600 KiB
    runs = tmp_path / "runs"
    runs.mkdir()
    journal = tmp_path / "cp.journal"
    first = daemons.control_plane(journal, free_addresses())
    async with Client(first.discovery) as client:
        await client.delay_many([(RECORD, (str(runs), f"{i:04d}" + "x" * 2000)) for i in range(300)])
    kill_9(first)
    assert journal.stat().st_size > 500_000
    digest = sha256(journal)

    # When a control plane starts on it in a process whose files may not grow past 64 KiB
    argv = [
        sys.executable,
        "-m",
        "fastworker.controlplane",
        "--no-dashboard",
        "--no-metrics",
        "--local-concurrency",
        "0",
    ]
    argv += ["--task-modules", "fwtests_journal_tasks", "--journal", str(journal)]
    for name, address in free_addresses().items():
        argv += [f"--{name}-address", address]
    log = tmp_path / "limited.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            argv, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **child_env()}, preexec_fn=limit_file_size
        )
    try:
        returncode = process.wait(BOUND)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(BOUND)

    # Then it exits non-zero naming the journal and the error, the journal is as it was, nothing is left behind
    text = log.read_text()
    assert returncode == 1, text
    assert f"journal {journal}: cannot write its snapshot" in text and "File too large" in text
    assert sha256(journal) == digest
    assert not list(tmp_path.glob("cp.journal.compact*"))
