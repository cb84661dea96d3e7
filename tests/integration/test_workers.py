"""Subworkers: dispatch across a fleet, loss and recovery, drain, crashes and limits, routing by task name.

Every test but the usage check runs a control plane that executes nothing itself
(``--local-concurrency 0``, no task modules) and real ``fastworker-worker`` processes that load
``fwtests_worker_tasks`` (see the ``start_cp_for_workers`` and ``start_worker`` fixtures). Tasks report the worker that ran them;
those that must prove "exactly once" leave files behind (see the task module).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import Client, TaskState, TaskTimeout, UnknownTask
from fastworker.client.errors import FastworkerError
from fastworker.controlplane.testing import RunningWorker
from fastworker.worker._heap import YOUNG_THRESHOLD

#: Tasks in the no-loss test.
MANY = 5_000
#: Longest the fleet may take to recover from a lost worker or a restarted control plane, in seconds.
RECOVERY_BOUND = 5.0
#: The liveness settings of the heartbeat test's control plane.
HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 1.0


async def start_workers(start_worker: Any, control_plane: Any, *ids: str, **kwargs: Any) -> list[RunningWorker]:
    """Start several workers at once (each waits for its own registration); returns them in order."""
    return list(await asyncio.gather(*(asyncio.to_thread(start_worker, control_plane, i, **kwargs) for i in ids)))


async def worker_ids(client: Client) -> set[str]:
    """The ids of the workers the control plane lists now."""
    return {worker["worker_id"] for worker in await client.workers()}


async def wait_for_workers(client: Client, expected: Iterable[str], timeout: float) -> float:
    """Poll ``client.workers()`` until it lists exactly ``expected`` (bounded); returns the seconds it took.

    Requests that fail while the control plane is away are retried until the deadline.
    """
    wanted = set(expected)
    started = time.monotonic()
    deadline = started + timeout
    seen: set[str] | str = "nothing yet"
    while True:
        try:
            async with asyncio.timeout(max(0.05, deadline - time.monotonic())):
                seen = await worker_ids(client)
        except (FastworkerError, TimeoutError) as exc:
            seen = f"{type(exc).__name__}: {exc}"
        if seen == wanted:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            pytest.fail(f"workers {sorted(wanted)} not listed within {timeout:g} s (last: {seen})")
        await asyncio.sleep(0.05)


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals that are open at one moment (one ending as another starts does not overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


async def test_two_workers_run_five_thousand_tasks_with_none_lost_wrong_or_run_twice(
    start_cp_for_workers, start_worker, make_client, tmp_path
):
    control_plane = start_cp_for_workers("--result-cache-size", str(4 * MANY))
    workers = await start_workers(start_worker, control_plane, "w1", "w2", concurrency=4)
    client = make_client(control_plane)
    logs = tmp_path / "executions"
    logs.mkdir()
    arguments = list(range(MANY))

    ids = await client.delay_many([("fwtests_worker.record", (n, str(logs))) for n in arguments])
    infos = await client.wait_many(ids, timeout=90)

    assert len(set(ids)) == MANY
    assert [info.id for info in infos] == ids
    lost = [(n, info.state, info.error) for n, info in zip(arguments, infos, strict=True) if info.state != "SUCCESS"]
    assert lost == []
    wrong = [
        (n, info.result, info.worker)
        for n, info in zip(arguments, infos, strict=True)
        if info.result != [n, info.worker]
    ]
    assert wrong == []
    # Every execution left one line in its process's log: each argument exactly once, none extra.
    executions = Counter(int(line) for log in logs.iterdir() for line in log.read_text().splitlines())
    assert sum(executions.values()) == MANY
    assert [n for n, count in executions.items() if count != 1] == []
    assert set(executions) == set(arguments)
    ran_on = Counter(info.worker for info in infos)
    assert set(ran_on) == {w.worker_id for w in workers}, ran_on
    assert all(info.attempts == 1 for info in infos)


async def test_least_loaded_dispatch_never_runs_more_than_a_workers_concurrency_and_splits_evenly(
    start_cp_for_workers, start_worker, make_client
):
    control_plane = start_cp_for_workers()
    await start_workers(start_worker, control_plane, "w1", "w2", concurrency=2)
    client = make_client(control_plane)

    ids = await client.delay_many([("fwtests_worker.interval", (1.0,))] * 8)
    infos = await client.wait_many(ids, timeout=20)

    assert [info.state for info in infos] == [TaskState.SUCCESS] * 8
    assert [info.result[0] for info in infos] == [info.worker for info in infos]
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for info in infos:
        worker, started, ended = info.result
        by_worker.setdefault(worker, []).append((started, ended))
    assert {worker: max_overlap(spans) for worker, spans in by_worker.items()} == {"w1": 2, "w2": 2}
    assert {worker: len(spans) for worker, spans in by_worker.items()} == {"w1": 4, "w2": 4}


async def test_a_worker_killed_mid_task_has_its_tasks_rerun_once_on_the_survivor_or_failed_as_worker_lost(
    start_cp_for_workers, start_worker, make_client, wait_for_state, tmp_path
):
    # (A dead worker is found by its silence, as a cut-off one: within the heartbeat timeout, 1 s here.)
    control_plane = start_cp_for_workers(
        "--heartbeat-interval", str(HEARTBEAT_INTERVAL), "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT)
    )
    workers = await start_workers(start_worker, control_plane, "w1", "w2", concurrency=10)
    client = make_client(control_plane)
    markers = tmp_path / "finished"
    markers.mkdir()

    # A task with no retries goes first: the worker that runs it is the one to kill.
    doomed = await client.delay("fwtests_worker.sleep_no_retry", 30.0)
    doomed_info = await wait_for_state(client, doomed, TaskState.RUNNING)
    victim = next(w for w in workers if w.worker_id == doomed_info.worker)
    survivor = next(w for w in workers if w is not victim)

    keys = [f"k{i:02d}" for i in range(20)]
    ids = await client.delay_many([("fwtests_worker.finish_once", (key, 1.0, str(markers))) for key in keys])
    # Wait until the victim runs its share (9 free slots), then let them get well into their second.
    deadline = time.monotonic() + 10
    while True:
        infos = [await client.status(task_id) for task_id in ids]
        on_victim = [i for i in infos if i.state is TaskState.RUNNING and i.worker == victim.worker_id]
        if len(on_victim) == 9:
            break
        assert time.monotonic() < deadline, f"the victim runs {len(on_victim)} tasks, not 9: {infos}"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.4)
    assert not any(markers.iterdir())  # nothing finished yet

    killed_at = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.to_thread(victim.process.wait, 5)

    infos = await client.wait_many(ids, timeout=15)
    assert [(info.state, info.error) for info in infos] == [(TaskState.SUCCESS, None)] * 20
    assert [info.result for info in infos] == [[key, survivor.worker_id] for key in keys]
    assert {info.worker for info in infos} == {survivor.worker_id}
    attempts = Counter(info.attempts for info in infos)
    assert attempts == {1: 11, 2: 9}, attempts  # the victim's 9 ran a second time, nothing ran a third
    last = max(info.finished_at or 0.0 for info in infos)
    assert last - killed_at <= RECOVERY_BOUND, f"the last task finished {last - killed_at:.2f} s after the kill"
    # Each key finished exactly once (a second finish would have failed on its O_EXCL marker).
    assert sorted(path.name for path in markers.iterdir()) == keys
    assert {path.read_text() for path in markers.iterdir()} == {survivor.worker_id}

    lost = await client.wait(doomed, timeout=10)
    assert lost.state is TaskState.FAILURE
    assert lost.error is not None and lost.error.type == "WorkerLost", lost.error
    assert lost.attempts == 1
    assert await worker_ids(client) == {survivor.worker_id}


class CuttableLink:
    """A TCP relay from ``127.0.0.2:PORT`` to ``127.0.0.1:PORT`` whose connections the test can cut.

    A control plane bound on 127.0.0.1 that announces ``--advertise-host 127.0.0.2`` is dialed
    through it; :meth:`cut` closes every relayed connection at once, as a reset link or a NAT
    timeout does, while both processes stay healthy.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.2", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [writer, upstream_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    def cut(self) -> int:
        """Close every relayed connection (both ends); returns how many there were."""
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.transport.abort()
        return len(writers) // 2

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


