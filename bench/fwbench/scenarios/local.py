"""(a)-(c): trivial tasks run by the control plane itself (its local slots), one asyncio client."""

from __future__ import annotations

from typing import Any

from fastworker.controlplane.testing import RunningControlPlane
from fwbench.core import (
    Metric,
    Options,
    Target,
    latency_run,
    scenario,
    submit_batches,
    submit_individually,
    throughput_run,
)

THROUGHPUT_DISPLAY = (
    Metric("e2e_tps", "end to end, tasks/s"),
    Metric("submit_tps", "submit only, tasks/s"),
    Metric("cp_cpu_us_per_task", "control plane CPU, µs/task", ",.1f"),
    Metric("client_cpu_us_per_task", "client CPU, µs/task", ",.1f"),
)

LATENCY_DISPLAY = (
    Metric("p50_ms", "p50, ms", ".3f"),
    Metric("p90_ms", "p90, ms", ".3f"),
    Metric("p99_ms", "p99, ms", ".3f"),
    Metric("max_ms", "max, ms", ".3f"),
    Metric("sequential_tps", "sequential, tasks/s"),
    Metric("cp_cpu_us_per_task", "control plane CPU, µs/task", ",.1f"),
    Metric("client_cpu_us_per_task", "client CPU, µs/task", ",.1f"),
)


def _cp(cp: RunningControlPlane | None) -> RunningControlPlane:
    assert cp is not None
    return cp


@scenario(
    "delay",
    "N individual delay('add', i, i) calls in flight at once (asyncio.gather), then wait_many; local slots",
    display=THROUGHPUT_DISPLAY,
    targets=[Target("e2e_tps", ">=", 5_000, "≥ 5,000")],
)
async def delay_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    return await throughput_run(_cp(cp), opts, submit_individually)


@scenario(
    "delay_many",
    "the same N tasks via delay_many in batches (all batches in flight at once), then wait_many; local slots",
    display=THROUGHPUT_DISPLAY,
    targets=[Target("e2e_tps", ">=", 20_000, "≥ 20,000")],
)
async def delay_many_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    return await throughput_run(_cp(cp), opts, submit_batches)


@scenario(
    "submit_latency",
    "sequential submit('add', i, 1) round trips after a warm-up; local slots",
    display=LATENCY_DISPLAY,
    targets=[Target("p50_ms", "<=", 0.5, "≤ 0.5"), Target("p99_ms", "<=", 2.0, "≤ 2")],
)
async def submit_latency_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    return await latency_run(_cp(cp), opts)
