"""(d)-(e): the same trivial workloads through 1 and 2 subworkers with local execution off, and CPU-bound scaling.

The control plane runs with ``--local-concurrency 0``, so every task goes through the dispatch
path to a subworker, which runs sync tasks in its child processes (``--worker-concurrency`` of
them per worker). Workers are started and registered before the clock starts.
"""

from __future__ import annotations

import time
from typing import Any

from fastworker.client import Client, TaskState
from fastworker.controlplane.testing import RunningControlPlane
from fwbench.core import (
    Metric,
    Options,
    Target,
    fleet,
    latency_run,
    scenario,
    submit_batches,
    submit_individually,
    throughput_run,
    wait_for_workers,
)
from fwbench.scenarios.local import LATENCY_DISPLAY, THROUGHPUT_DISPLAY, _cp


def workers_only(opts: Options) -> list[str]:
    return ["--local-concurrency", "0"]


def _register(count: int) -> None:
    plural = "s" if count > 1 else ""
    target = [Target("e2e_tps", ">=", 5_000, "≥ 5,000")] if count == 2 else []

    @scenario(
        f"workers{count}_delay",
        f"as delay, through {count} subworker{plural} (local execution off)",
        display=THROUGHPUT_DISPLAY,
        targets=target,
        controlplane_args=workers_only,
    )
    async def delay_through_workers(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
        return await throughput_run(_cp(cp), opts, submit_individually, workers=count)

    @scenario(
        f"workers{count}_delay_many",
        f"as delay_many, through {count} subworker{plural} (local execution off)",
        display=THROUGHPUT_DISPLAY,
        targets=target,
        controlplane_args=workers_only,
    )
    async def delay_many_through_workers(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
        return await throughput_run(_cp(cp), opts, submit_batches, workers=count)

    @scenario(
        f"workers{count}_submit_latency",
        f"as submit_latency, through {count} subworker{plural} (local execution off)",
        display=LATENCY_DISPLAY,
        controlplane_args=workers_only,
    )
    async def latency_through_workers(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
        return await latency_run(_cp(cp), opts, workers=count)


_register(1)
_register(2)


async def fleet_throughput(
    cp: RunningControlPlane,
    opts: Options,
    workers: int,
    concurrency: int,
    call: tuple[str, tuple[Any, ...], Any],
    n: int,
) -> tuple[float, list[str]]:
    """Tasks/s for n ``name(*args)`` tasks via delay_many through ``workers`` subworkers; each result is checked.

    ``call`` is (task name, args, expected result).
    """
    name, args, expected = call
    problems: list[str] = []
    with fleet(cp, workers, concurrency, prefix=f"bench-w{workers}c{concurrency}"):
        async with Client(cp.discovery) as client:
            problems += await wait_for_workers(client, workers)
            t0 = time.perf_counter()
            ids = await client.delay_many([(name, args)] * n)
            infos = await client.wait_many(ids, timeout=opts.wait_timeout)
            elapsed = time.perf_counter() - t0
    bad = [info for info in infos if info.state is not TaskState.SUCCESS or info.result != expected]
    if bad:
        problems.append(f"{len(bad)} of {n} tasks wrong, e.g. {bad[0].state.value} {bad[0].result!r} {bad[0].error}")
    used = {info.worker for info in infos}
    if len(used) != workers:
        problems.append(f"expected {workers} workers to run tasks, saw {sorted(map(str, used))}")
    return n / elapsed, problems


@scenario(
    "cpu_scaling",
    "a CPU-bound 5 ms task (spin) through 1 subworker, then 2 (concurrency 1 each), local execution off",
    display=(
        Metric("one_worker_tps", "1 worker, tasks/s", ",.1f"),
        Metric("two_workers_tps", "2 workers, tasks/s", ",.1f"),
        Metric("scaling", "scaling 1 -> 2 workers", ".2f"),
    ),
    targets=[Target("scaling", ">=", 1.7, "≥ 1.7×")],
    controlplane_args=workers_only,
)
async def cpu_scaling_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    n = opts.cpu_tasks
    one, problems_one = await fleet_throughput(_cp(cp), opts, 1, 1, ("spin", (5.0,), 5.0), n)
    two, problems_two = await fleet_throughput(_cp(cp), opts, 2, 1, ("spin", (5.0,), 5.0), n)
    problems = problems_one + problems_two
    return {
        "valid": not problems,
        "wrong": 0,
        "lost": 0,
        "tasks": 2 * n,
        "one_worker_tps": one,
        "two_workers_tps": two,
        "scaling": two / one,
        "ideal_tps_per_worker": 1000 / 5.0,
        "problems": problems,
    }


SWEEP_CONCURRENCY = (1, 2, 4, 8, 16, 32)


@scenario(
    "worker_sweep",
    "delay_many throughput of add(1, 1) through 1 and 2 subworkers at each worker concurrency",
    display=tuple(
        Metric(f"w{w}_c{c}_tps", f"{w} worker{'s' if w > 1 else ''} × concurrency {c}, tasks/s")
        for w in (1, 2)
        for c in SWEEP_CONCURRENCY
    ),
    controlplane_args=workers_only,
    default=False,
)
async def worker_sweep_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    n = min(opts.tasks, 10_000)
    result: dict[str, Any] = {"wrong": 0, "lost": 0, "tasks": n, "problems": []}
    for workers in (1, 2):
        for concurrency in SWEEP_CONCURRENCY:
            tps, problems = await fleet_throughput(_cp(cp), opts, workers, concurrency, ("add", (1, 1), 2), n)
            result[f"w{workers}_c{concurrency}_tps"] = tps
            result["problems"] += [f"w{workers} c{concurrency}: {p}" for p in problems]
    result["valid"] = not result["problems"]
    return result