def free_loopback_port() -> int:
    """A TCP port free on both 127.0.0.1 and 127.0.0.2."""
    while True:
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.2", port))
                except OSError:
                    continue
        return port


async def test_a_cut_connection_of_a_healthy_worker_fails_nothing_and_runs_nothing_twice(
    start_cp_for_workers, start_worker, make_client, wait_for_state, tmp_path
):
    # Given a worker that reaches the control plane's dispatch and client ports through a link
    # that can be cut, running a task without retries and one with a retry
    dispatch_port, client_port = free_loopback_port(), free_loopback_port()
    links = [CuttableLink(dispatch_port), CuttableLink(client_port)]
    for link in links:
        await link.start()
    stoppable: list[Any] = []
    try:
        control_plane = start_cp_for_workers(
            "--advertise-host",
            "127.0.0.2",
            client=f"tcp://127.0.0.1:{client_port}",
            dispatch=f"tcp://127.0.0.1:{dispatch_port}",
        )
        stoppable.append(control_plane)
        stoppable.append(await asyncio.to_thread(start_worker, control_plane, "w-cut", concurrency=2))
        client = make_client(control_plane)
        markers = tmp_path / "runs"
        markers.mkdir()
        no_retry = await client.delay("fwtests_worker.sleep_no_retry", 3.0)
        with_retry = await client.delay("fwtests_worker.marked", "k", 3.0, str(markers))
        for task_id in (no_retry, with_retry):
            await wait_for_state(client, task_id, TaskState.RUNNING)

        # When the worker's connection is cut (both processes healthy; the worker dials again)
        assert links[0].cut() >= 1

        # Then the worker resumes its registration: both tasks succeed at their first attempt, each run once
        infos = await client.wait_many([no_retry, with_retry], timeout=20)
        assert [(i.state, i.attempts, i.error) for i in infos] == [(TaskState.SUCCESS, 1, None)] * 2
        assert len(list(markers.glob("*.started"))) == 1
        stats = await client.stats()
        assert stats["workers_lost"] == 0
        assert await worker_ids(client) == {"w-cut"}
        assert "resumed its registration" in control_plane.log()
    finally:
        for process in reversed(stoppable):  # (by pid, while the links still carry their goodbyes)
            await asyncio.to_thread(process.stop)
        for link in links:
            await link.close()


