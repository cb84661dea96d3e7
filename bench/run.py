"""FastWorker benchmark suite: ``python bench/run.py`` (see bench/README.md).

Every scenario run gets a fresh control plane (started by pid on free loopback ports through
``fastworker.controlplane.testing``) that loads ``bench/tasks.py``; each scenario is an async
function that drives it with a :class:`fastworker.client.Client` and returns a dict of metrics.
The runner repeats each scenario, reports the median and the spread (min-max) of every metric,
prints a table and writes JSON. Targets are shown for comparison, never asserted; the exit code
is non-zero only when a run failed or lost or corrupted tasks (so ``--quick`` is a smoke test).

Adding a scenario: write ``async def my_scenario(cp, opts) -> dict[str, Any]`` and decorate it
with ``@scenario("name", "what it measures", display=[...], targets=[...])``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_JSON = BENCH_DIR / "results" / "latest.json"
#: The module the control plane imports (bench/ is put on its PYTHONPATH).
TASK_MODULE = "tasks"


def _ensure_importable() -> list[str]:
    """Make the monorepo's packages importable when they are not installed; returns the dirs added."""
    try:
        importlib.import_module("fastworker.client")
        importlib.import_module("fastworker.controlplane.testing")
        return []
    except ImportError:
        added = [str(src) for src in sorted((REPO_ROOT / "packages").glob("*/src")) if src.is_dir()]
        sys.path[:0] = added
        importlib.invalidate_caches()
        return added


_ADDED_PATHS = _ensure_importable()

from fastworker.client import Client, FastworkerError, TaskInfo, TaskState  # noqa: E402
from fastworker.controlplane.testing import (  # noqa: E402
    HarnessError,
    RunningControlPlane,
    RunningWorker,
    start_controlplane,
    start_worker,
)

# ----------------------------------------------------------------------------------------- options


@dataclass
class Options:
    """What the scenarios are asked to do (from the command line)."""

    tasks: int = 20_000
    batch_size: int = 1_000
    samples: int = 2_000
    warmup: int = 200
    local_concurrency: int | None = None
    wait_timeout: float = 120.0


# ---------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Target:
    """A goal for one metric's median, shown next to it (never asserted)."""

    metric: str
    op: str  # ">=" or "<="
    value: float
    text: str

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value >= self.value if self.op == ">=" else value <= self.value


@dataclass(frozen=True)
class Metric:
    """How one metric is shown in the table: key in the run dict, label, format spec."""

    key: str
    label: str
    fmt: str = ",.0f"


