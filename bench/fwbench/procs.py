"""Processes the benchmark starts itself (peers, Redis, drivers): start, stop by pid, read CPU and RSS.

Every process started here is recorded; :func:`stop_all` stops whatever is still running (by pid:
SIGTERM, then SIGKILL after a bound), and :func:`reap_children` is the last resort after an
interruption (Ctrl-C while a harness was still waiting for a daemon to become ready): it stops
the benchmark's own direct children, found by their parent pid in ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

#: Processes started through :func:`start_process` that may still be running.
_STARTED: list[subprocess.Popen[bytes]] = []
#: Set by the SIGINT handler: an interruption can surface as another error (a daemon that got the
#: same Ctrl-C exits before it was ready), so the runner checks this after every run.
INTERRUPTED = False


def _on_sigint(signum: int, frame: object) -> None:
    global INTERRUPTED
    INTERRUPTED = True
    raise KeyboardInterrupt


def install_sigint_handler() -> None:
    """Ctrl-C raises KeyboardInterrupt wherever the benchmark is, also inside ``asyncio.run``.

    asyncio.run's own handler (used only while the default one is installed) merely cancels the
    main task, which a blocking wait for a daemon would not notice; with this one the exception
    unwinds through every ``finally`` that stops a process.
    """
    signal.signal(signal.SIGINT, _on_sigint)


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (utime + stime) of a process (all its threads) from /proc/<pid>/stat; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_rss_mb(pid: int) -> float | None:
    """Resident set size (VmRSS from /proc/<pid>/status) in MiB; None when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_run(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive free loopback ports (for daemons that derive ports from a base)."""
    for _ in range(attempts):
        base = free_port()
        if base + count > 65_535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no run of {count} free loopback ports found")


def start_process(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a process with stdout and stderr to ``log_path``; it is recorded for :func:`stop_all`.

    ``new_session`` puts it in its own process group (pgid = its pid), so that :func:`stop_process`
    also stops the children it forks (a Huey consumer's worker processes).
    """
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=new_session,
        )
    _STARTED.append(process)
    return process


def _signal(process: subprocess.Popen[bytes], sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, sig)
        else:
            os.kill(process.pid, sig)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0, group: bool = False) -> int:
    """SIGTERM by pid (or its own process group when ``group``), SIGKILL after ``timeout``; returns the exit code."""
    if process.poll() is None:
        _signal(process, signal.SIGTERM, group)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL, group)
            process.wait(timeout=timeout)
    elif group:
        _signal(process, signal.SIGKILL, group)  # children left behind by a leader that already exited
    with contextlib.suppress(ValueError):
        _STARTED.remove(process)
    return process.returncode


@contextlib.contextmanager
def running(process: subprocess.Popen[bytes], timeout: float = 5.0, group: bool = False) -> Iterator[None]:
    """Stop ``process`` (by pid) when the block ends, however it ends."""
    try:
        yield
    finally:
        stop_process(process, timeout, group)


def wait_for_log(
    process: subprocess.Popen[bytes], log_path: Path, needle: str, timeout: float, poll: float = 0.05
) -> None:
    """Wait (bounded) until ``needle`` shows up in the process's log; raise RuntimeError with the log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if needle in text:
            return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(poll)
    raise RuntimeError(f"{needle!r} not seen within {timeout:g} s in:\n{log_path.read_text(errors='replace')[-3000:]}")


def wait_for_port(process: subprocess.Popen[bytes], port: int, timeout: float, log_path: Path | None = None) -> None:
    """Wait (bounded) until 127.0.0.1:port accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    log = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
    raise RuntimeError(f"{process.args!r} not listening on port {port} (exit {process.poll()}):\n{log}")


def stop_all() -> None:
    """Stop every process started through :func:`start_process` that is still running."""
    for process in list(_STARTED):
        stop_process(process, timeout=3.0)


def _children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def reap_children(timeout: float = 5.0) -> list[int]:
    """SIGTERM (then SIGKILL) the benchmark's own direct children that are still alive; returns their pids.

    Only for the interrupted path: a harness daemon whose start was interrupted before it handed
    back its process object cannot be stopped any other way.
    """
    stop_all()
    if not Path("/proc").is_dir():
        return []
    pids = _children_of(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        still = []
        for pid in alive:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done == 0:
                still.append(pid)
        alive = still
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return pids
