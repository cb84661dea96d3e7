"""How many CPUs this process may really use: the default of ``--local-concurrency`` and ``--concurrency``.

``os.cpu_count()`` counts the host's cores, so a daemon in a container limited to 2 CPUs on a
64-core node would start 64 task slots (64 child processes for a subworker) and thrash. This
takes the CPU affinity, then the cgroup CPU quota (v2 ``cpu.max`` of this process's cgroup and
its ancestors, or v1 ``cpu.cfs_quota_us``), rounded up, and never less than 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit"]


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)


def cgroup_cpu_limit(cgroup_root: Path, proc_cgroup: Path) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (the tightest along its ancestors), or None for none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        controllers, _, path = line.partition(":")[2].partition(":")
        if not controllers:  # v2 unified hierarchy: "0::/path"
            limits += _v2_limits(cgroup_root, path)
        elif "cpu" in controllers.split(","):  # v1: "4:cpu,cpuacct:/path"
            limits += _v1_limits(cgroup_root / controllers, path)
    return min(limits) if limits else None


def _ancestry(base: Path, path: str) -> list[Path]:
    """The cgroup directory of ``path`` under ``base`` and its parents up to ``base`` (a namespaced "/" is base)."""
    parts = [part for part in path.strip().split("/") if part and part != ".."]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_limits(root: Path, path: str) -> list[float]:
    found = []
    for directory in _ancestry(root, path):
        try:
            quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
        except OSError:
            continue
        if quota != "max" and _positive(quota) and _positive(period):
            found.append(int(quota) / int(period))
    return found


def _v1_limits(base: Path, path: str) -> list[float]:
    found = []
    for directory in _ancestry(base, path):
        try:
            quota = (directory / "cpu.cfs_quota_us").read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            continue
        if _positive(quota) and _positive(period):  # -1: no quota
            found.append(int(quota) / int(period))
    return found


def _positive(text: str) -> bool:
    return text.isdigit() and int(text) > 0