async def test_a_worker_restarted_under_its_id_right_after_kill_9_joins_once_the_old_one_is_lost_and_reruns_its_task(
    start_cp_for_workers, start_worker, make_client, wait_for_state, tmp_path
):
    # Given w1 running a task with a retry left
    control_plane = start_cp_for_workers("--heartbeat-interval", "0.5", "--heartbeat-timeout", "3")
    first = start_worker(control_plane, "w1", concurrency=1)
    client = make_client(control_plane)
    task_id = await client.delay("fwtests_worker.marked", "k", 1.5, str(tmp_path))
    await wait_for_state(client, task_id, TaskState.RUNNING)
    async with asyncio.timeout(10):
        while not list(tmp_path.glob("k.*.started")):  # its code runs (its child process started)
            await asyncio.sleep(0.02)

    # When it is killed and a supervisor starts it again at once, under the same id
    os.kill(first.pid, signal.SIGKILL)
    await asyncio.to_thread(first.process.wait, 5)
    second = await asyncio.to_thread(start_worker, control_plane, "w1", concurrency=1)

    # Then the new process was told to wait for the old one to be found lost, not refused for good
    # (exit 3, staying down), and it re-runs the task; the old process's start is the one attempt lost
    assert second.process.poll() is None
    assert "registration deferred: worker id 'w1' is still held by the process before this one" in second.log()
    info = await client.wait(task_id, timeout=20)
    assert (info.state, info.result, info.attempts) == (TaskState.SUCCESS, "w1", 2)
    assert len(list(tmp_path.glob("k.*.started"))) == 2 and len(list(tmp_path.glob("k.*.finished"))) == 1
    assert "in use by a live worker" not in control_plane.log()


async def test_workers_and_an_existing_client_find_a_control_plane_restarted_after_kill_9_within_five_seconds(
    start_cp_for_workers, start_worker, make_client
):
    first = start_cp_for_workers()
    workers = await start_workers(start_worker, first, "w1", "w2", concurrency=2)
    names = {w.worker_id for w in workers}
    client = make_client(first)
    await wait_for_workers(client, names, timeout=5)
    assert await client.submit("fwtests_worker.whoami", timeout=10) in names

    os.kill(first.pid, signal.SIGKILL)
    await asyncio.to_thread(first.process.wait, 5)
    second = await asyncio.to_thread(
        start_cp_for_workers, discovery=first.discovery, client=first.client, dispatch=first.dispatch
    )
    restarted = time.monotonic()
    assert (second.discovery, second.client, second.dispatch) == (first.discovery, first.client, first.dispatch)

    took = await wait_for_workers(client, names, timeout=RECOVERY_BOUND)
    remaining = RECOVERY_BOUND - (time.monotonic() - restarted)
    assert remaining > 0, f"the workers took {took:.2f} s to re-register"
    async with asyncio.timeout(remaining + 2):
        task_id = await client.delay("fwtests_worker.whoami")
        try:
            info = await client.wait(task_id, timeout=max(0.0, RECOVERY_BOUND - (time.monotonic() - restarted)))
        except TaskTimeout:
            info = await client.status(task_id)
    elapsed = time.monotonic() - restarted
    assert info.state is TaskState.SUCCESS, f"{elapsed:.2f} s after the restart the task is {info}"
    assert info.result in names
    assert elapsed <= RECOVERY_BOUND
    assert all(w.process.poll() is None for w in workers)
    assert (await client.stats())["submitted"] == 1  # counted by the new control plane


