"""(d)-(e): the same trivial workloads through 1 and 2 subworkers with local execution off, and CPU-bound scaling.

The control plane runs with ``--local-concurrency 0``, so every task goes through the dispatch
path to a subworker, which runs sync tasks in its child processes (``--worker-concurrency`` of
them per worker). Workers are started and registered before the clock starts.
"""

from __future__ import annotations

import asyncio
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
    latency_summary,
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


#: The busy worker's slots in workers1_critical_latency (its prefetch room is 4 times this).
BUSY_CONCURRENCY = 4
#: The background load there: this many loops, each keeping a batch of 2 ms spin tasks in flight.
BUSY_LOOPS, BUSY_BATCH, BUSY_SPIN_MS = 2, 40, 2.0


@scenario(
    "workers1_critical_latency",
    f"critical add(i, 1) one after another (--samples / 10) through 1 subworker of {BUSY_CONCURRENCY} slots kept"
    f" busy by {BUSY_LOOPS} loops of {BUSY_BATCH} {BUSY_SPIN_MS:g} ms spin tasks; times from the task's own record",
    display=(
        Metric("start_wait_p50_ms", "submit → started, p50, ms", ".2f"),
        Metric("p50_ms", "submit → result, p50, ms", ".2f"),
        Metric("p90_ms", "submit → result, p90, ms", ".2f"),
        Metric("report_lag_p50_ms", "finished → result at the client, p50, ms", ".2f"),
    ),
    controlplane_args=workers_only,
    default=False,
)
async def critical_latency_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    """How long a critical task waits behind prefetched normal ones on a busy worker, and where the time goes."""
    control_plane = _cp(cp)
    n = max(20, opts.samples // 10)
    problems: list[str] = []
    waits: list[float] = []
    totals: list[float] = []
    lags: list[float] = []
    wrong = 0
    with fleet(control_plane, 1, BUSY_CONCURRENCY, prefix="bench-busy"):
        async with Client(control_plane.discovery) as client, Client(control_plane.discovery) as load:
            problems += await wait_for_workers(client, 1)
            stop = asyncio.Event()

            async def keep_busy() -> None:
                while not stop.is_set():
                    ids = await load.delay_many([("spin", (BUSY_SPIN_MS,))] * BUSY_BATCH)
                    await load.wait_many(ids, timeout=opts.wait_timeout)

            loops = [asyncio.ensure_future(keep_busy()) for _ in range(BUSY_LOOPS)]
            try:
                await asyncio.sleep(1.0)  # the worker's prefetch room fills, its run times settle
                for i in range(n):
                    submitted = time.time()
                    task_id = await client.delay("add", i, 1, priority="critical")
                    value = await client.result(task_id, timeout=opts.wait_timeout)
                    received = time.time()
                    info = await client.status(task_id)
                    wrong += value != i + 1
                    totals.append(received - submitted)
                    waits.append((info.started_at or received) - submitted)
                    lags.append(received - (info.finished_at or received))
            finally:
                stop.set()
                await asyncio.gather(*loops, return_exceptions=True)
    if wrong:
        problems.append(f"{wrong} of {n} critical tasks returned a wrong value")
    total = latency_summary(totals)
    return {
        "valid": not problems,
        "wrong": wrong,
        "lost": 0,
        "samples": n,
        "start_wait_p50_ms": latency_summary(waits)["p50_ms"],
        "p50_ms": total["p50_ms"],
        "p90_ms": total["p90_ms"],
        "report_lag_p50_ms": latency_summary(lags)["p50_ms"],
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
