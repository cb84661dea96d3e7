"""Fixtures for the security suite: real control planes and workers on loopback (or in a network namespace).

Every daemon is started through ``fastworker.controlplane.testing`` (port 0, ready files, bounded
waits) with this directory on PYTHONPATH (``fwsec_tasks``), and stopped by pid at teardown. Tests
record what they did (frames sent, faults injected, tasks lost, re-runs) with the ``security_report``
fixture; ``pytest_terminal_summary`` prints it at the end of the run so it shows in the CI log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fastworker.controlplane import testing
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker, wait_for_ready_file

HERE = Path(__file__).resolve().parent
# The suite's helpers (fwsec_support) are imported by the test modules; with --import-mode=importlib
# nothing puts this directory on sys.path for them, so this conftest does (it is loaded first).
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fwsec_support import TASK_MODULES, StartControlPlane, StartWorker, child_env  # noqa: E402

REPORT_KEY = pytest.StashKey[list[tuple[str, dict[str, Any]]]]()


# ----------------------------------------------------------------------------------------- daemons


def _print_logs(daemons: Sequence[Any]) -> None:
    for daemon in daemons:
        label = getattr(daemon, "worker_id", "") or "control plane"
        print(f"---- {label} pid {daemon.pid} ({' '.join(daemon.argv[3:])}) ----")  # shown when a test fails
        print(daemon.log()[-20_000:])


@pytest.fixture
def start_cp(tmp_path: Path) -> Iterator[StartControlPlane]:
    """``start_cp(*flags, task_modules=("fwsec_tasks",), **addresses)``; every one is stopped by pid at teardown."""
    started: list[RunningControlPlane] = []

    def start(*extra_args: str, task_modules: Sequence[str] = TASK_MODULES, **kwargs: Any) -> RunningControlPlane:
        control_plane = testing.start_controlplane(
            task_modules=task_modules, extra_args=list(extra_args), env=child_env(), workdir=tmp_path, **kwargs
        )
        started.append(control_plane)
        return control_plane

    yield start
    for control_plane in started:
        control_plane.stop()
    _print_logs(started)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """``start_worker(discovery, worker_id, *flags, concurrency=4, netns=None)``; stopped by pid at teardown.

    With ``netns`` the worker runs inside that network namespace (``ip netns exec``, which execs
    the Python process itself, so the pid is the worker's).
    """
    started: list[RunningWorker] = []

    def start(
        discovery: str,
        worker_id: str,
        *extra_args: str,
        concurrency: int = 4,
        netns: str | None = None,
        ready_timeout: float = testing.READY_TIMEOUT,
    ) -> RunningWorker:
        if netns is None:
            worker = testing.start_worker(
                discovery,
                task_modules=TASK_MODULES,
                concurrency=concurrency,
                worker_id=worker_id,
                extra_args=extra_args,
                env=child_env(),
                workdir=tmp_path,
                ready_timeout=ready_timeout,
            )
        else:
            worker = _start_worker_in_netns(
                netns, discovery, worker_id, extra_args, concurrency, tmp_path, ready_timeout
            )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    _print_logs(started)


def _start_worker_in_netns(
    netns: str,
    discovery: str,
    worker_id: str,
    extra_args: Sequence[str],
    concurrency: int,
    folder: Path,
    ready_timeout: float,
) -> RunningWorker:
    stamp = time.monotonic_ns()
    ready = folder / f"worker-ready-{stamp}.json"
    log_path = folder / f"worker-{stamp}.log"
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "fastworker.worker", "--control-plane", discovery]
    argv += ["--task-modules", *TASK_MODULES, "--ready-file", str(ready), "--concurrency", str(concurrency)]
    argv += ["--worker-id", worker_id, *extra_args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    env.update(child_env())
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    info = wait_for_ready_file(ready, process, log_path, ready_timeout)
    assert info["pid"] == process.pid, "ip netns exec did not exec the worker in place"
    # argv[3:] in the logs should read like the other daemons': drop the "ip netns exec NS" prefix there.
    return RunningWorker(process=process, worker_id=str(info["worker_id"]), log_path=log_path, argv=argv[4:])


@pytest.fixture
def helper_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Helper processes a test starts (load generators); each is killed by pid at teardown if still running."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)  # reaps it and closes its pipes


# ------------------------------------------------------------------------------------------ report


@pytest.fixture
def security_report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``security_report(**numbers)``: numbers shown for this test in the run's terminal summary."""
    entries = request.config.stash.setdefault(REPORT_KEY, [])

    def record(**numbers: Any) -> None:
        entries.append((request.node.name, numbers))

    return record


#: Numbers added up over the run. ``ran_twice_held``: tasks that ran twice though no fault hit them while
#: running (held in a prefetch queue, or untouched): must be 0. ``ran_twice_after_loss``: re-runs of tasks
#: a lost worker was running (allowed, with retries left).
SUMMED = (
    "faults_injected",
    "tasks_accepted",
    "tasks_lost",
    "reruns_after_loss",
    "ran_twice_held",
    "ran_twice_after_loss",
    "frames_sent",
)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    entries = config.stash.get(REPORT_KEY, [])
    if not entries:
        return
    terminalreporter.section("fastworker security summary")
    totals: dict[str, int] = {}
    for name, numbers in entries:
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
        for key in SUMMED:
            if isinstance(numbers.get(key), int):
                totals[key] = totals.get(key, 0) + numbers[key]
    if totals:
        terminalreporter.write_line("TOTAL: " + ", ".join(f"{k}={v}" for k, v in totals.items()))
