"""The process harness cleans up after itself: no folder per daemon left in the temp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

_SCRIPT = textwrap.dedent(
    """
    from fastworker.controlplane.testing import run_controlplane
    with run_controlplane() as cp:
        print(cp.log_path)
    print(cp.log_path.exists())  # the log stays readable after stop, until the process exits
    """
)


def test_a_folder_the_harness_made_is_removed_when_the_process_exits() -> None:
    run = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    log_path, readable_after_stop = run.stdout.split()
    assert readable_after_stop == "True"
    assert Path(log_path).parent.name.startswith("fastworker-cp-")
    assert not Path(log_path).parent.exists()


def test_a_workdir_given_by_the_caller_is_kept(tmp_path: Path) -> None:
    script = _SCRIPT.replace("run_controlplane()", f"run_controlplane(workdir={str(tmp_path)!r})")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    log_path, _ = run.stdout.split()
    assert Path(log_path).parent == tmp_path
    assert Path(log_path).exists()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from fastworker.controlplane.testing import start_controlplane, start_worker
    cp = start_controlplane(workdir={workdir!r}, extra_args=["--local-concurrency", "0"])
    worker = start_worker(
        cp.discovery, task_modules=["harness_tasks"], workdir={workdir!r}, env={{"PYTHONPATH": {workdir!r}}}
    )
    print(cp.pid, worker.pid, flush=True)
    time.sleep(120)  # killed before it could stop them (SIGKILL: no teardown, no atexit)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_daemons_the_harness_started_stop_when_the_process_that_started_them_dies(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # Given a process (a test session) that started a control plane and a subworker
    (tmp_path / "harness_tasks.py").write_text("from fastworker.client import task\n\n@task\ndef noop() -> None: ...\n")
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER.format(workdir=str(tmp_path))], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            pids = [int(pid) for pid in holder.stdout.readline().split()]
            assert len(pids) == 2, pids
            # When it is killed without running its teardown
            holder.send_signal(signum)
            holder.wait(timeout=30)
        finally:
            if holder.poll() is None:
                holder.kill()
    # Then both daemons stop on their own (an ordinary, drained stop), within a bounded wait
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left
    logs = "".join(path.read_text() for path in tmp_path.glob("*.log"))
    assert logs.count("exited") >= 2, logs


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (it is not our child: the dead holder's, adopted by init, which reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
