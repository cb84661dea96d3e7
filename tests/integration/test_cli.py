"""The fastworker operator CLI against a real control plane: output shapes and the documented exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import SyncClient, chain, chord, group, signature
from fastworker.controlplane.testing import RunningControlPlane


def fastworker(cp: RunningControlPlane, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastworker.client", "--control-plane", cp.discovery, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "240"},  # rich tables at a width where no cell wraps
    )


def test_submit_wait_prints_the_task_as_json_with_id_first_and_exits_zero(shared_cp: RunningControlPlane) -> None:
    done = fastworker(shared_cp, "--json", "submit", "fwtests.add", "2", "3", "--wait", "--timeout", "10")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert list(info)[0] == "id"
    assert info["state"] == "SUCCESS" and info["result"] == 5 and info["worker"] == "controlplane"


def test_keyword_arguments_priority_and_string_arguments_are_passed_through(shared_cp: RunningControlPlane) -> None:
    done = fastworker(
        shared_cp, "--json", "submit", "fwtests.add", "--kwargs", '{"x": 4, "y": 5}', "--priority", "high", "--wait"
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["result"] == 9 and info["priority"] == "high"
    text = fastworker(shared_cp, "--json", "submit", "fwtests.record", "hello-cli", "--wait")
    assert json.loads(text.stdout)["result"] == "hello-cli"


def test_a_failing_task_exits_one_with_its_error(shared_cp: RunningControlPlane) -> None:
    done = fastworker(shared_cp, "--json", "submit", "fwtests.fail", "cli says no", "--wait")
    assert done.returncode == 1
    info = json.loads(done.stdout)
    assert info["state"] == "FAILURE" and info["error"]["type"] == "ValueError"
    assert "cli says no" in info["error"]["message"]


def test_refusals_exit_one_and_timeouts_exit_four(shared_cp: RunningControlPlane, tmp_path: Path) -> None:
    unknown = fastworker(shared_cp, "--json", "submit", "no.such.task")
    assert unknown.returncode == 1
    assert "unknown task" in json.loads(unknown.stdout)["error"]

    gate = tmp_path / "never"
    waiting = fastworker(
        shared_cp, "--json", "submit", "fwtests.block_until", str(gate), "cli", "3", "--wait", "--timeout", "0.5"
    )
    assert waiting.returncode == 4
    timed_out = json.loads(waiting.stdout)  # the task goes on: a script gets its id with the error
    assert "did not finish within 0.5 s" in timed_out["error"]
    assert json.loads(fastworker(shared_cp, "--json", "status", timed_out["id"]).stdout)["state"] == "RUNNING"
    missing = fastworker(shared_cp, "--json", "status", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1


def test_status_result_cancel_and_retry_commands(shared_cp: RunningControlPlane, tmp_path: Path) -> None:
    submitted = json.loads(fastworker(shared_cp, "--json", "submit", "fwtests.fail", "first").stdout)
    task_id = submitted["id"]
    result = fastworker(shared_cp, "--json", "result", task_id, "--wait", "--timeout", "10")
    assert result.returncode == 1 and json.loads(result.stdout)["state"] == "FAILURE"
    status = fastworker(shared_cp, "--json", "status", task_id)
    assert status.returncode == 0 and json.loads(status.stdout)["attempts"] == 1
    retried = fastworker(shared_cp, "--json", "retry", task_id)
    assert retried.returncode == 0, retried.stderr
    again = fastworker(shared_cp, "--json", "result", task_id, "--wait", "--timeout", "10")
    assert json.loads(again.stdout)["attempts"] == 2
    # cancel of a finished task: refused, exit 1, says the state it was in
    cancel = fastworker(shared_cp, "--json", "cancel", task_id)
    assert cancel.returncode == 1
    refused = json.loads(cancel.stdout)
    assert list(refused)[0] == "id" and refused["id"] == task_id and refused["state"] == "FAILURE"
    assert (refused["cancelled"], refused["previous_state"]) == (False, "FAILURE")


def test_workers_queues_stats_and_tasks_print_json_lists_and_objects(shared_cp: RunningControlPlane) -> None:
    assert json.loads(fastworker(shared_cp, "--json", "workers").stdout) == []
    queues = json.loads(fastworker(shared_cp, "--json", "queues").stdout)
    assert [q["priority"] for q in queues] == ["critical", "high", "normal", "low"]
    stats = json.loads(fastworker(shared_cp, "--json", "stats").stdout)
    assert stats["submitted"] >= 1 and "throughput" in stats
    tasks = json.loads(fastworker(shared_cp, "--json", "tasks").stdout)
    assert "fwtests.add" in {t["name"] for t in tasks}
    human = fastworker(shared_cp, "tasks")
    assert human.returncode == 0 and "fwtests.add" in human.stdout


def test_list_and_inspect_show_tasks_with_filters_timings_and_tracebacks(shared_cp: RunningControlPlane) -> None:
    failed = json.loads(fastworker(shared_cp, "--json", "submit", "fwtests.fail", "inspect me", "--wait").stdout)
    listing = fastworker(shared_cp, "--json", "list", "--state", "failure", "--search", failed["id"])
    assert listing.returncode == 0, listing.stderr
    page = json.loads(listing.stdout)
    assert page["total"] == 1 and page["tasks"][0]["id"] == failed["id"]

    detail = json.loads(fastworker(shared_cp, "--json", "inspect", failed["id"]).stdout)
    assert detail["args"] == ["inspect me"] and detail["kwargs"] == {}
    assert detail["run_time"] >= 0 and detail["wait_time"] >= 0
    assert "fwtests: the raising line" in detail["error"]["traceback"]

    human = fastworker(shared_cp, "inspect", failed["id"])
    assert human.returncode == 0
    assert "ValueError: inspect me" in human.stdout and "Traceback" in human.stdout and "ran" in human.stdout
    assert re.search(r"^\s*error\s+ValueError: inspect me", human.stdout, re.MULTILINE), human.stdout  # in its row
    assert fastworker(shared_cp, "inspect", "no-such-id").returncode == 1
    assert fastworker(shared_cp, "list", "--state", "bogus").returncode == 2


def test_inspect_shows_when_a_scheduled_task_is_due_and_when_it_expires(shared_cp: RunningControlPlane) -> None:
    # An operator saw a scheduled task's eta but not when it would end CANCELLED (Expired) instead
    expires = time.time() + 300
    submitted = fastworker(
        shared_cp, "--json", "submit", "fwtests.add", "1", "2", "--countdown", "600", "--expires", f"{expires:.3f}"
    )
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["id"]
    try:
        detail = json.loads(fastworker(shared_cp, "--json", "inspect", task_id).stdout)
        assert detail["state"] == "SCHEDULED" and detail["eta"] > expires
        assert detail["expires"] == pytest.approx(expires, abs=0.001)
        human = fastworker(shared_cp, "inspect", task_id).stdout
        assert re.search(r"^\s*expires\s+\d{4}-\d\d-\d\dT", human, re.MULTILINE), human
        ran = json.loads(fastworker(shared_cp, "--json", "submit", "fwtests.add", "1", "2", "--wait").stdout)
        assert json.loads(fastworker(shared_cp, "--json", "inspect", ran["id"]).stdout)["expires"] is None
    finally:
        fastworker(shared_cp, "cancel", task_id)  # the shared control plane keeps no task of this test


def test_task_names_and_values_print_literally_not_as_markup(shared_cp: RunningControlPlane) -> None:
    done = fastworker(shared_cp, "submit", "[bold]x[/]", "[red]y[/red]", "--wait")
    assert done.returncode == 0, done.stderr
    assert "[bold]x[/]" in done.stdout and "[red]y[/red]" in done.stdout
    listing = fastworker(shared_cp, "list", "--name", "[bold]x[/]")
    assert listing.returncode == 0 and "[bold]x[/]" in listing.stdout


def test_pause_resume_purge_and_drain_commands(shared_cp: RunningControlPlane) -> None:
    paused = fastworker(shared_cp, "--json", "pause", "low")
    assert paused.returncode == 0 and json.loads(paused.stdout) == {"priority": "low", "paused": True}
    queued = json.loads(fastworker(shared_cp, "--json", "submit", "fwtests.add", "1", "2", "--priority", "low").stdout)
    queues = json.loads(fastworker(shared_cp, "--json", "queues").stdout)
    assert queues[3]["paused"] is True and queues[3]["depth"] >= 1

    purged = fastworker(shared_cp, "purge", "low")
    assert purged.returncode == 0 and "purged" in purged.stdout
    status = json.loads(fastworker(shared_cp, "--json", "status", queued["id"]).stdout)
    assert status["state"] == "CANCELLED"

    resumed = fastworker(shared_cp, "resume", "low")
    assert resumed.returncode == 0 and "low: dispatching" in resumed.stdout
    assert fastworker(shared_cp, "pause", "urgent").returncode == 2

    missing = fastworker(shared_cp, "--json", "drain", "no-such-worker")
    assert missing.returncode == 1 and json.loads(missing.stdout)["draining"] is False
    # For people, a refusal goes to stderr as the other exit-1 answers do, leaving stdout empty
    missing = fastworker(shared_cp, "drain", "no-such-worker")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.startswith("error: no worker no-such-worker is connected")
    done = json.loads(fastworker(shared_cp, "--json", "submit", "fwtests.add", "1", "2", "--wait").stdout)
    refused = fastworker(shared_cp, "cancel", done["id"])
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.startswith(f"error: task {done['id']} not cancelled (it was SUCCESS)")


def test_human_output_of_every_read_command(shared_cp: RunningControlPlane) -> None:
    fastworker(shared_cp, "submit", "fwtests.add", "1", "1", "--wait")
    stats = fastworker(shared_cp, "stats")
    assert stats.returncode == 0 and "succeeded" in stats.stdout and "finished/s, last 2 min" in stats.stdout
    queues = fastworker(shared_cp, "queues")
    assert queues.returncode == 0 and "critical" in queues.stdout and "oldest_age" in queues.stdout
    workers = fastworker(shared_cp, "workers")
    assert workers.returncode == 0 and "workers: none" in workers.stdout
    listing = fastworker(shared_cp, "list", "--limit", "3")
    assert listing.returncode == 0 and "fwtests.add" in listing.stdout
    past = fastworker(shared_cp, "list", "--offset", "99999")
    assert past.returncode == 0 and "tasks none past 99999 of " in past.stdout
    # One bound named whatever was wrong (-1 was told "0 or more", then 0 "1 or more")
    for bad, why in (
        ("0", "must be 1 or more, got 0"),
        ("-1", "must be 1 or more, got -1"),
        ("abc", "expected a whole number, 1 or more, got 'abc'"),
    ):
        refused = fastworker(shared_cp, "list", "--limit", bad)
        assert refused.returncode == 2 and f"argument --limit: {why}" in refused.stderr


def test_cancel_of_a_waiting_task_and_drain_of_a_worker_exit_zero(start_cp_for_workers: Any, start_worker: Any) -> None:
    control_plane = start_cp_for_workers()
    worker = start_worker(control_plane, "cli-drain", concurrency=1)
    waiting = json.loads(fastworker(control_plane, "--json", "submit", "fwtests_worker.sleep_for", "30").stdout)
    second = json.loads(fastworker(control_plane, "--json", "submit", "fwtests_worker.sleep_for", "0").stdout)
    cancel = fastworker(control_plane, "--json", "cancel", second["id"])
    assert cancel.returncode == 0, cancel.stdout
    done = json.loads(cancel.stdout)
    assert (done["id"], done["state"], done["name"]) == (second["id"], "CANCELLED", "fwtests_worker.sleep_for")
    assert (done["cancelled"], done["previous_state"]) == (True, "PENDING")
    pending = fastworker(control_plane, "--json", "result", waiting["id"])
    assert pending.returncode == 4  # not final yet: a timeout for scripts

    drain = fastworker(control_plane, "drain", "cli-drain", "--timeout", "0.5")
    assert drain.returncode == 0 and "cli-drain is draining" in drain.stdout
    assert worker.process.wait(timeout=15) == 0
    # the running task, stopped when the drain timeout passed, ran there: without retries it fails
    # (a task id is never run twice), naming the drain
    status = json.loads(fastworker(control_plane, "--json", "status", waiting["id"]).stdout)
    assert (status["state"], status["attempts"], status["error"]["type"]) == ("FAILURE", 1, "WorkerLost")
    assert "drained and left (its drain timeout passed)" in status["error"]["message"]


def test_limits_and_limit_show_and_change_a_task_s_limits(shared_cp: RunningControlPlane) -> None:
    def listed() -> dict[str, Any]:
        done = fastworker(shared_cp, "--json", "limits")
        assert done.returncode == 0, done.stderr
        return {entry["name"]: entry for entry in json.loads(done.stdout)}

    defined = listed()["fwtests.limited"]
    assert defined["rate_limit"] == "100/s" and defined["max_concurrency"] == 2 and defined["overridden"] is False
    assert list(defined)[:5] == ["name", "rate_limit", "max_concurrency", "running", "waiting"]
    try:
        changed = fastworker(shared_cp, "--json", "limit", "fwtests.limited", "--concurrency", "1")
        assert changed.returncode == 0, changed.stderr
        now = json.loads(changed.stdout)
        assert (now["rate_limit"], now["max_concurrency"], now["overridden"]) == ("100/s", 1, True)
        again = listed()["fwtests.limited"]
        assert (again["max_concurrency"], again["overridden"]) == (1, True)
        human = fastworker(shared_cp, "limit", "fwtests.limited", "--rate", "none")
        assert human.returncode == 0, human.stderr
        assert "fwtests.limited: no rate limit, concurrency 1, set at run time" in human.stdout
        table = fastworker(shared_cp, "limits")
        assert table.returncode == 0 and "fwtests.limited" in table.stdout and "yes" in table.stdout
        assert fastworker(shared_cp, "--json", "submit", "fwtests.limited", "7", "--wait").returncode == 0
    finally:
        cleared = fastworker(shared_cp, "--json", "limit", "fwtests.limited", "--clear")
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout)["max_concurrency"] == 2 and json.loads(cleared.stdout)["overridden"] is False

    unknown = fastworker(shared_cp, "--json", "limit", "no.such.task", "--rate", "1/s")
    assert unknown.returncode == 1 and "no.such.task" in json.loads(unknown.stdout)["error"]
    assert fastworker(shared_cp, "limit", "fwtests.limited").returncode == 2
    assert fastworker(shared_cp, "limit", "fwtests.limited", "--rate", "lots").returncode == 2


def test_workflow_shows_the_steps_of_a_real_chord_and_cancels_a_waiting_one(
    shared_cp: RunningControlPlane, tmp_path: Path
) -> None:
    with SyncClient(shared_cp.discovery) as client:
        # chord(group(chain(add, fail), add), add): the failing branch fails the callback
        failing = signature("fwtests.fail", args=("cli workflow",), immutable=True)
        branch = chain(signature("fwtests.add", args=(1, 2)), failing)
        handle = client.delay_workflow(
            chord(group(branch, signature("fwtests.add", args=(5, 5))), signature("fwtests.add", args=(0,)))
        )
        client.wait_many(list(handle.task_ids), timeout=20)

        done = fastworker(shared_cp, "--json", "workflow", handle.id)
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert data["id"] == handle.id and data["state"] == "FAILURE"
        assert [step["id"] for step in data["steps"]] == list(handle.task_ids)
        assert [step["state"] for step in data["steps"]] == ["SUCCESS", "FAILURE", "SUCCESS", "FAILURE"]
        assert data["steps"][3]["depends_on"] == [handle.task_ids[1], handle.task_ids[2]]
        assert {step["workflow_id"] for step in data["steps"]} == {handle.id}

        human = fastworker(shared_cp, "workflow", handle.id)
        assert human.returncode == 0, human.stderr
        assert f"workflow {handle.id} FAILURE" in human.stdout and "2 SUCCESS, 2 FAILURE" in human.stdout
        lines = human.stdout.splitlines()

        def row(task_id: str) -> str:
            return next(line for line in lines if task_id[:8] in line)

        assert "ValueError" in row(handle.task_ids[1])
        assert "(after 2 steps)" in row(handle.task_ids[3]) and "DependencyFailed" in row(handle.task_ids[3])
        step = fastworker(shared_cp, "status", handle.task_ids[3])
        assert handle.id in step.stdout  # a step's status names its workflow

        # A workflow still waiting: --cancel cancels its steps; a second cancel finds nothing left (exit 1)
        gate = tmp_path / "never"
        waiting = client.delay_workflow(
            chain(
                signature("fwtests.block_until", args=(str(gate), "cli-wf-cancel", 20.0)),
                signature("fwtests.add", args=(1,)),
            )
        )
        cancelled = fastworker(shared_cp, "--json", "workflow", waiting.id, "--cancel")
        assert cancelled.returncode == 0, cancelled.stderr
        assert json.loads(cancelled.stdout) == {"id": waiting.id, "cancelled": 2}
        again = fastworker(shared_cp, "workflow", waiting.id, "--cancel")
        assert (again.returncode, again.stdout) == (1, ""), again.stdout  # a refusal: on stderr only
        assert again.stderr.startswith(f"error: workflow {waiting.id} not cancelled: no step was left to cancel")
        assert "(it is CANCELLED)" in again.stderr
        scripted = fastworker(shared_cp, "--json", "workflow", waiting.id, "--cancel")
        assert scripted.returncode == 1 and json.loads(scripted.stdout) == {"id": waiting.id, "cancelled": 0}

    unknown = fastworker(shared_cp, "--json", "workflow", "00000000-0000-4000-8000-00000000000f")
    assert unknown.returncode == 1 and "is not known to the control plane" in json.loads(unknown.stdout)["error"]


def test_output_piped_to_another_program_is_never_wrapped_and_times_are_iso(shared_cp: RunningControlPlane) -> None:
    # Given a task whose id is long, and no COLUMNS telling rich a width (as in `fastworker list | grep ID`)
    task_id = "piped-" + "x" * 90
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}

    def piped(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "fastworker.client", "--control-plane", shared_cp.discovery, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)

    submitted = piped("submit", "fwtests.add", "2", "3", "--task-id", task_id, "--wait")
    assert submitted.returncode == 0, submitted.stderr
    # Then the listing holds the whole id on one line, and grep would find it
    listing = piped("list", "--search", "piped-")
    assert [line for line in listing.stdout.splitlines() if task_id in line], listing.stdout
    # and the status prints its times as ISO-8601, not as epoch floats
    status = piped("status", task_id)
    (queued,) = [line for line in status.stdout.splitlines() if line.strip().startswith("queued_at")]
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", queued), queued
    assert not re.search(r"\b1[6-9]\d{8}\.\d+", status.stdout), status.stdout


def test_workers_prints_a_live_worker_s_last_heartbeat_as_iso_and_json_keeps_unix_seconds(
    start_cp_for_workers: Any, start_worker: Any
) -> None:
    # Given a subworker online
    control_plane = start_cp_for_workers()
    start_worker(control_plane, "cli-times", concurrency=1)
    # When people list the workers
    listed = fastworker(control_plane, "workers")
    assert listed.returncode == 0 and "cli-times" in listed.stdout, listed.stdout
    # Then the last heartbeat is an ISO-8601 time like every other time printed, never an epoch float
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", listed.stdout), listed.stdout
    assert not re.search(r"\b1[6-9]\d{2},?\d{3},?\d{3}\.\d+", listed.stdout), listed.stdout
    # and scripts still read Unix seconds
    (worker,) = json.loads(fastworker(control_plane, "--json", "workers").stdout)
    assert abs(worker["last_heartbeat"] - time.time()) < 60, worker


def test_result_of_a_finished_task_with_a_zero_timeout_is_shown_not_timed_out(shared_cp: RunningControlPlane) -> None:
    done = fastworker(shared_cp, "--json", "submit", "fwtests.add", "20", "22", "--wait", "--timeout", "10")
    task_id = json.loads(done.stdout)["id"]
    again = fastworker(shared_cp, "--json", "result", task_id, "--wait", "--timeout", "0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["result"] == 42


def test_a_wait_ends_with_exit_three_when_the_control_plane_goes_away(start_cp: Any) -> None:
    # A control plane that runs nothing: the task stays PENDING, then the control plane stops for good.
    control_plane = start_cp("--local-concurrency", "0")
    waiting = subprocess.Popen(
        [sys.executable, "-m", "fastworker.client", "--control-plane", control_plane.discovery, "--json"]
        + ["submit", "fwtests.add", "1", "2", "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # submitted, and waiting
        assert waiting.poll() is None
        control_plane.stop()
        out, _ = waiting.communicate(timeout=60)  # request_timeout (10 s) beyond the 5 s hold, then exit
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 3, out
    assert "control plane" in json.loads(out)["error"]


def _reader_leaves_early(cp: RunningControlPlane, *args: str) -> tuple[int, str]:
    """Run a command whose reader takes one line and leaves (``| head -1``): its exit code and stderr."""
    with subprocess.Popen(
        [sys.executable, "-m", "fastworker.client", "--control-plane", cp.discovery, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "240"},
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()
        code = process.wait(timeout=30)
        return code, process.stderr.read()


def test_a_reader_that_leaves_early_changes_no_exit_code(shared_cp: RunningControlPlane) -> None:
    # `fastworker inspect ID | head -1` exited 1, "the task failed" to a script with pipefail
    with SyncClient(shared_cp.discovery) as client:
        ok = client.delay("fwtests.add", 1, 2)
        failed = client.delay("fwtests.fail", "boom\n" * 2000)  # a long traceback: several writes
        client.wait_many([ok, failed], timeout=10)
    assert _reader_leaves_early(shared_cp, "inspect", ok) == (0, "")
    assert _reader_leaves_early(shared_cp, "status", failed) == (0, "")
    assert _reader_leaves_early(shared_cp, "result", failed) == (1, "")  # the task failed: that, and only that


def test_a_json_usage_error_whose_reader_left_is_still_a_usage_error_without_a_traceback() -> None:
    # `fastworker --connect-timeout 0 stats --json | true` printed a BrokenPipeError traceback and exited 1
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fastworker.client", "--connect-timeout", "0", "stats", "--json"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "--connect-timeout" in done.stderr.splitlines()[-1]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("as_json", [False, True])
def test_output_that_cannot_be_written_is_one_line_and_exit_1_not_a_traceback(
    shared_cp: RunningControlPlane, as_json: bool
) -> None:
    # `fastworker stats > /dev/full` ended with an OSError traceback.
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "fastworker.client", "--control-plane", shared_cp.discovery, "stats"]
            + (["--json"] if as_json else []),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert (done.returncode, done.stderr) == (1, "fastworker: cannot write the output: No space left on device\n")
