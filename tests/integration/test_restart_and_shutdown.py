"""Lifecycle: a client survives a control-plane restart; SIGTERM drains running tasks, then exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from fastworker.client import ControlPlaneUnavailable, TaskNotFound, TaskState

#: Longest a client may take to find a restarted control plane again.
RECONNECT_BOUND = 15.0
#: How long the task running during shutdown takes.
DRAINED_TASK_SECONDS = 2.5


async def test_a_client_runs_tasks_again_after_the_control_plane_restarts_on_the_same_addresses(start_cp, make_client):
    first = start_cp()
    client = make_client(first)
    assert await client.submit("fwtests.add", 1, 2, timeout=10) == 3

    assert await asyncio.to_thread(first.stop) == 0
    second = start_cp(discovery=first.discovery, client=first.client, dispatch=first.dispatch)
    assert (second.discovery, second.client, second.dispatch) == (first.discovery, first.client, first.dispatch)
    assert second.pid != first.pid

    # The same client object, idle meanwhile, with no user action: one call, bounded.
    async with asyncio.timeout(RECONNECT_BOUND):
        assert await client.submit("fwtests.add", 3, 4, timeout=RECONNECT_BOUND) == 7
    task_id = await client.delay("fwtests.add", 5, 6)
    assert await client.result(task_id, timeout=10) == 11
    assert (await client.stats())["submitted"] == 2  # counted by the new control plane


async def test_while_the_control_plane_is_down_a_waiting_call_ends_within_its_own_bounds(start_cp, make_client):
    # Given a client with a 2-s request timeout whose control plane stopped
    control_plane = start_cp()
    client = make_client(control_plane, request_timeout=2.0)
    task_id = await client.delay("fwtests.add", 1, 2)
    assert await asyncio.to_thread(control_plane.stop) == 0

    async def ended_after(call) -> float:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        with pytest.raises(ControlPlaneUnavailable):
            async with asyncio.timeout(30):
                await call
        return time.monotonic() - started

    # Then a wait the control plane would hold ends at the call's own timeout (1 s), or at the
    # request timeout, never the two added (a control plane that is down holds nothing)
    assert await ended_after(client.submit("fwtests.add", 1, 2, timeout=1)) < 1.9
    assert await ended_after(client.submit("fwtests.add", 1, 2, timeout=20)) < 3.5
    assert await ended_after(client.result(task_id)) < 3.5
    assert await ended_after(client.events(0, timeout=5)) < 3.5
    # A wait with a timeout ends at it, as ControlPlaneUnavailable: nobody could say the task did not
    # finish (it did). Calls one after another on the same id each get their own bounds: an earlier
    # call's request failing does not fail a later call early.
    for _ in range(2):
        assert 0.9 < await ended_after(client.wait(task_id, timeout=1)) < 1.9
    assert 1.5 < await ended_after(client.wait(task_id)) < 3.5
    with pytest.raises(ControlPlaneUnavailable, match="no control plane is connected"):
        await client.status(task_id)

    # A client that never found it is bound the same way (its connect_timeout is 5 s)
    fresh = make_client(control_plane, request_timeout=2.0)
    assert await ended_after(fresh.result(task_id, timeout=1)) < 1.9
    assert await ended_after(fresh.submit("fwtests.add", 1, 2, timeout=1)) < 1.9


async def test_a_wait_out_when_the_control_plane_restarts_is_answered_by_the_next_instance(
    start_cp, make_client, tmp_path
):
    # Given a control plane with a journal, and a client with a 2-s request timeout waiting for a
    # task that runs 3 s from now (its long poll, held up to 5 s, is out on the connection)
    journal = str(tmp_path / "journal")
    first = start_cp("--journal", journal)
    client = make_client(first, request_timeout=2.0)
    task_id = await client.delay("fwtests.add", 2, 3, countdown=3)
    waiting = asyncio.ensure_future(client.result(task_id, timeout=60))
    await asyncio.sleep(0.5)

    # When the control plane is killed and starts again on the same addresses
    os.kill(first.pid, signal.SIGKILL)
    await asyncio.to_thread(first.process.wait, 10)
    start_cp("--journal", journal, discovery=first.discovery, client=first.client, dispatch=first.dispatch)

    # Then the wait asks the new instance and gets the result. (Its poll used to be left to time out
    # on the closed connection: 7 s after it was sent, ControlPlaneUnavailable, although the control
    # plane was back and the task succeeded.)
    async with asyncio.timeout(RECONNECT_BOUND):
        assert await waiting == 5
    assert (await client.status(task_id)).state is TaskState.SUCCESS


async def test_sigterm_lets_the_running_task_finish_refuses_new_work_and_exits_zero(
    start_cp, make_client, wait_for_state, tmp_path
):
    control_plane = start_cp()
    client = make_client(control_plane)
    marker = tmp_path / "finished"
    task_id = await client.delay("fwtests.sleep_then_mark", DRAINED_TASK_SECONDS, str(marker))
    running = await wait_for_state(client, task_id, TaskState.RUNNING)
    waiting = asyncio.ensure_future(client.wait(task_id, timeout=15))
    await asyncio.sleep(0.2)  # the wait request is with the control plane

    stopping = asyncio.ensure_future(asyncio.to_thread(control_plane.stop))
    await asyncio.sleep(0.3)  # SIGTERM delivered; the task is still running
    assert not marker.exists()
    with pytest.raises(ControlPlaneUnavailable):
        await client.delay("fwtests.add", 1, 2)
    # A client that first connects during the drain is told why nothing answers it
    latecomer = make_client(control_plane, connect_timeout=0.8)
    with pytest.raises(ControlPlaneUnavailable, match=r"the control plane there is shutting down \(SIGTERM\)"):
        await latecomer.stats()

    exit_code = await asyncio.wait_for(stopping, 20)
    exited_at = time.time()
    assert exit_code == 0
    # The task wrote its marker when it finished, so the process lived until then.
    assert marker.exists()
    finished_at = float(marker.read_text())
    assert running.started_at is not None
    assert finished_at - running.started_at >= DRAINED_TASK_SECONDS - 0.05
    assert finished_at <= exited_at

    info = await asyncio.wait_for(waiting, 10)
    assert (info.state, info.result) == (TaskState.SUCCESS, str(marker))

    log = control_plane.log()
    assert "shutting down: SIGTERM" in log
    assert "drain timeout" not in log
    assert re.search(r"control plane \w+ stopped", log)


async def test_a_submit_in_flight_when_a_control_plane_without_a_journal_dies_is_not_run_again_by_the_next(
    start_cp, make_client, tmp_path
):
    # Given a submit that waits for its task, which started on a control plane without a journal
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    first = start_cp()
    client = make_client(first)
    submitted = asyncio.ensure_future(
        client.submit("fwtests.log_then_block", str(log), "once", str(gate), task_id="in-flight", timeout=60)
    )
    deadline = time.monotonic() + RECONNECT_BOUND
    while not (log.exists() and log.read_text()):
        assert time.monotonic() < deadline and not submitted.done(), "the task never started"
        await asyncio.sleep(0.02)

    # When that control plane is killed and another starts on the same addresses
    os.kill(first.pid, signal.SIGKILL)
    await asyncio.to_thread(first.process.wait, 10)
    gate.touch()  # a second run would end at once
    start_cp(discovery=first.discovery, client=first.client, dispatch=first.dispatch)

    # Then the submit fails, saying why, instead of running the task a second time on the new one
    with pytest.raises(ControlPlaneUnavailable, match="keeps no journal"):
        async with asyncio.timeout(RECONNECT_BOUND):
            await submitted
    with pytest.raises(TaskNotFound):
        await client.status("in-flight")  # never accepted by the new instance
    assert log.read_text().splitlines() == ["once"]


async def test_sighup_stops_both_daemons_gracefully_and_sigusr1_is_ignored(
    start_cp_for_workers, start_worker, make_client
):
    # A closing terminal sends SIGHUP: it ended a daemon at once (no drain, the ready file left);
    # SIGUSR1/2, which a container's init passes on, ended it too
    control_plane = start_cp_for_workers()
    worker = start_worker(control_plane, "hup")
    client = make_client(control_plane)
    for daemon in (worker.process, control_plane.process):
        daemon.send_signal(signal.SIGUSR1)
        daemon.send_signal(signal.SIGUSR2)
    assert await client.submit("fwtests_worker.whoami", timeout=10) == "hup"  # both still serve

    task_id = await client.delay("fwtests_worker.sleep_for", 1.0)
    await asyncio.sleep(0.3)
    worker.process.send_signal(signal.SIGHUP)
    assert await asyncio.to_thread(worker.process.wait, 20) == 0
    info = await client.status(task_id)  # it drained: the running task finished first
    assert (info.state, info.result) == (TaskState.SUCCESS, "hup")
    assert "draining: SIGHUP" in worker.log()

    control_plane.process.send_signal(signal.SIGHUP)
    assert await asyncio.to_thread(control_plane.process.wait, 20) == 0
    assert "shutting down: SIGHUP" in control_plane.log()
    assert "SIGUSR1 received: it means nothing to this daemon" in control_plane.log()


async def test_actions_answered_after_a_stall_longer_than_an_attempt_say_what_they_did(start_cp, make_client):
    # Given a scheduled task, a failed one, and three waiting at a paused level
    control_plane = start_cp()
    client = make_client(control_plane)
    scheduled = await client.delay("fwtests.add", 1, 2, countdown=600)
    failed = await client.delay("fwtests.fail", "once")
    assert (await client.wait(failed, timeout=10)).state is TaskState.FAILURE
    await client.pause("low")
    waiting = [await client.delay("fwtests.add", n, n, priority="low") for n in range(3)]

    # When the control plane stalls (SIGSTOP: swap, a VM pause) while the actions are sent, longer
    # than the client waits for one attempt before it sends it again: both attempts arrive
    os.kill(control_plane.pid, signal.SIGSTOP)
    try:
        calls = asyncio.gather(client.cancel(scheduled), client.retry(failed), client.purge("low"))
        await asyncio.sleep(4.0)
    finally:
        os.kill(control_plane.pid, signal.SIGCONT)
    cancelled, retried, purged = await asyncio.wait_for(calls, 15)

    # Then each says what it did (the second attempt answered as the first), not the opposite
    assert (cancelled.cancelled, cancelled.previous_state) == (True, TaskState.SCHEDULED)
    assert retried in (TaskState.PENDING, TaskState.RUNNING)
    assert purged == 3
    assert {(await client.status(task_id)).state for task_id in [scheduled, *waiting]} == {TaskState.CANCELLED}


async def test_a_submission_a_stalled_control_plane_never_answered_names_its_task_to_look_up_or_send_again(
    start_cp, make_client, tmp_path
):
    # Given a client with a 2-s request timeout, and a control plane that stalls longer than that
    control_plane = start_cp()
    client = make_client(control_plane, request_timeout=2.0)
    assert await client.submit("fwtests.add", 1, 1, timeout=10) == 2
    marker = tmp_path / "ran"
    os.kill(control_plane.pid, signal.SIGSTOP)
    try:
        # When a submission gets no answer in time
        with pytest.raises(ControlPlaneUnavailable) as raised:
            await client.delay("fwtests.sleep_then_mark", 0.0, str(marker))
    finally:
        os.kill(control_plane.pid, signal.SIGCONT)

    # Then the error names the task it may have queued (it was: it runs once the stall ends), and
    # sending it again under that id is safe: it is the same task, run once
    error = raised.value
    assert error.may_have_arrived and error.task_id is not None
    assert f"task {error.task_id} may have been accepted" in str(error)
    assert await client.send("fwtests.sleep_then_mark", (0.0, str(marker)), task_id=error.task_id) == error.task_id
    info = await client.wait(error.task_id, timeout=10)
    assert info.state is TaskState.SUCCESS and info.attempts == 1
    assert (await client.stats())["submitted"] == 2  # the warm-up and this one, once


async def test_a_delay_many_a_stalled_control_plane_never_answered_names_every_call_and_sent_again_runs_each_once(
    start_cp, make_client
):
    # Given a client with a 2-s request timeout, and a control plane that stalls longer than that
    control_plane = start_cp()
    client = make_client(control_plane, request_timeout=2.0)
    assert await client.submit("fwtests.add", 1, 1, timeout=10) == 2
    calls = [("fwtests.record", (f"stalled-batch-{i}",)) for i in range(3)]
    os.kill(control_plane.pid, signal.SIGSTOP)
    try:
        # When a delay_many gets no answer in time
        with pytest.raises(ControlPlaneUnavailable) as raised:
            await client.delay_many(calls)
    finally:
        os.kill(control_plane.pid, signal.SIGCONT)

    # Then the error lists every call's id (all were queued once the stall ended), and sending the
    # same calls again under those ids is safe: the same tasks, each run once
    error = raised.value
    task_ids = error.task_ids
    assert error.may_have_arrived and "3 of the 3 calls may have been accepted" in str(error)
    assert None not in task_ids and len(set(task_ids)) == 3 and error.task_id == task_ids[0]
    assert await client.delay_many(calls, task_ids=task_ids) == task_ids
    assert {info.state for info in await client.wait_many(task_ids, timeout=10)} == {TaskState.SUCCESS}
    counts = await client.submit("fwtests.execution_counts", "stalled-batch-", timeout=10)
    assert counts == {f"stalled-batch-{i}": 1 for i in range(3)}


async def test_delays_batched_together_when_a_control_plane_without_a_journal_dies_name_their_tasks(
    start_cp, make_client
):
    # Given two delays that travel in one batch to a control plane without a journal, which stalls
    first = start_cp()
    client = make_client(first, request_timeout=10.0)
    assert await client.submit("fwtests.add", 1, 1, timeout=10) == 2
    os.kill(first.pid, signal.SIGSTOP)
    try:
        delays = asyncio.gather(
            client.delay("fwtests.record", "batched-a", task_id="batched-a"),
            client.delay("fwtests.record", "batched-b", task_id="batched-b"),
            return_exceptions=True,
        )
        await asyncio.sleep(1.0)  # the batch left

        # When that control plane is killed and another starts on the same addresses
        os.kill(first.pid, signal.SIGKILL)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    await asyncio.to_thread(first.process.wait, 10)
    start_cp(discovery=first.discovery, client=first.client, dispatch=first.dispatch)

    # Then each delay fails saying what its message says: its task may have arrived, and which it is
    async with asyncio.timeout(RECONNECT_BOUND):
        outcomes = await delays
    for outcome, task_id in zip(outcomes, ["batched-a", "batched-b"], strict=True):
        assert isinstance(outcome, ControlPlaneUnavailable), outcome
        assert "keeps no journal" in str(outcome)
        assert (outcome.may_have_arrived, outcome.task_id) == (True, task_id)


async def test_a_workflow_a_stalled_control_plane_never_answered_names_the_workflow_to_look_up(
    start_cp, make_client, tmp_path
):
    # Given a client with a 2-s request timeout, and a control plane that stalls longer than that
    from fastworker.client.workflows import chain, signature

    control_plane = start_cp()
    client = make_client(control_plane, request_timeout=2.0)
    assert await client.submit("fwtests.add", 1, 1, timeout=10) == 2
    os.kill(control_plane.pid, signal.SIGSTOP)
    try:
        # When a workflow submission gets no answer in time
        with pytest.raises(ControlPlaneUnavailable) as raised:
            await client.delay_workflow(chain(signature("fwtests.add", (1, 2)), signature("fwtests.add", (10,))))
    finally:
        os.kill(control_plane.pid, signal.SIGCONT)

    # Then the error names the workflow, which was accepted: looking it up finds it, and its result comes
    error = raised.value
    assert error.may_have_arrived and error.workflow_id is not None
    assert f"workflow {error.workflow_id} may have been accepted" in str(error)
    info = await client.workflow(error.workflow_id)
    assert len(info.steps) == 2 and info.output_ids
    assert (await client.wait(info.output_ids[-1], timeout=10)).state is TaskState.SUCCESS


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM], ids=["SIGUSR1", "SIGTERM"])
def test_a_signal_the_moment_the_ready_file_appears_is_answered_as_documented(tmp_path, signum):
    # A supervisor that waits for the ready file, then signals: the handlers were installed after
    # the file was written, so SIGUSR1 killed the daemon, and SIGTERM left no drain, -15 and the file
    ready = tmp_path / "ready.json"
    for run in range(3):
        process = subprocess.Popen(
            [sys.executable, "-m", "fastworker.controlplane", "--no-dashboard", "--no-metrics"]
            + [f"--{channel}-address=tcp://127.0.0.1:0" for channel in ("discovery", "client", "dispatch")]
            + ["--ready-file", str(ready), "--log-level", "INFO"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
            assert ready.exists(), process.stderr.read() if process.poll() is not None else "not ready in 30 s"
            process.send_signal(signum)
            if signum == signal.SIGTERM:
                # Then it stops gracefully: exit 0, its ready file removed
                assert process.wait(20) == 0, run
                assert not ready.exists()
            else:
                # Then it logs the signal and goes on serving
                time.sleep(0.5)
                assert process.poll() is None, f"run {run}: ended {process.returncode}"
                process.send_signal(signal.SIGTERM)
                assert process.wait(20) == 0
                assert "SIGUSR1 received" in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            if process.stderr is not None:
                process.stderr.close()


@pytest.mark.parametrize("request_timeout", [10.0, 2.0])
async def test_a_watch_of_a_task_a_restart_without_a_journal_forgot_raises_task_not_found(
    start_cp, make_client, tmp_path, request_timeout
):
    # The watch followed the old event stream's sequence on the new instance: once that one's events
    # passed it, none was the task's and no gap showed, so the watch waited for ever. With a short
    # request timeout, its poll held by the instance that died ended in ControlPlaneUnavailable.
    first = start_cp()
    client = make_client(first, request_timeout=request_timeout)
    task_id = await client.delay("fwtests.block_until", str(tmp_path / "never"), "forgotten", 60)
    states: list[TaskState] = []

    async def watch() -> None:
        async for info in client.watch(task_id):
            states.append(info.state)

    watching = asyncio.ensure_future(watch())
    deadline = time.monotonic() + RECONNECT_BOUND
    while TaskState.RUNNING not in states:
        assert time.monotonic() < deadline and not watching.done(), f"the watch saw {states}"
        await asyncio.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    await asyncio.to_thread(first.process.wait, 10)
    start_cp(discovery=first.discovery, client=first.client, dispatch=first.dispatch)
    async with asyncio.timeout(RECONNECT_BOUND):
        ids = await client.delay_many([("fwtests.add", (i, i)) for i in range(50)])  # the new stream moves on
        await client.wait_many(ids)
    with pytest.raises(TaskNotFound):
        async with asyncio.timeout(RECONNECT_BOUND):
            await watching