ScenarioFn = Callable[[RunningControlPlane, Options], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Scenario:
    """A registered scenario."""

    name: str
    description: str
    fn: ScenarioFn
    display: tuple[Metric, ...]
    targets: tuple[Target, ...] = ()
    controlplane_args: Callable[[Options], list[str]] | None = None


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    description: str,
    *,
    display: Sequence[Metric],
    targets: Sequence[Target] = (),
    controlplane_args: Callable[[Options], list[str]] | None = None,
) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register a scenario: an async function (control plane, options) -> dict of metrics.

    The dict should carry ``valid`` (bool), ``wrong`` and ``lost`` (ints) and any number of
    numeric metrics; ``problems`` (a list of strings) explains what went wrong.
    """

    def register(fn: ScenarioFn) -> ScenarioFn:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        SCENARIOS[name] = Scenario(name, description, fn, tuple(display), tuple(targets), controlplane_args)
        return fn

    return register


# ----------------------------------------------------------------------------------------- helpers

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (utime + stime) of a process (all its threads) from /proc/<pid>/stat; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def per_task_us(before: float | None, after: float | None, count: int) -> float | None:
    if before is None or after is None or count <= 0:
        return None
    return (after - before) / count * 1e6


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (0 <= q <= 100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def collect_infos(client: Client, ids: Sequence[str], timeout: float) -> tuple[list[TaskInfo | None], list[str]]:
    """Wait for all ids; on timeout or a missing id, fall back to ``status`` per id. None means lost."""
    try:
        infos: list[TaskInfo | None] = list(await client.wait_many(ids, timeout=timeout))
        return infos, []
    except FastworkerError as exc:
        problems = [f"wait_many: {_short(exc)}"]
    statuses = await asyncio.gather(*(client.status(task_id) for task_id in ids), return_exceptions=True)
    infos = []
    for status in statuses:
        if isinstance(status, TaskInfo) and status.state in (TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED):
            infos.append(status)
        else:
            infos.append(None)
    return infos, problems


def verify(
    ids: Sequence[str | None], infos: Sequence[TaskInfo | None], expected: Callable[[int], Any], problems: list[str]
) -> tuple[int, int, int]:
    """Count (correct, wrong, lost): ``ids[i]`` is None when submitting call i failed."""
    correct = wrong = lost = 0
    info_iter = iter(infos)
    for i, task_id in enumerate(ids):
        if task_id is None:
            lost += 1
            continue
        info = next(info_iter)
        if info is None:
            lost += 1
            if len(problems) < 10:
                problems.append(f"task {i} ({task_id}) lost: not final or not found")
        elif info.state is TaskState.SUCCESS and info.id == task_id and info.result == expected(i):
            correct += 1
        else:
            wrong += 1
            if len(problems) < 10:
                problems.append(
                    f"task {i} ({task_id}) wrong: state={info.state.value} result={info.result!r} "
                    f"expected={expected(i)!r} error={info.error}"
                )
    return correct, wrong, lost


SubmitFn = Callable[[Client, int, Options], Awaitable[tuple[list[str | None], list[str]]]]


async def throughput_run(cp: RunningControlPlane, opts: Options, submit: SubmitFn) -> dict[str, Any]:
    """Submit ``opts.tasks`` add(i, i) tasks all at once through ``submit``, then wait for all of them."""
    n = opts.tasks
    async with Client(cp.discovery) as client:
        await client.stats()  # connected and one round trip done before timing
        cp_cpu0, cpu0 = process_cpu_seconds(cp.pid), time.process_time()
        t0 = time.perf_counter()
        ids, problems = await submit(client, n, opts)
        t1 = time.perf_counter()
        accepted = [task_id for task_id in ids if task_id is not None]
        infos, wait_problems = await collect_infos(client, accepted, opts.wait_timeout)
        t2 = time.perf_counter()
        cp_cpu1, cpu1 = process_cpu_seconds(cp.pid), time.process_time()
        stats = await client.stats()
    problems += wait_problems
    correct, wrong, lost = verify(ids, infos, lambda i: 2 * i, problems)
    return {
        "tasks": n,
        "correct": correct,
        "wrong": wrong,
        "lost": lost,
        "valid": wrong == 0 and lost == 0 and not wait_problems,
        "submit_s": t1 - t0,
        "total_s": t2 - t0,
        "submit_tps": n / (t1 - t0),
        "e2e_tps": n / (t2 - t0),
        "cp_cpu_us_per_task": per_task_us(cp_cpu0, cp_cpu1, n),
        "client_cpu_us_per_task": per_task_us(cpu0, cpu1, n),
        "cp_stats": {k: stats.get(k) for k in ("submitted", "succeeded", "failed", "executed_locally", "cache_size")},
        "problems": problems,
    }


THROUGHPUT_DISPLAY = (
    Metric("e2e_tps", "end to end, tasks/s"),
    Metric("submit_tps", "submit only, tasks/s"),
    Metric("cp_cpu_us_per_task", "control plane CPU, µs/task", ",.1f"),
    Metric("client_cpu_us_per_task", "client CPU, µs/task", ",.1f"),
)

# --------------------------------------------------------------------------------------- scenarios


async def _submit_individually(client: Client, n: int, opts: Options) -> tuple[list[str | None], list[str]]:
    results = await asyncio.gather(*(client.delay("add", i, i) for i in range(n)), return_exceptions=True)
    ids: list[str | None] = []
    problems: list[str] = []
    for i, result in enumerate(results):
        if isinstance(result, str):
            ids.append(result)
        else:
            ids.append(None)
            if len(problems) < 10:
                problems.append(f"delay {i}: {_short(result)}")
    return ids, problems


async def _submit_batches(client: Client, n: int, opts: Options) -> tuple[list[str | None], list[str]]:
    size = max(1, opts.batch_size)
    batches = [[("add", (i, i)) for i in range(start, min(start + size, n))] for start in range(0, n, size)]
    results = await asyncio.gather(*(client.delay_many(batch) for batch in batches), return_exceptions=True)
    ids: list[str | None] = []
    problems: list[str] = []
    for batch, result in zip(batches, results, strict=True):
        if isinstance(result, list) and len(result) == len(batch):
            ids.extend(result)
            continue
        if isinstance(result, BaseException):
            if len(problems) < 10:
                problems.append(f"delay_many: {_short(result)}")
            partial = getattr(result, "task_ids", None)
            ids.extend(partial if isinstance(partial, list) and len(partial) == len(batch) else [None] * len(batch))
        else:
            problems.append(f"delay_many returned {len(result)} ids for {len(batch)} calls")
            ids.extend([None] * len(batch))
    return ids, problems


@scenario(
    "delay",
    "N individual delay('add', i, i) calls in flight at once (asyncio.gather), then wait_many",
    display=THROUGHPUT_DISPLAY,
    targets=[Target("e2e_tps", ">=", 5_000, "≥ 5,000")],
)
async def delay_scenario(cp: RunningControlPlane, opts: Options) -> dict[str, Any]:
    return await throughput_run(cp, opts, _submit_individually)


@scenario(
    "delay_many",
    "the same N tasks via delay_many in batches (all batches in flight at once), then wait_many",
    display=THROUGHPUT_DISPLAY,
    targets=[Target("e2e_tps", ">=", 20_000, "≥ 20,000")],
)
async def delay_many_scenario(cp: RunningControlPlane, opts: Options) -> dict[str, Any]:
    return await throughput_run(cp, opts, _submit_batches)


@scenario(
    "submit_latency",
    "sequential submit('add', i, 1) round trips after a warm-up",
    display=(
        Metric("p50_ms", "p50, ms", ".3f"),
        Metric("p90_ms", "p90, ms", ".3f"),
        Metric("p99_ms", "p99, ms", ".3f"),
        Metric("mean_ms", "mean, ms", ".3f"),
        Metric("max_ms", "max, ms", ".3f"),
        Metric("sequential_tps", "sequential, tasks/s"),
        Metric("cp_cpu_us_per_task", "control plane CPU, µs/task", ",.1f"),
        Metric("client_cpu_us_per_task", "client CPU, µs/task", ",.1f"),
    ),
    targets=[Target("p50_ms", "<=", 0.5, "≤ 0.5"), Target("p99_ms", "<=", 2.0, "≤ 2")],
)
async def submit_latency_scenario(cp: RunningControlPlane, opts: Options) -> dict[str, Any]:
    n = opts.samples
    problems: list[str] = []
    samples: list[float] = []
    wrong = lost = 0
    async with Client(cp.discovery) as client:
        for i in range(opts.warmup):
            await client.submit("add", i, 1, timeout=10)
        cp_cpu0, cpu0 = process_cpu_seconds(cp.pid), time.process_time()
        t0 = time.perf_counter()
        for i in range(n):
            started = time.perf_counter()
            try:
                value = await client.submit("add", i, 1, timeout=10)
            except FastworkerError as exc:
                lost += 1
                if len(problems) < 10:
                    problems.append(f"submit {i}: {_short(exc)}")
                continue
            samples.append(time.perf_counter() - started)
            if value != i + 1:
                wrong += 1
                if len(problems) < 10:
                    problems.append(f"submit {i}: got {value!r}, expected {i + 1}")
        total = time.perf_counter() - t0
        cp_cpu1, cpu1 = process_cpu_seconds(cp.pid), time.process_time()
    ms = sorted(s * 1e3 for s in samples)
    return {
        "samples": n,
        "correct": len(samples) - wrong,
        "wrong": wrong,
        "lost": lost,
        "valid": wrong == 0 and lost == 0,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
        "max_ms": ms[-1] if ms else float("nan"),
        "sequential_tps": n / total,
        "cp_cpu_us_per_task": per_task_us(cp_cpu0, cp_cpu1, n),
        "client_cpu_us_per_task": per_task_us(cpu0, cpu1, n),
        "problems": problems,
    }


# ------------------------------------------------------------------------------------------ runner


# ------------------------------------------------------------------------------------- subworkers


def start_workers(cp: RunningControlPlane, count: int, concurrency: int, workdir: Path) -> list[RunningWorker]:
    """Start ``count`` fastworker-worker processes for bench/tasks.py and wait until each registered."""
    return [
        start_worker(
            cp.discovery,
            task_modules=[TASK_MODULE],
            concurrency=concurrency,
            worker_id=f"bench-{index}",
            env=controlplane_env(),
            workdir=workdir,
        )
        for index in range(count)
    ]


def stop_workers(workers: Sequence[RunningWorker]) -> None:
    """SIGTERM every worker this benchmark started, by pid (SIGKILL after a bound)."""
    for worker in workers:
        worker.stop()


async def _fleet_throughput(
    cp: RunningControlPlane, opts: Options, workers: int, concurrency: int, name: str, args: tuple[Any, ...], n: int
) -> tuple[float, list[str]]:
    """Tasks/s for n tasks of ``name(*args)`` run only by ``workers`` subworkers; returns (tps, problems)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fastworker-bench-workers-") as folder:
        processes = start_workers(cp, workers, concurrency, Path(folder))
        try:
            async with Client(cp.discovery) as client:
                deadline = time.monotonic() + 10
                while len(await client.workers()) < workers and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                t0 = time.perf_counter()
                ids = await client.delay_many([(name, args)] * n)
                infos = await client.wait_many(ids, timeout=opts.wait_timeout)
                elapsed = time.perf_counter() - t0
                bad = [info for info in infos if info.state is not TaskState.SUCCESS]
                if bad:
                    problems.append(f"{len(bad)} of {n} tasks did not succeed, e.g. {bad[0].error}")
                used = {info.worker for info in infos}
                if len(used) != workers:
                    problems.append(f"expected {workers} workers to run tasks, saw {sorted(map(str, used))}")
        finally:
            stop_workers(processes)
    return n / elapsed, problems