async def test_sigterm_drains_a_worker_whose_task_finishes_while_new_tasks_go_to_the_other_worker(
    start_cp_for_workers, start_worker, make_client, wait_for_state
):
    control_plane = start_cp_for_workers()
    workers = await start_workers(start_worker, control_plane, "w1", "w2", concurrency=2)
    client = make_client(control_plane)

    long_task = await client.delay("fwtests_worker.sleep_for", 2.0)
    running = await wait_for_state(client, long_task, TaskState.RUNNING)
    draining = next(w for w in workers if w.worker_id == running.worker)
    other = next(w for w in workers if w is not draining)

    stopping = asyncio.ensure_future(asyncio.to_thread(draining.stop, 20))
    # The drain is visible to the control plane before anything else is submitted.
    deadline = time.monotonic() + 2
    while True:
        listed = {w["worker_id"]: w for w in await client.workers()}
        if listed.get(draining.worker_id, {}).get("draining"):
            break
        assert time.monotonic() < deadline, f"the worker is not listed as draining: {listed}"
        await asyncio.sleep(0.02)
    during = await client.delay_many([("fwtests_worker.whoami", ())] * 6)
    infos = await client.wait_many(during, timeout=10)
    assert [(info.state, info.worker, info.result) for info in infos] == [
        (TaskState.SUCCESS, other.worker_id, other.worker_id)
    ] * 6

    assert await asyncio.wait_for(stopping, 25) == 0
    finished = await client.wait(long_task, timeout=10)
    assert (finished.state, finished.worker, finished.result) == (
        TaskState.SUCCESS,
        draining.worker_id,
        draining.worker_id,
    )
    assert finished.attempts == 1
    # The other tasks were submitted while the long one was still running on the draining worker.
    assert finished.finished_at is not None
    assert all(info.queued_at is not None and info.queued_at < finished.finished_at for info in infos)
    await wait_for_workers(client, {other.worker_id}, timeout=5)
    # Its outcome went at once to a control plane that answers: no warning that it waits (there was one).
    assert "not delivered yet" not in draining.log() and "WARNING" not in draining.log(), draining.log()


async def test_a_task_that_aborts_its_process_fails_as_worker_crashed_and_the_same_worker_runs_the_next_task(
    start_cp_for_workers, start_worker, make_client
):
    control_plane = start_cp_for_workers()
    worker = start_worker(control_plane, "w1", concurrency=1)
    client = make_client(control_plane)

    crashed = await client.wait(await client.delay("fwtests_worker.abort"), timeout=10)
    assert crashed.state is TaskState.FAILURE
    assert crashed.error is not None and crashed.error.type == "WorkerCrashed", crashed.error
    assert crashed.worker == worker.worker_id

    after = await client.wait(await client.delay("fwtests_worker.whoami"), timeout=15)
    assert (after.state, after.worker, after.result) == (TaskState.SUCCESS, worker.worker_id, worker.worker_id)
    assert worker.process.poll() is None
    assert await worker_ids(client) == {worker.worker_id}


async def test_a_worker_killed_mid_task_takes_down_the_processes_its_task_started(
    start_cp_for_workers, start_worker, make_client, tmp_path
):
    control_plane = start_cp_for_workers()
    worker = start_worker(control_plane, "w1", concurrency=1)
    client = make_client(control_plane)
    pid_file = tmp_path / "sleeper.pid"
    await client.delay("fwtests_worker.spawn_and_hang", str(pid_file))
    deadline = time.monotonic() + 15
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the task did not start its subprocess in time"
        await asyncio.sleep(0.02)
    sleeper = int(pid_file.read_text())
    try:
        assert not _ended(sleeper)

        os.kill(worker.pid, signal.SIGKILL)
        await asyncio.to_thread(worker.process.wait, 5)

        deadline = time.monotonic() + 5
        while not _ended(sleeper):
            assert time.monotonic() < deadline, "the task's subprocess outlived its worker"
            await asyncio.sleep(0.02)
    finally:
        if not _ended(sleeper):
            os.kill(sleeper, signal.SIGKILL)


async def test_a_task_that_crashes_a_threads_pool_worker_ends_worker_lost_and_leaves_its_stack_in_the_log(
    start_cp_for_workers, start_worker, make_client
):
    # With --pool threads the task runs in the worker process: a crash takes the worker down before it
    # can log a line, and the control plane sees only the worker vanish.
    control_plane = start_cp_for_workers(
        "--heartbeat-interval", str(HEARTBEAT_INTERVAL), "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT)
    )
    worker = start_worker(control_plane, "w1", "--pool", "threads", concurrency=1)
    client = make_client(control_plane)

    crashed = await client.wait(await client.delay("fwtests_worker.abort"), timeout=15)
    # The task ends WorkerLost once the heartbeat timeout passed (not WorkerCrashed: no child died)
    assert crashed.state is TaskState.FAILURE
    assert crashed.error is not None and crashed.error.type == "WorkerLost", crashed.error
    # the worker still dies by the task's signal, as a supervisor expects
    assert await asyncio.to_thread(worker.process.wait, 10) == -signal.SIGABRT
    # and its log holds the stack of the thread that crashed, naming the task's function
    log = worker.log()
    assert "Fatal Python error: Aborted" in log, log
    assert re.search(r'File ".*fwtests_worker_tasks\.py", line \d+ in abort', log), log


