"""A daemon started as PID 1 leaves a minimal init behind: orphans are reaped, signals reach the daemon, its exit code is PID 1's.

Real PID namespaces (``unshare --pid --fork --mount-proc``, so root, as for the deploy tests): a
stand-in daemon orphans a process (``sh -c 'sleep 0.2 &'``), runs a child of its own to the end,
then waits for SIGTERM. Every process is stopped by pid, bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastworker.worker._pid1 import exit_code

BOUND = 20.0

DAEMON = r"""
import os, signal, subprocess, sys, time
from fastworker.worker._pid1 import become_init_if_pid1
if sys.argv[1] == "init":
    become_init_if_pid1()
print(f"daemon pid={os.getpid()} ppid={os.getppid()}", flush=True)
subprocess.run(["sh", "-c", "sleep 0.2 & exit 0"], check=True)  # the sleep is orphaned to PID 1
own = subprocess.run(["sh", "-c", "sleep 0.4; exit 7"])  # a child of the daemon's own
print(f"own child exited {own.returncode}", flush=True)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
print("ready", flush=True)
while not stop:
    time.sleep(0.01)
sys.exit(int(sys.argv[2]))
"""


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def state(pid: int) -> str:
    """A process's state letter (Z: a zombie), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@contextlib.contextmanager
def namespace(mode: str, code: int) -> Iterator[tuple[subprocess.Popen[str], int, list[str]]]:
    """The stand-in daemon as PID 1 of a new PID namespace: (unshare, PID 1's host pid, its first lines)."""
    assert os.geteuid() == 0, "PID namespaces need root here (unshare --pid)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    launcher = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--", sys.executable, "-c", DAEMON, mode, str(code)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + BOUND
        while not (found := children(launcher.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert found, "no PID 1 under unshare"
        assert launcher.stdout is not None
        lines = [launcher.stdout.readline().strip() for _ in range(3)]  # readiness: bounded by the daemon's own steps
        yield launcher, found[0], lines
    finally:
        for pid in (*children(launcher.pid), launcher.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        launcher.wait(timeout=BOUND)
        if launcher.stdout is not None:
            launcher.stdout.close()


def zombies_under(pid: int) -> list[int]:
    return [child for child in children(pid) if state(child) == "Z"]


@pytest.mark.parametrize("code", [0, 3])
def test_pid1_reaps_orphans_forwards_sigterm_and_exits_with_the_daemons_code(code: int) -> None:
    with namespace("init", code) as (launcher, pid1, lines):
        # The daemon runs under PID 1, and its own child's exit status reached it
        assert lines == ["daemon pid=2 ppid=1", "own child exited 7", "ready"]
        time.sleep(0.3)  # the orphaned sleep ended 0.2 s in; PID 1 looks at once
        assert zombies_under(pid1) == []
        assert state(pid1) == "S"  # PID 1 waits, it does not spin

        os.kill(pid1, signal.SIGTERM)  # as the kubelet stops a container
        assert launcher.wait(timeout=BOUND) == code  # unshare --fork exits with PID 1's code


def test_without_the_init_a_daemon_at_pid1_keeps_the_orphans_zombies() -> None:
    # The harness can tell: the same daemon, not splitting, is PID 1 itself and never reaps the orphan
    with namespace("plain", 0) as (launcher, pid1, lines):
        assert lines == ["daemon pid=1 ppid=0", "own child exited 7", "ready"]
        deadline = time.monotonic() + BOUND
        while not zombies_under(pid1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(zombies_under(pid1)) == 1
        os.kill(pid1, signal.SIGTERM)
        assert launcher.wait(timeout=BOUND) == 0


SLOW_START = r"""
import sys, time
from fastworker.worker._pid1 import become_init_if_pid1, hold_stop_signals_if_pid1
if sys.argv[1] == "hold":
    hold_stop_signals_if_pid1()
print("importing", flush=True)
time.sleep(1.0)  # the daemon's imports
become_init_if_pid1()
print("started", flush=True)
time.sleep(30)  # its handlers would be installed here; SIG_DFL until then
"""


@pytest.mark.parametrize("mode", ["hold", "plain"])
def test_a_sigterm_during_the_imports_of_a_pid1_daemon_is_kept_and_stops_it(mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    launcher = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--", sys.executable, "-c", SLOW_START, mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert launcher.stdout is not None and launcher.stdout.readline().strip() == "importing"
        (pid1,) = children(launcher.pid)
        os.kill(pid1, signal.SIGTERM)  # a pod deleted as it starts
        if mode == "hold":
            # Kept by PID 1, passed to the daemon as it forks: it stops at once (nothing to drain)
            assert launcher.wait(timeout=BOUND) == 128 + signal.SIGTERM
            assert launcher.stdout.read() == ""  # before it went any further
        else:
            # Without a handler the kernel drops it: the daemon starts and runs on (until SIGKILL)
            assert launcher.stdout.readline().strip() == "started"
            with pytest.raises(subprocess.TimeoutExpired):
                launcher.wait(timeout=1.0)
    finally:
        for pid in (*children(launcher.pid), launcher.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        launcher.wait(timeout=BOUND)
        launcher.stdout.close()


def test_an_exit_status_reads_as_a_shell_reports_it() -> None:
    assert exit_code(0) == 0
    assert exit_code(3 << 8) == 3
    assert exit_code(signal.SIGKILL) == 128 + signal.SIGKILL
