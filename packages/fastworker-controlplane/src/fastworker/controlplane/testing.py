"""A harness that runs real control-plane processes on loopback for tests: free ports, bounded waits, stop by pid.

Used by FastWorker's own integration suite and by applications' tests::

    with run_controlplane(task_modules=["myapp.tasks"]) as cp:
        with SyncClient(cp.discovery) as client:
            assert client.submit("add", 1, 2) == 3

and, for subworkers (the control plane runs no task itself with ``--local-concurrency 0``)::

    with run_controlplane(extra_args=["--local-concurrency", "0"]) as cp:
        with run_worker(cp.discovery, task_modules=["myapp.tasks"], concurrency=2) as worker:
            ...
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastworker.worker._stopsignals import PARENT_PID_VARIABLE

#: Longest wait for a daemon's ready file, in seconds.
READY_TIMEOUT = 20.0
#: Longest wait for a daemon to exit after SIGTERM before it is killed, in seconds.
STOP_TIMEOUT = 15.0


#: Folders this harness made itself (no ``workdir``): removed when this Python process exits, so
#: test runs do not leave one folder per daemon in the temp dir; tests may read logs until then.
_OWN_FOLDERS: list[Path] = []


def _own_folder(prefix: str) -> Path:
    if not _OWN_FOLDERS:
        atexit.register(_remove_own_folders)
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    _OWN_FOLDERS.append(folder)
    return folder


def _remove_own_folders() -> None:
    while _OWN_FOLDERS:
        shutil.rmtree(_OWN_FOLDERS.pop(), ignore_errors=True)


class HarnessError(RuntimeError):
    """A daemon did not start or stop as expected; the message includes its output."""


@dataclass
class _Daemon:
    """What every daemon started by this harness has: its process, its log, a way to stop it by pid."""

    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        return self.process.pid

    def log(self) -> str:
        """Everything the daemon wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the daemon by pid and wait for it (SIGKILL after timeout); returns its exit code.

        A stopped (SIGSTOP) daemon is continued first, so that it can handle the SIGTERM.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
        return stop_process(self.process, timeout)


@dataclass
class RunningControlPlane(_Daemon):
    """A control-plane process started by :func:`run_controlplane`."""

    discovery: str = ""
    client: str = ""
    dispatch: str = ""
    dashboard: str | None = None
    #: Base URL of its /metrics and /healthz listener (None when started with metrics=False).
    metrics: str | None = None


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """Stop one process that this harness started: SIGTERM by pid, then SIGKILL if it does not exit."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            return process.wait(timeout=timeout)
    return process.returncode


def wait_for_ready_file(
    path: Path, process: subprocess.Popen[bytes], log_path: Path, timeout: float
) -> dict[str, object]:
    """Poll for a daemon's ready file (bounded); raise HarnessError with its log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                content: dict[str, object] = json.loads(path.read_text())
                return content
            except json.JSONDecodeError:
                pass  # being written
        if process.poll() is not None:
            raise HarnessError(f"daemon exited with {process.returncode} before it was ready:\n{log_path.read_text()}")
        time.sleep(0.02)
    stop_process(process)
    raise HarnessError(f"daemon not ready within {timeout:g} s:\n{log_path.read_text()}")