async def test_a_task_past_its_hard_time_limit_fails_within_three_seconds_and_the_worker_keeps_serving(
    start_cp_for_workers, start_worker, make_client
):
    control_plane = start_cp_for_workers()
    worker = start_worker(control_plane, "w1", concurrency=1)
    client = make_client(control_plane)

    submitted = time.monotonic()
    task_id = await client.delay("fwtests_worker.hang")
    info = await client.wait(task_id, timeout=10)
    elapsed = time.monotonic() - submitted

    assert info.state is TaskState.FAILURE
    assert info.error is not None and info.error.type == "TimeLimitExceeded", info.error
    assert elapsed <= 3.0, f"the time limit ended the task after {elapsed:.2f} s"
    assert info.started_at is not None and info.finished_at is not None
    assert 1.0 <= info.finished_at - info.started_at <= 3.0
    assert await client.submit("fwtests_worker.whoami", timeout=15) == worker.worker_id
    assert await worker_ids(client) == {worker.worker_id}


async def test_only_a_worker_that_registered_a_task_runs_it(start_cp_for_workers, start_worker, make_client):
    control_plane = start_cp_for_workers()
    worker_a, worker_b = await asyncio.gather(
        asyncio.to_thread(
            start_worker,
            control_plane,
            "worker-a",
            task_modules=("fwtests_worker_tasks", "fwtests_worker_tasks_a"),
            concurrency=2,
        ),
        asyncio.to_thread(start_worker, control_plane, "worker-b", concurrency=2),
    )
    client = make_client(control_plane)
    await wait_for_workers(client, {"worker-a", "worker-b"}, timeout=5)

    ids = await client.delay_many([("fwtests_worker.only_a", ())] * 20)
    infos = await client.wait_many(ids, timeout=20)

    assert [(info.state, info.worker, info.result) for info in infos] == [
        (TaskState.SUCCESS, worker_a.worker_id, worker_a.worker_id)
    ] * 20
    # Worker B was free all along: it runs the tasks it has.
    assert await client.submit("fwtests_worker.whoami", timeout=10) in {worker_a.worker_id, worker_b.worker_id}


async def test_an_unknown_task_is_refused_at_submit_until_a_worker_that_has_it_registers(
    start_cp_for_workers, start_worker, make_client
):
    control_plane = start_cp_for_workers()
    client = make_client(control_plane)
    with pytest.raises(UnknownTask):
        await client.delay("fwtests_worker.only_a")

    start_worker(control_plane, "worker-b", concurrency=1)
    assert await client.submit("fwtests_worker.whoami", timeout=10) == "worker-b"
    with pytest.raises(UnknownTask):
        await client.delay("fwtests_worker.only_a")
    with pytest.raises(UnknownTask):
        await client.submit("fwtests_worker.only_a", timeout=5)

    start_worker(
        control_plane, "worker-a", task_modules=("fwtests_worker_tasks", "fwtests_worker_tasks_a"), concurrency=1
    )
    task_id = await client.delay("fwtests_worker.only_a")
    assert await client.result(task_id, timeout=10) == "worker-a"


