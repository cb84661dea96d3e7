"""(f): the control plane's resident memory idle, with 100,000 tasks queued, and after they drained.

The control plane runs with ``--local-concurrency 0`` and a result cache as large as the queue
(so every result can be checked after the drain). One cycle: queue N ``add(i, i)`` via
``delay_many`` while no worker is connected, read RSS, start 2 subworkers, wait until all N
finished, stop the workers, read RSS, then check every result. Further cycles repeat it on the
same control plane: the cache is full after the first, so later cycles only replace entries; the
growth of the last cycle over the one before is the leak figure (the second cycle is the first to
hold a full cache and a full queue at once, so the allocator's high-water mark grows there).
RSS is VmRSS from /proc/<pid>/status, read after a short settle.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from fastworker.client import Client
from fastworker.controlplane.testing import HarnessError, RunningControlPlane, start_controlplane
from fwbench.core import (
    TASK_MODULE,
    Metric,
    Options,
    Target,
    collect_infos,
    controlplane_env,
    fleet,
    scenario,
    short,
    submit_batches,
    verify,
    wait_for_workers,
)
from fwbench.procs import process_rss_mb
from fwbench.scenarios.local import _cp

SETTLE_S = 1.0


async def settled_rss(pid: int, settle: float = SETTLE_S) -> float | None:
    """RSS in MiB after ``settle`` seconds (the last of a few reads)."""
    value = None
    for _ in range(3):
        await asyncio.sleep(settle / 3)
        value = process_rss_mb(pid)
    return value


def _rss_args(opts: Options) -> list[str]:
    return ["--local-concurrency", "0", "--result-cache-size", str(max(1, opts.rss_tasks))]


def dashboard_available() -> tuple[bool, str]:
    """Whether the control plane can serve the in-process web dashboard here (and the harness can ask for it)."""
    if "dashboard" not in inspect.signature(start_controlplane).parameters:
        return False, "testing.start_controlplane has no dashboard keyword"
    try:
        found = importlib.util.find_spec("fastworker.dashboard.web.app") is not None
    except Exception as exc:  # a half-installed package raises while importing its parents
        return False, f"fastworker.dashboard.web is not importable: {short(exc)}"
    return (True, "") if found else (False, "fastworker.dashboard.web is not installed")


async def dashboard_rss(opts: Options) -> tuple[float | None, float | None, str]:
    """RSS of a control plane serving the web dashboard: idle, and once a browser loaded a page (None, None and why not).

    The control plane loads the dashboard's web stack on the first connection, so both are shown.
    """
    ok, why = dashboard_available()
    if not ok:
        return None, None, why
    with tempfile.TemporaryDirectory(prefix="fastworker-bench-dash-") as workdir:
        try:
            cp = start_controlplane(
                task_modules=[TASK_MODULE],
                extra_args=_rss_args(opts),
                env=controlplane_env(),
                workdir=Path(workdir),
                dashboard=True,
            )
        except HarnessError as exc:
            return None, None, f"control plane with dashboard did not start: {exc}"[:500]
        try:
            idle = await settled_rss(cp.pid, 2 * SETTLE_S)
            if cp.dashboard is None:
                return None, None, "control plane started but served no dashboard: " + cp.log()[-300:]
            try:
                await asyncio.to_thread(_get, cp.dashboard + "/")
            except OSError as exc:
                return idle, None, f"the dashboard at {cp.dashboard} did not answer: {short(exc)}"
            return idle, await settled_rss(cp.pid, 2 * SETTLE_S), f"dashboard at {cp.dashboard}"
        finally:
            cp.stop()


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()


async def wait_until_finished(client: Client, pid: int, finished: int, timeout: float) -> tuple[float, list[str]]:
    """Poll the counters (every 50 ms, bounded) until ``finished`` tasks succeeded or failed; (peak RSS, problems)."""
    deadline = time.monotonic() + timeout
    done = 0
    peak = 0.0
    while time.monotonic() < deadline:
        peak = max(peak, process_rss_mb(pid) or 0.0)
        stats = await client.stats()
        done = int(stats.get("succeeded") or 0) + int(stats.get("failed") or 0)
        if done >= finished:
            return peak, []
        await asyncio.sleep(0.05)
    return peak, [f"wait_many: drain incomplete after {timeout:g} s ({done} of {finished} finished)"]


@scenario(
    "rss",
    "control-plane RSS: idle (dashboard off; and on, if importable), N tasks queued (no one to run them), "
    "after 2 subworkers drained them; --rss-cycles times (3)",
    display=(
        Metric("idle_rss_mb", "idle, dashboard off, MiB", ",.1f"),
        Metric("idle_dashboard_rss_mb", "idle, dashboard on (default), MiB", ",.1f"),
        Metric("dashboard_loaded_rss_mb", "dashboard on, after a first page, MiB", ",.1f"),
        Metric("queued_rss_mb", "N queued, MiB", ",.1f"),
        Metric("drained_rss_mb_1", "after 1st drain, MiB", ",.1f"),
        Metric("growth_after_drain_mb", "after 1st drain − idle, MiB", ",.1f"),
        Metric("cached_result_bytes", "… per cached result, bytes", ",.0f"),
        Metric("queued_peak_rss_mb", "queued peak (all cycles), MiB", ",.1f"),
        Metric("drain_peak_rss_mb", "peak while draining, MiB", ",.1f"),
        Metric("drained_rss_mb", "after last drain, MiB", ",.1f"),
        Metric("drain_vs_peak_mb", "after last drain − queued peak, MiB", ",.1f"),
        Metric("cycle_growth_mb", "last cycle's growth (leak), MiB", ",.1f"),
        Metric("drain_tps", "drain through 2 workers, tasks/s"),
    ),
    targets=[
        Target("idle_rss_mb", "<=", 40, "≤ 40"),
        Target("idle_dashboard_rss_mb", "<=", 40, "≤ 40"),
        Target("queued_rss_mb", "<=", 100, "≤ 100 (100k)", min_tasks=100_000),
        Target("drain_vs_peak_mb", "<=", 0, "≤ 0"),
        Target("cycle_growth_mb", "<=", 10, "≤ 10"),
    ],
    controlplane_args=_rss_args,
)
async def rss_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    cp = _cp(cp)
    n = opts.rss_tasks
    problems: list[str] = []
    result: dict[str, Any] = {"tasks": n, "problems": problems, "wrong": 0, "lost": 0}
    result["idle_rss_mb"] = await settled_rss(cp.pid)  # before any client connected
    queued: list[float] = []
    drained: list[float] = []
    async with Client(cp.discovery) as client:
        for cycle in range(max(1, opts.rss_cycles)):
            ids, submit_problems = await submit_batches(client, n, opts)
            problems += submit_problems
            stats = await client.stats()
            if stats.get("queued") != sum(1 for i in ids if i is not None):
                problems.append(f"cycle {cycle}: stats say {stats.get('queued')} queued, submitted {len(ids)}")
            queued.append(await settled_rss(cp.pid) or float("nan"))
            finished_before = int(stats.get("succeeded") or 0) + int(stats.get("failed") or 0)
            accepted = [task_id for task_id in ids if task_id is not None]
            with fleet(cp, 2, opts.worker_concurrency, prefix=f"bench-rss{cycle}"):
                problems += await wait_for_workers(client, 2)
                t0 = time.perf_counter()
                peak, drain_problems = await wait_until_finished(
                    client, cp.pid, finished_before + len(accepted), max(opts.wait_timeout, n / 500)
                )
                elapsed = time.perf_counter() - t0
            problems += drain_problems
            result[f"drain_tps_{cycle + 1}"] = n / elapsed
            result[f"drain_peak_rss_mb_{cycle + 1}"] = peak
            drained.append(await settled_rss(cp.pid) or float("nan"))  # before the check below allocates
            infos, wait_problems = await collect_infos(client, accepted, opts.wait_timeout)
            problems += wait_problems
            correct, wrong, lost = verify(ids, infos, lambda i: 2 * i, problems)
            result["wrong"] += wrong
            result["lost"] += lost
            result[f"queued_rss_mb_{cycle + 1}"] = queued[-1]
            result[f"drained_rss_mb_{cycle + 1}"] = drained[-1]
        stats = await client.stats()
    idle = result["idle_rss_mb"] or float("nan")
    result.update(
        {
            "queued_rss_mb": queued[0],
            "drained_rss_mb": drained[-1],
            "queued_peak_rss_mb": max(queued),
            "growth_after_drain_mb": drained[0] - idle,
            "cached_result_bytes": (drained[0] - idle) * 1024 * 1024 / n,
            "drain_vs_peak_mb": drained[-1] - max(queued),
            "drain_tps": result["drain_tps_1"],
            "drain_peak_rss_mb": max(v for k, v in result.items() if k.startswith("drain_peak_rss_mb_")),
            "cache_size": stats.get("cache_size"),
        }
    )
    if len(drained) > 1:
        result["cycle_growth_mb"] = drained[-1] - drained[-2]
    dash, loaded, note = await dashboard_rss(opts)
    if dash is not None:
        result["idle_dashboard_rss_mb"] = dash
    if loaded is not None:
        result["dashboard_loaded_rss_mb"] = loaded
    result["dashboard_note"] = note
    result["valid"] = result["wrong"] == 0 and result["lost"] == 0 and not any("wait_many" in p for p in problems)
    return result
