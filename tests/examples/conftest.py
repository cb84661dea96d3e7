"""Helpers for the example tests: run an example's one command as a subprocess, bounded, stopped by its own pid.

Each example runs the way its README says (``python examples/.../run.py``) with this interpreter;
the child gets this process's environment without ``FASTWORKER_*`` variables. A child that
overruns its bound is stopped with its process group (it was started in a session of its own, so
the group holds only what it started).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@dataclass
class Finished:
    """What an example printed and how it exited."""

    returncode: int
    output: str


def example_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``FASTWORKER_*``, plus extra (a PYTHONPATH is put in front)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTWORKER_")}
    if "PYTHONPATH" in extra and env.get("PYTHONPATH"):
        extra = {**extra, "PYTHONPATH": os.pathsep.join([extra["PYTHONPATH"], env["PYTHONPATH"]])}
    env.update(extra)
    return env


def with_pythonpath(*folders: Path) -> dict[str, str]:
    """Env additions for a daemon that imports from folders (ahead of this process's PYTHONPATH)."""
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join([*(str(f) for f in folders), *([existing] if existing else [])])}


def run_example(argv: Sequence[str], *, cwd: Path = ROOT, timeout: float = 120.0, **env: str) -> Finished:
    """Run ``python ARGV...`` to completion (bounded) and return its combined output."""
    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=cwd,
        env=example_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        output, _ = process.communicate()
        raise AssertionError(f"{' '.join(argv)} did not finish within {timeout:g} s:\n{output}") from None
    return Finished(process.returncode, output)


def stop_group(process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group of a child started with ``start_new_session``, then SIGKILL it."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


RunExample = Callable[..., Finished]


@pytest.fixture(name="run_example")
def run_example_fixture() -> RunExample:
    """``run_example(argv, cwd=ROOT, timeout=120, **env)``: see :func:`run_example`."""
    return run_example


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """``free_port()``: a loopback port that was free a moment ago."""
    return free_port


Spawn = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(argv, **env)``: start ``python ARGV...`` in the background; stopped (with its group) at teardown.

    Its output goes to a log file that is printed at teardown (pytest shows it when the test failed).
    """
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(argv: Sequence[str], **env: str) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"spawned-{len(started)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, *argv],
                env=example_env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append((process, log_path))
        return process

    yield start
    for process, _ in started:
        stop_group(process)
    for process, log_path in started:
        print(f"---- {' '.join(map(str, process.args))} (pid {process.pid}) ----")  # type: ignore[arg-type]
        print(log_path.read_text(errors="replace"))


@pytest.fixture(name="with_pythonpath")
def with_pythonpath_fixture() -> Callable[..., dict[str, str]]:
    """``with_pythonpath(folder, ...)``: env additions for daemons that import from those folders."""
    return with_pythonpath