async def test_a_worker_that_stops_heartbeating_is_dropped_its_task_rerun_elsewhere_and_its_late_result_ignored(
    start_cp_for_workers, start_worker, make_client, wait_for_state, tmp_path
):
    control_plane = start_cp_for_workers(
        "--heartbeat-interval", str(HEARTBEAT_INTERVAL), "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT)
    )
    workers = await start_workers(start_worker, control_plane, "w1", "w2", concurrency=2)
    client = make_client(control_plane)
    markers = tmp_path / "executions"
    markers.mkdir()

    task_id = await client.delay("fwtests_worker.marked", "t", 2.0, str(markers))
    first_run = await wait_for_state(client, task_id, TaskState.RUNNING)
    frozen = next(w for w in workers if w.worker_id == first_run.worker)
    other = next(w for w in workers if w is not frozen)
    deadline = time.monotonic() + 5
    while not any(path.name.endswith(".started") for path in markers.iterdir()):  # its execution has begun
        assert time.monotonic() < deadline, "the task never started"
        await asyncio.sleep(0.02)

    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        took = await wait_for_workers(client, {other.worker_id}, timeout=HEARTBEAT_TIMEOUT + 3)
        assert took <= HEARTBEAT_TIMEOUT + 2 * HEARTBEAT_INTERVAL + 0.5, f"dropped after {took:.2f} s"

        rerun = await client.wait(task_id, timeout=10)
        assert (rerun.state, rerun.worker, rerun.result) == (TaskState.SUCCESS, other.worker_id, other.worker_id)
        assert rerun.attempts == 2
        # The frozen worker's pool process was not stopped: its execution finishes, its result waits.
        deadline = time.monotonic() + 5
        while len(finished := [p.name for p in markers.iterdir() if p.name.endswith(".finished")]) < 2:
            assert time.monotonic() < deadline, f"executions finished: {finished}"
            await asyncio.sleep(0.05)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)

    await wait_for_workers(client, {frozen.worker_id, other.worker_id}, timeout=10)
    await asyncio.sleep(2 * HEARTBEAT_INTERVAL + 0.5)  # time enough for a late result to arrive
    final = await client.status(task_id)
    assert (final.state, final.worker, final.result, final.attempts, final.finished_at) == (
        TaskState.SUCCESS,
        other.worker_id,
        other.worker_id,
        2,
        rerun.finished_at,
    )
    # One execution per worker, each started and finished once.
    executions = Counter(name.split(".")[1] for name in (p.name for p in markers.iterdir()))
    assert executions == {frozen.worker_id: 2, other.worker_id: 2}
    assert frozen.process.poll() is None
    assert await client.submit("fwtests_worker.whoami", timeout=10) in {frozen.worker_id, other.worker_id}


async def test_a_resumed_worker_whose_id_was_taken_meanwhile_exits_at_once_not_after_its_drain_timeout(
    start_cp_for_workers, start_worker, make_client, wait_for_state, tmp_path
):
    # It spent its whole drain timeout (30 s) offering outcomes the control plane had settled without
    # it, logging each refusal, instead of exiting 3 as a duplicate id does.
    control_plane = start_cp_for_workers(
        "--heartbeat-interval", str(HEARTBEAT_INTERVAL), "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT)
    )
    frozen = await asyncio.to_thread(start_worker, control_plane, "w1", "--drain-timeout", "30", concurrency=1)
    client = make_client(control_plane)
    markers = tmp_path / "executions"
    markers.mkdir()
    task_id = await client.delay("fwtests_worker.marked", "t", 1.0, str(markers))
    await wait_for_state(client, task_id, TaskState.RUNNING)
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        await wait_for_workers(client, set(), timeout=HEARTBEAT_TIMEOUT + 5)
        await asyncio.to_thread(start_worker, control_plane, "w1")  # a new process under the same id
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    # Its run ends meanwhile, and its outcome waits: the control plane settled the task without it.
    assert await asyncio.to_thread(frozen.process.wait, 15) == 3
    log = frozen.log()
    assert log.count("the control plane refused this worker") == 1, log
    assert "its worker id is in use by another live worker" in log


async def test_pool_threads_runs_sync_tasks_in_the_worker_process_and_pool_processes_in_a_child(
    start_cp_for_workers, start_worker, make_client
):
    control_plane = start_cp_for_workers()
    workers = await asyncio.gather(
        asyncio.to_thread(start_worker, control_plane, "threads", "--pool", "threads", concurrency=1),
        asyncio.to_thread(start_worker, control_plane, "processes", "--pool", "processes", concurrency=1),
    )
    client = make_client(control_plane)
    pid_of = {worker.worker_id: worker.pid for worker in workers}

    # Each worker runs one task at a time: the control plane gives the four to both of them.
    ids = await client.delay_many([("fwtests_worker.pid", (0.3,))] * 4)
    infos = await client.wait_many(ids, timeout=20)

    assert [info.state for info in infos] == [TaskState.SUCCESS] * 4
    ran: dict[str, set[int]] = {}
    for info in infos:
        ran.setdefault(info.worker, set()).add(info.result)
    assert set(ran) == {"threads", "processes"}, ran
    assert ran["threads"] == {pid_of["threads"]}
    assert not ran["processes"] & set(pid_of.values())  # a child process of the worker


async def test_both_daemons_freeze_their_start_up_heap_and_collect_young_objects_in_larger_steps(
    start_cp, start_cp_for_workers, start_worker, make_client
):
    """The control plane and a subworker call ``settle_heap`` once started (a task on their own threads reads it)."""
    threshold, frozen = await make_client(start_cp()).submit("fwtests.heap", timeout=10)
    assert threshold == YOUNG_THRESHOLD and frozen > 1000, (threshold, frozen)

    control_plane = start_cp_for_workers()
    await asyncio.to_thread(start_worker, control_plane, "threads", "--pool", "threads", concurrency=1)
    threshold, frozen = await make_client(control_plane).submit("fwtests_worker.heap", timeout=20)
    assert threshold == YOUNG_THRESHOLD and frozen > 1000, (threshold, frozen)