def _workers_only(opts: Options) -> list[str]:
    return ["--local-concurrency", "0"]


@scenario(
    "workers_trivial",
    "N add(i, i) via delay_many through 2 subworkers (concurrency 4 each), local execution off",
    display=(Metric("e2e_tps", "end to end, tasks/s"),),
    controlplane_args=_workers_only,
)
async def workers_trivial_scenario(cp: RunningControlPlane, opts: Options) -> dict[str, Any]:
    n = min(opts.tasks, 10_000)
    tps, problems = await _fleet_throughput(cp, opts, 2, 4, "add", (1, 1), n)
    return {"valid": not problems, "wrong": 0, "lost": 0, "tasks": n, "e2e_tps": tps, "problems": problems}


@scenario(
    "cpu_scaling",
    "a CPU-bound 5 ms task through 1 subworker, then 2 (concurrency 1 each), local execution off",
    display=(
        Metric("one_worker_tps", "1 worker, tasks/s", ",.1f"),
        Metric("two_workers_tps", "2 workers, tasks/s", ",.1f"),
        Metric("scaling", "scaling 1 -> 2 workers", ".2f"),
    ),
    targets=[Target("scaling", ">=", 1.7, "≥ 1.7×")],
    controlplane_args=_workers_only,
)
async def cpu_scaling_scenario(cp: RunningControlPlane, opts: Options) -> dict[str, Any]:
    n = 60 if opts.tasks <= 1_000 else 400
    one, problems_one = await _fleet_throughput(cp, opts, 1, 1, "spin", (5.0,), n)
    two, problems_two = await _fleet_throughput(cp, opts, 2, 1, "spin", (5.0,), n)
    problems = problems_one + problems_two
    return {
        "valid": not problems,
        "wrong": 0,
        "lost": 0,
        "tasks": 2 * n,
        "one_worker_tps": one,
        "two_workers_tps": two,
        "scaling": two / one,
        "problems": problems,
    }


