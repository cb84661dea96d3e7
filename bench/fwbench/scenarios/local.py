"""(a)-(c): trivial tasks run by the control plane itself (its local slots), one asyncio client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastworker.client import Client
from fastworker.controlplane.testing import RunningControlPlane
from fwbench.core import (
    Metric,
    Options,
    Target,
    latency_run,
    latency_summary,
    scenario,
    submit_batches,
    submit_individually,
    throughput_run,
)

#: Seconds between the probe's stats() calls in stats_under_load.
PROBE_INTERVAL = 0.01

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


@scenario(
    "stats_under_load",
    "delay_many's N tasks, while a second client calls stats() every 10 ms: how long the control plane"
    " keeps a request waiting while its local slots are busy; local slots",
    display=(
        Metric("e2e_tps", "end to end, tasks/s"),
        Metric("probe_p50_ms", "stats() under load, p50, ms", ".1f"),
        Metric("probe_p90_ms", "stats() under load, p90, ms", ".1f"),
        Metric("probe_max_ms", "stats() under load, max, ms", ".1f"),
        Metric("probes", "stats() calls answered", ",.0f"),
    ),
    default=False,
)
async def stats_under_load_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    control_plane = _cp(cp)
    samples: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        async with Client(control_plane.discovery) as client:
            await client.stats()
            while not stop.is_set():
                started = time.perf_counter()
                await client.stats()
                samples.append(time.perf_counter() - started)
                await asyncio.sleep(PROBE_INTERVAL)

    prober = asyncio.ensure_future(probe())
    try:
        result = await throughput_run(control_plane, opts, submit_batches)
    finally:
        stop.set()
        await prober
    probes = latency_summary(samples)
    result.update(
        probes=len(samples),
        probe_p50_ms=probes["p50_ms"],
        probe_p90_ms=probes["p90_ms"],
        probe_max_ms=probes["max_ms"],
    )
    return result