def start_controlplane(
    *,
    task_modules: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    discovery: str = "tcp://127.0.0.1:0",
    client: str = "tcp://127.0.0.1:0",
    dispatch: str = "tcp://127.0.0.1:0",
    env: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    ready_timeout: float = READY_TIMEOUT,
    dashboard: bool | str = False,
    metrics: bool | str = True,
) -> RunningControlPlane:
    """Start ``fastworker-controlplane`` as a subprocess and wait until it serves.

    Port 0 lets the OS pick free ports; the real addresses come from the ready file. With
    ``dashboard`` it serves the web dashboard too, on a free loopback port or on the ``HOST:PORT``
    given; ``.dashboard`` is its URL (None if it could not be served). Likewise ``metrics`` (on by
    default, on a free loopback port) and ``.metrics``.
    """
    folder = Path(workdir) if workdir else _own_folder("fastworker-cp-")
    ready = folder / f"ready-{time.monotonic_ns()}.json"
    log_path = folder / f"controlplane-{time.monotonic_ns()}.log"
    argv = [
        sys.executable,
        "-m",
        "fastworker.controlplane",
        "--discovery-address",
        discovery,
        "--client-address",
        client,
        "--dispatch-address",
        dispatch,
        *(_dashboard_flags(dashboard)),
        *(
            ["--metrics-address", metrics if isinstance(metrics, str) else "127.0.0.1:0"]
            if metrics
            else ["--no-metrics"]
        ),
        "--ready-file",
        str(ready),
        *(["--task-modules", *task_modules] if task_modules else []),
        *extra_args,
    ]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    child_env[PARENT_PID_VARIABLE] = str(os.getpid())  # it stops if this process dies without stopping it
    child_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=os.getcwd())
    try:
        info = wait_for_ready_file(ready, process, log_path, ready_timeout)
    except BaseException:
        stop_process(process)  # not ready, or interrupted while waiting: never leave it running
        raise
    return RunningControlPlane(
        process=process,
        discovery=str(info["discovery"]),
        client=str(info["client"]),
        dispatch=str(info["dispatch"]),
        dashboard=info["dashboard"] if isinstance(info.get("dashboard"), str) else None,  # type: ignore[arg-type]
        metrics=info["metrics"] if isinstance(info.get("metrics"), str) else None,  # type: ignore[arg-type]
        log_path=log_path,
        argv=argv,
    )


def _dashboard_flags(dashboard: bool | str) -> list[str]:
    if not dashboard:
        return ["--no-dashboard"]
    return ["--dashboard-address", dashboard if isinstance(dashboard, str) else "127.0.0.1:0"]


@contextlib.contextmanager
def run_controlplane(**kwargs: object) -> Iterator[RunningControlPlane]:
    """Context manager around :func:`start_controlplane` that always stops the daemon by pid."""
    control_plane = start_controlplane(**kwargs)  # type: ignore[arg-type]
    try:
        yield control_plane
    finally:
        control_plane.stop()


@dataclass
class RunningWorker(_Daemon):
    """A subworker process started by :func:`start_worker`."""

    worker_id: str = ""


def start_worker(
    control_plane: str,
    *,
    task_modules: Sequence[str],
    concurrency: int | None = None,
    worker_id: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> RunningWorker:
    """Start ``fastworker-worker`` as a subprocess and wait until it registered with the control plane.

    ``control_plane`` is the discovery address (``RunningControlPlane.discovery``). The worker's
    environment is this process's without ``FASTWORKER_*`` variables, plus ``env``.
    """
    if isinstance(task_modules, str):
        raise TypeError(
            f"task_modules must be a sequence of module names, not a str (did you mean [{task_modules!r}]?)"
        )
    folder = Path(workdir) if workdir else _own_folder("fastworker-worker-")
    stamp = time.monotonic_ns()
    ready = folder / f"worker-ready-{stamp}.json"
    log_path = folder / f"worker-{stamp}.log"
    argv = [
        sys.executable,
        "-m",
        "fastworker.worker",
        "--control-plane",
        control_plane,
        "--task-modules",
        *task_modules,
        "--ready-file",
        str(ready),
        *(["--concurrency", str(concurrency)] if concurrency is not None else []),
        *(["--worker-id", worker_id] if worker_id is not None else []),
        *extra_args,
    ]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    child_env[PARENT_PID_VARIABLE] = str(os.getpid())  # it stops if this process dies without stopping it
    child_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=os.getcwd())
    try:
        info = wait_for_ready_file(ready, process, log_path, ready_timeout)
    except BaseException:
        stop_process(process)  # not ready, or interrupted while waiting: never leave it running
        raise
    return RunningWorker(process=process, worker_id=str(info["worker_id"]), log_path=log_path, argv=argv)


@contextlib.contextmanager
def run_worker(control_plane: str, **kwargs: object) -> Iterator[RunningWorker]:
    """Context manager around :func:`start_worker` that always stops the daemon by pid."""
    worker = start_worker(control_plane, **kwargs)  # type: ignore[arg-type]
    try:
        yield worker
    finally:
        worker.stop()