def _worker_env() -> dict[str, str]:
    """The environment of a worker started by hand: no FASTWORKER_* of this process, the test tasks importable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTWORKER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(Path(__file__).parent), env.get("PYTHONPATH"))))
    return env


def test_pool_threads_refuses_the_child_process_flags_as_a_usage_error(tmp_path):
    env = _worker_env()
    worker = [sys.executable, "-m", "fastworker.worker", "--task-modules", "fwtests_worker_tasks"]

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*worker, *args], env={**env, **extra_env}, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    def error(done: subprocess.CompletedProcess[str]) -> str:
        assert done.returncode == 2, done.stderr
        return done.stderr.splitlines()[-1]  # after the usage text

    assert error(run("--pool", "threads", "--max-tasks-per-child", "5")) == (
        "fastworker-worker: error: --pool threads takes no --max-tasks-per-child: threads are never replaced "
        "(these apply to --pool processes)"
    )
    by_env = error(run("--max-child-rss", "100", "--max-tasks-per-child", "5", FASTWORKER_POOL="threads"))
    assert "--pool threads takes no --max-tasks-per-child or --max-child-rss" in by_env
    assert "fibers" in error(run("--pool", "fibers"))
    # An empty id (an unset variable) and a malformed control-plane address are named, not defaulted or a traceback.
    assert "--worker-id cannot be empty" in error(run("--worker-id", ""))
    assert "--worker-id cannot be empty" in error(run(FASTWORKER_WORKER_ID=""))
    # An id is a path segment of the dashboard's URLs ("../" drained another worker) and a log field.
    for bad in ("../workers/victim", "..", "line\nbreak", "rtl\u202e"):
        assert "--worker-id: worker_id must be printable characters without '/'" in error(run("--worker-id", bad))
    # The control plane's own runs are labelled "controlplane": a subworker taking it would hide among them.
    assert "--worker-id: worker_id 'controlplane' is reserved" in error(run("--worker-id", "controlplane"))
    assert "--control-plane: unsupported address 'garbage'" in error(run("--control-plane", "garbage"))
    assert "port out of range" in error(run("--control-plane", "tcp://127.0.0.1:70000"))
    assert "expected a number of seconds" in error(run("--drain-timeout", "nan"))
    assert "uses TLS: give the CA bundle (--tls-ca)" in error(run("--control-plane", "tls+tcp://127.0.0.1:5550"))
    # Numbers out of range name the flag the user typed (not a traceback about max_rss_bytes)
    assert error(run("--max-child-rss", "-5")).endswith("--max-child-rss must be 0 (no limit) or more MB, got -5")
    assert "--max-tasks-per-child must be 0 (never) or more, got -1" in error(run("--max-tasks-per-child", "-1"))
    assert "--concurrency must be 1..10,000, got 10001" in error(run("--concurrency", "10001"))


def test_a_worker_whose_schedule_the_control_plane_refuses_exits_1_naming_it_instead_of_retrying(
    tmp_path, start_cp_for_workers
):
    # Out of range: refused at import, as any module that fails to load. Never matching (February
    # 31st): only the control plane's cron library can tell, and registering again cannot help.
    control_plane = start_cp_for_workers()
    (tmp_path / "fwtests_bad_cron_range.py").write_text(
        'from fastworker.client import task\n@task(cron="61 * * * *")\ndef tick() -> None: ...\n'
    )
    (tmp_path / "fwtests_bad_cron_never.py").write_text(
        'from fastworker.client import task\n@task(cron="0 0 31 2 *")\ndef tick() -> None: ...\n'
    )
    env = {**_worker_env(), "PYTHONPATH": os.pathsep.join((str(tmp_path), _worker_env()["PYTHONPATH"]))}

    def run(module: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "fastworker.worker", "--task-modules", module]
        argv += ["--control-plane", control_plane.discovery]
        return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    out_of_range = run("fwtests_bad_cron_range")
    assert out_of_range.returncode == 1, out_of_range.stderr
    assert "61 is out of the minute field's range (0-59)" in out_of_range.stderr
    never = run("fwtests_bad_cron_never")
    assert never.returncode == 1, never.stderr
    assert "the control plane refused this worker" in never.stderr and "never matches" in never.stderr
    assert never.stderr.count("the control plane refused this worker") == 1  # no retry


def test_sigterm_while_the_pool_starts_stops_the_worker_at_once_with_exit_0(tmp_path):
    # A pool of 48 children takes many seconds to start on 2 cores: SIGTERM meanwhile stops it,
    # with no traceback (it was ignored until the pool was up, and failed it with exit 1).
    env = _worker_env()
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "fastworker.worker", "--task-modules", "fwtests_worker_tasks", "--concurrency", "48"]
            + ["--control-plane", "tcp://127.0.0.1:9"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Its signal handlers are in place before the pool starts: once a child exists, SIGTERM is its.
        deadline = time.monotonic() + 30
        while not _children_of(worker.pid):
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
            time.sleep(0.01)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    text = log.read_text()
    assert "Traceback" not in text
    if "looking for a control plane" in text:
        pytest.skip("the pool was up before the signal: this machine was too fast to test it")
    assert "stopped while its processes pool was starting" in text, text


def _ended(pid: int) -> bool:
    """True once pid is gone or a zombie (whoever adopted it has yet to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_a_large_concurrency_caps_the_default_prefetch_instead_of_refusing_it(tmp_path):
    env = _worker_env()
    worker = subprocess.Popen(
        [sys.executable, "-m", "fastworker.worker", "--task-modules", "fwtests_worker_tasks", "--pool", "threads"]
        + ["--concurrency", "2600", "--control-plane", "tcp://127.0.0.1:9"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        while "looking for a control plane" not in line:  # it got past its settings: it serves
            assert line, f"exited with {worker.wait()} before serving"
            line = worker.stdout.readline()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()


async def test_a_thread_stuck_past_its_hard_limit_takes_no_new_task_and_another_worker_runs_them(
    start_cp_for_workers, start_worker, make_client
):
    control_plane = start_cp_for_workers()
    start_worker(control_plane, "stuck", "--pool", "threads", concurrency=1)
    client = make_client(control_plane)
    # Its only thread sleeps 30 s in C, past the task's 1 s hard limit: the task fails, the thread stays.
    hung = await client.wait_many([await client.delay("fwtests_worker.hang")], timeout=20)
    assert hung[0].state == TaskState.FAILURE and hung[0].error.type == "TimeLimitExceeded"
    await asyncio.to_thread(start_worker, control_plane, "free", concurrency=1)

    ids = await client.delay_many([("fwtests_worker.pid", (0.0,))] * 3)
    infos = await client.wait_many(ids, timeout=20)  # well before the stuck thread comes back

    assert [(info.state, info.worker) for info in infos] == [(TaskState.SUCCESS, "free")] * 3


def test_a_worker_whose_control_plane_shut_down_exits_promptly_on_sigterm(start_cp_for_workers, start_worker):
    # Given a worker whose control plane stopped (it announced its shutdown on discovery first)
    control_plane = start_cp_for_workers()
    worker = start_worker(control_plane, "w1")
    assert control_plane.stop() == 0
    # When the worker is told to stop
    began = time.monotonic()
    exit_code = worker.stop(20)
    took = time.monotonic() - began
    # Then it leaves after one short farewell attempt, not two 5-second request timeouts (10 s before)
    assert exit_code == 0
    assert took < 4.0, f"the worker took {took:.1f} s to exit:\n{worker.log()}"
    assert "within 5 s" not in worker.log()


async def test_a_worker_paused_past_its_fence_but_short_of_the_timeout_leaves_no_task_stuck(
    start_cp_for_workers, start_worker, make_client
):
    # Given three prefetching workers under a stream of short tasks, one of them paused (SIGSTOP)
    # longer than its fence (2.1 s with a 3 s heartbeat timeout) but not long enough to be dropped
    control_plane = start_cp_for_workers("--heartbeat-timeout", "3")
    paused, *_ = await start_workers(start_worker, control_plane, "p1", "p2", "p3", concurrency=2)
    client = make_client(control_plane)

    async def stream() -> list[str]:
        ids: list[str] = []
        for _ in range(15):
            ids += await client.delay_many([("fwtests_worker.whoami", ())] * 40)
            await asyncio.sleep(0.1)
        return ids

    submitting = asyncio.ensure_future(stream())
    await asyncio.sleep(0.5)
    os.kill(paused.pid, signal.SIGSTOP)
    await asyncio.sleep(2.6)
    os.kill(paused.pid, signal.SIGCONT)
    ids = await submitting

    # Then every task ends (the tasks that reached it after its fence were handed back, not held for
    # ever: before, two stayed RUNNING and kept its slots, so it never got work again)
    infos = await client.wait_many(ids, timeout=60)
    assert Counter(info.state for info in infos) == {TaskState.SUCCESS: len(ids)}
    async with asyncio.timeout(10):
        while True:
            listed = {w["worker_id"]: w for w in await client.workers()}
            if listed["p1"]["in_flight"] == 0:
                break
            await asyncio.sleep(0.1)