def controlplane_env() -> dict[str, str]:
    """PYTHONPATH for the control plane: bench/ (for the task module) first, then what we run with."""
    parts = [str(BENCH_DIR), *_ADDED_PATHS]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return {"PYTHONPATH": os.pathsep.join(parts)}


def run_once(sc: Scenario, opts: Options) -> dict[str, Any]:
    """One repeat of one scenario against a fresh control plane (always stopped by pid)."""
    cache = max(100_000, 2 * (opts.tasks + opts.samples + opts.warmup))
    args = ["--result-cache-size", str(cache)]
    if opts.local_concurrency is not None:
        args += ["--local-concurrency", str(opts.local_concurrency)]
    if sc.controlplane_args is not None:
        args += sc.controlplane_args(opts)
    with tempfile.TemporaryDirectory(prefix="fastworker-bench-") as workdir:
        try:
            cp = start_controlplane(
                task_modules=[TASK_MODULE], extra_args=args, env=controlplane_env(), workdir=Path(workdir)
            )
        except HarnessError as exc:
            return {"valid": False, "error": f"control plane did not start: {exc}"[:4000]}
        metrics: dict[str, Any]
        try:
            metrics = asyncio.run(sc.fn(cp, opts))
        except Exception as exc:
            metrics = {"valid": False, "error": _short(exc), "traceback": traceback.format_exc()}
        finally:
            exit_code = cp.stop()
        metrics["controlplane_exit_code"] = exit_code
        if not metrics.get("valid"):
            metrics["controlplane_log_tail"] = cp.log()[-4000:]
    return metrics


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median, min and max of every numeric metric over the runs."""
    keys: dict[str, None] = {}
    for run in runs:
        for key, value in run.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                keys[key] = None
    summary = {}
    for key in keys:
        values = [run[key] for run in runs if isinstance(run.get(key), int | float) and run[key] == run[key]]
        if values:
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


def _describe_run(run: dict[str, Any], sc: Scenario) -> str:
    if "error" in run:
        return f"ERROR {run['error']}"
    parts = []
    for metric in sc.display[:3]:
        value = run.get(metric.key)
        if isinstance(value, int | float):
            parts.append(f"{metric.label} {value:{metric.fmt}}")
    parts.append(f"wrong {run.get('wrong', '?')}, lost {run.get('lost', '?')}")
    return "; ".join(parts) + ("" if run.get("valid") else "  [INVALID]")


# ------------------------------------------------------------------------------------------- table

HEADER = ("Scenario", "Metric", "Median", "Spread (min–max)", "Target", "Met")
FOOTNOTE = (
    "Targets (issue): ≥ 5,000 tasks/s with individual delay, ≥ 20,000 tasks/s with delay_many, "
    "submit p50 ≤ 0.5 ms and p99 ≤ 2 ms (shown, not asserted; 'Met' compares the median and needs all runs valid).\n"
    "For comparison: reference implementation ~6 correct tasks/s concurrently and 2.5 ms p50 sequentially; "
    "fastest broker-based peer (Huey + Redis) ~1,000–1,400 tasks/s."
)


def target_met(target: Target, result: dict[str, Any]) -> bool | None:
    """Whether the median meets the target; None when a run was invalid or the metric is missing."""
    stat = result["summary"].get(target.metric)
    if stat is None or result["valid_runs"] != result["repeats"]:
        return None
    return target.met(stat["median"])


def table_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, result in results.items():
        sc = SCENARIOS[name]
        summary = result["summary"]
        all_valid = result["valid_runs"] == result["repeats"]
        targets = {t.metric: t for t in sc.targets}
        first = True
        for metric in sc.display:
            stat = summary.get(metric.key)
            target = targets.get(metric.key)
            if stat is None:
                median = spread = "n/a"
                met = "" if target is None else "n/a"
            else:
                median = f"{stat['median']:{metric.fmt}}"
                spread = f"{stat['min']:{metric.fmt}} – {stat['max']:{metric.fmt}}"
                if target is None:
                    met = ""
                elif not all_valid:
                    met = "n/a (invalid)"
                else:
                    met = "yes" if target.met(stat["median"]) else "no"
            rows.append((name if first else "", metric.label, median, spread, target.text if target else "", met))
            first = False
        wrong = sum(run.get("wrong", 0) for run in result["runs"])
        lost = sum(run.get("lost", 0) for run in result["runs"])
        errors = sum(1 for run in result["runs"] if "error" in run)
        check = f"{result['valid_runs']}/{result['repeats']} valid; wrong {wrong}, lost {lost}"
        if errors:
            check += f"; {errors} errored"
        elif result["valid_runs"] != result["repeats"]:
            check += "; see problems in the JSON"
        rows.append(("", "correctness (all runs)", check, "", "", ""))
    return rows


def print_table(title: str, rows: list[tuple[str, ...]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(HEADER[i]), *(len(row[i]) for row in rows)) for i in range(len(HEADER))]
        right = {2, 3}

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        print()
        print(title)
        print(line(HEADER))
        print("  ".join("-" * w for w in widths))
        for row in rows:
            if row[0] and row is not rows[0]:
                print()
            print(line(row))
        print()
        print(FOOTNOTE)
        return
    table = Table(title=title, caption=FOOTNOTE, caption_justify="left")
    for i, column in enumerate(HEADER):
        table.add_column(column, justify="right" if i in (2, 3) else "left")
    for row in rows:
        if row[0] and row is not rows[0]:
            table.add_section()
        table.add_row(*row)
    Console().print(table)


# ------------------------------------------------------------------------------------------- main


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="FastWorker benchmarks: each scenario on a fresh control plane, repeated; median and spread.",
    )
    p.add_argument("--scenarios", nargs="+", metavar="NAME", help="run only these (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--repeats", type=int, help="runs per scenario (default 3; 1 with --quick)")
    p.add_argument("--tasks", type=int, help="tasks per throughput run (default 20000; 500 with --quick)")
    p.add_argument("--batch-size", type=int, help="delay_many batch size (default 1000; 100 with --quick)")
    p.add_argument("--samples", type=int, help="submit_latency samples (default 2000; 100 with --quick)")
    p.add_argument("--warmup", type=int, help="submit_latency warm-up round trips (default 200; 20 with --quick)")
    p.add_argument("--local-concurrency", type=int, help="control plane --local-concurrency (default: its own)")
    p.add_argument("--wait-timeout", type=float, default=120.0, help="seconds to wait for a run's tasks (120)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"write results here (default {DEFAULT_JSON})")
    p.add_argument("--quick", action="store_true", help="smoke test: one small run per scenario (seconds)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name:16} {sc.description}")
        return 0
    quick = args.quick

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    opts = Options(
        tasks=pick(args.tasks, 20_000, 500),
        batch_size=pick(args.batch_size, 1_000, 100),
        samples=pick(args.samples, 2_000, 100),
        warmup=pick(args.warmup, 200, 20),
        local_concurrency=args.local_concurrency,
        wait_timeout=args.wait_timeout,
    )
    repeats = pick(args.repeats, 3, 1)
    names = args.scenarios or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2

    results: dict[str, dict[str, Any]] = {}
    for name in names:
        sc = SCENARIOS[name]
        runs = []
        for i in range(repeats):
            run = run_once(sc, opts)
            runs.append(run)
            print(f"[{name} {i + 1}/{repeats}] {_describe_run(run, sc)}", file=sys.stderr, flush=True)
            for problem in run.get("problems", [])[:5]:
                print(f"    {problem}", file=sys.stderr)
        valid_runs = sum(1 for run in runs if run.get("valid"))
        results[name] = {
            "description": sc.description,
            "repeats": repeats,
            "valid_runs": valid_runs,
            "summary": summarize(runs),
            "runs": runs,
        }
        results[name]["targets"] = [
            {"metric": t.metric, "op": t.op, "value": t.value, "met": target_met(t, results[name])} for t in sc.targets
        ]

    cpus = os.cpu_count()
    title = (
        f"FastWorker benchmarks — {opts.tasks:,} tasks/throughput run (batch {opts.batch_size:,}), "
        f"{opts.samples:,} latency samples, {repeats} repeat(s); Python {platform.python_version()}, {cpus} CPU(s)"
        + ("  [--quick]" if quick else "")
    )
    print_table(title, table_rows(results))

    report = {
        "meta": {
            "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
            "python": sys.version,
            "platform": platform.platform(),
            "cpu_count": cpus,
            "quick": quick,
            "repeats": repeats,
            "options": opts.__dict__,
            "argv": sys.argv,
        },
        "scenarios": results,
    }
    json_path: Path = args.json
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {json_path}")
    failed = [name for name, result in results.items() if result["valid_runs"] != result["repeats"]]
    if failed:
        print(f"invalid or failed runs in: {', '.join(failed)} (see the JSON for details)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
