"""Helpers shared by the security suite's test modules: child environments, memory readings, fixture types."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from fastworker.controlplane.testing import RunningControlPlane, RunningWorker

HERE = Path(__file__).resolve().parent
TASK_MODULES = ("fwsec_tasks",)

StartControlPlane = Callable[..., RunningControlPlane]
StartWorker = Callable[..., RunningWorker]


def child_env(**extra: str) -> dict[str, str]:
    """Environment additions for daemons and helper processes: this directory first on PYTHONPATH."""
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(part for part in (str(HERE), existing) if part), **extra}


# ------------------------------------------------------------------------------------------ memory


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def rss_mb(pid: int) -> float:
    return proc_status_kb(pid, "VmRSS") / 1024


def hwm_mb(pid: int) -> float:
    return proc_status_kb(pid, "VmHWM") / 1024


class RssSampler:
    """Samples a process's VmRSS every few milliseconds in a thread; ``peak`` is the highest seen (MB)."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = rss_mb(pid)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
