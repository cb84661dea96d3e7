"""available_cpus: affinity capped by a cgroup CPU quota (v2 and v1, nested), never below 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastworker.client.cpus import available_cpus, cgroup_cpu_limit


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def host_cpus() -> int:
    return len(os.sched_getaffinity(0))


def test_a_v2_quota_of_one_and_a_half_cpus_rounds_up_to_two(tmp_path: Path) -> None:
    write(tmp_path / "proc", "0::/\n")
    write(tmp_path / "cg" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") == 1.5
    assert available_cpus(tmp_path / "cg", tmp_path / "proc") == min(2, host_cpus())


def test_the_tightest_quota_along_the_v2_ancestry_wins_and_max_means_none(tmp_path: Path) -> None:
    write(tmp_path / "proc", "0::/kubepods/pod1/ctr\n")
    write(tmp_path / "cg" / "kubepods" / "cpu.max", "400000 100000\n")
    write(tmp_path / "cg" / "kubepods" / "pod1" / "cpu.max", "50000 100000\n")
    write(tmp_path / "cg" / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") == 0.5
    assert available_cpus(tmp_path / "cg", tmp_path / "proc") == 1  # never 0


def test_a_v1_cfs_quota_limits_and_minus_one_does_not(tmp_path: Path) -> None:
    write(tmp_path / "proc", "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n0::/\n")
    base = tmp_path / "cg" / "cpu,cpuacct"
    write(base / "docker" / "abc" / "cpu.cfs_quota_us", "300000\n")
    write(base / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    write(base / "cpu.cfs_quota_us", "-1\n")
    write(base / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") == 3.0


@pytest.mark.parametrize("cpu_max", ["max 100000", "garbage", "0 100000", "100000 0", ""])
def test_no_or_unreadable_quota_leaves_the_affinity(tmp_path: Path, cpu_max: str) -> None:
    write(tmp_path / "proc", "0::/\n")
    write(tmp_path / "cg" / "cpu.max", cpu_max)
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") is None
    assert available_cpus(tmp_path / "cg", tmp_path / "proc") == host_cpus()


def test_without_cgroup_files_at_all_it_counts_the_affinity(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "nothing", tmp_path / "no-proc") == host_cpus()


def test_a_path_climbing_out_of_the_root_stays_inside_it(tmp_path: Path) -> None:
    write(tmp_path / "proc", "0::/../../etc\n")
    write(tmp_path / "cpu.max", "100000 100000\n")  # outside the cgroup root: never read
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") is None
