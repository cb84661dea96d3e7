"""The benchmark's framework: options, the scenario registry, and the measuring primitives.

Every scenario run gets a fresh control plane (started by pid on free loopback ports through
``fastworker.controlplane.testing``) that loads ``bench/tasks.py``; a scenario is an async
function that drives it with a :class:`fastworker.client.Client` and returns a dict of metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_JSON = BENCH_DIR / "results" / "latest.json"
#: Where peer virtual environments are cached between runs (git-ignored).
PEERS_DIR = BENCH_DIR / ".peers"
#: The module the control plane and the subworkers import (bench/ is put on their PYTHONPATH).
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


ADDED_PATHS = _ensure_importable()

from fastworker.client import Client, FastworkerError, TaskInfo, TaskState  # noqa: E402
from fastworker.controlplane.testing import (  # noqa: E402
    HarnessError,
    RunningControlPlane,
    RunningWorker,
    start_controlplane,
    start_worker,
)
from fwbench.procs import process_cpu_seconds  # noqa: E402

# ----------------------------------------------------------------------------------------- options

#: Subworker concurrency (child processes per worker) for the trivial-task scenarios: the best
#: trivial throughput measured on the 2-core machine (see bench/README.md and `worker_sweep`).
DEFAULT_WORKER_CONCURRENCY = 16


@dataclass
class Options:
    """What the scenarios are asked to do (from the command line)."""

    tasks: int = 20_000
    batch_size: int = 1_000
    samples: int = 2_000
    warmup: int = 200
    local_concurrency: int | None = None
    wait_timeout: float = 120.0
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY
    #: The subworkers' ``--pool`` in the workers* scenarios.
    worker_pool: str = "processes"
    rss_tasks: int = 100_000
    rss_cycles: int = 3
    cpu_tasks: int = 400
    peer_tasks: int = 5_000
    peer_samples: int = 1_000
    reference_tasks: int = 500
    reference_concurrent: int = 2_000
    reference_callers: int = 8
    reference_seconds: float = 5.0
    huey_worker_type: str = "process"
    #: ``fleet``: connected subworkers per row, the largest size run with real worker processes
    #: (larger ones are simulated, ``fwbench.fleetsim``), and each worker's slots.
    fleet_sizes: tuple[int, ...] = (1, 10, 100, 500)
    fleet_real_max: int = 10
    fleet_capacity: int = 2
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Target:
    """A goal for one metric's median, shown next to it (never asserted).

    ``min_tasks``: the target applies only when the run's ``tasks`` metric reaches it (the RSS
    targets are for 100,000 queued tasks, not for ``--quick``'s smaller queue).
    """

    metric: str
    op: str  # ">=" or "<="
    value: float
    text: str
    min_tasks: int = 0

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value >= self.value if self.op == ">=" else value <= self.value


@dataclass(frozen=True)
class Metric:
    """How one metric is shown in the table: key in the run dict, label, format spec."""

    key: str
    label: str
    fmt: str = ",.0f"


ScenarioFn = Callable[[RunningControlPlane | None, Options], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Scenario:
    """A registered scenario."""

    name: str
    description: str
    fn: ScenarioFn
    display: tuple[Metric, ...]
    targets: tuple[Target, ...] = ()
    controlplane_args: Callable[[Options], list[str]] | None = None
    #: False for peers: the function gets None instead of a control plane.
    needs_controlplane: bool = True
    #: Part of ``python bench/run.py`` without ``--scenarios`` (peers and sweeps are opt-in).
    default: bool = True
    #: Prints a table of the scenario's own after the main one (given its result: summary and runs).
    report: Callable[[dict[str, Any]], None] | None = None


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    description: str,
    *,
    display: Sequence[Metric],
    targets: Sequence[Target] = (),
    controlplane_args: Callable[[Options], list[str]] | None = None,
    needs_controlplane: bool = True,
    default: bool = True,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register a scenario: an async function (control plane, options) -> dict of metrics.

    The dict should carry ``valid`` (bool), ``wrong`` and ``lost`` (ints) and any number of
    numeric metrics; ``problems`` (a list of strings) explains what went wrong.
    """

    def register(fn: ScenarioFn) -> ScenarioFn:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        SCENARIOS[name] = Scenario(
            name,
            description,
            fn,
            tuple(display),
            tuple(targets),
            controlplane_args,
            needs_controlplane,
            default,
            report,
        )
        return fn

    return register


# ----------------------------------------------------------------------------------------- helpers


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


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/max in milliseconds of round-trip samples given in seconds."""
    ms = sorted(s * 1e3 for s in seconds)
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
        "max_ms": ms[-1] if ms else float("nan"),
    }


def short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def collect_infos(client: Client, ids: Sequence[str], timeout: float) -> tuple[list[TaskInfo | None], list[str]]:
    """Wait for all ids; on timeout or a missing id, fall back to ``status`` per id. None means lost."""
    try:
        infos: list[TaskInfo | None] = list(await client.wait_many(ids, timeout=timeout))
        return infos, []
    except FastworkerError as exc:
        problems = [f"wait_many: {short(exc)}"]
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


async def submit_individually(client: Client, n: int, opts: Options) -> tuple[list[str | None], list[str]]:
    """N ``delay("add", i, i)`` calls in flight at once."""
    results = await asyncio.gather(*(client.delay("add", i, i) for i in range(n)), return_exceptions=True)
    ids: list[str | None] = []
    problems: list[str] = []
    for i, result in enumerate(results):
        if isinstance(result, str):
            ids.append(result)
        else:
            ids.append(None)
            if len(problems) < 10:
                problems.append(f"delay {i}: {short(result)}")
    return ids, problems


async def submit_batches(client: Client, n: int, opts: Options) -> tuple[list[str | None], list[str]]:
    """The same N ``add(i, i)`` through ``delay_many`` in batches of ``opts.batch_size``, all in flight at once."""
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
                problems.append(f"delay_many: {short(result)}")
            partial = getattr(result, "task_ids", None)
            ids.extend(partial if isinstance(partial, list) and len(partial) == len(batch) else [None] * len(batch))
        else:
            problems.append(f"delay_many returned {len(result)} ids for {len(batch)} calls")
            ids.extend([None] * len(batch))
    return ids, problems


# ------------------------------------------------------------------------------------- subworkers


def controlplane_env() -> dict[str, str]:
    """PYTHONPATH for the control plane and subworkers: bench/ (for the task module) first, then ours."""
    parts = [str(BENCH_DIR), *ADDED_PATHS]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return {"PYTHONPATH": os.pathsep.join(parts)}


@contextlib.contextmanager
def fleet(
    cp: RunningControlPlane, count: int, concurrency: int, prefix: str = "bench", pool: str = "processes"
) -> Iterator[list[RunningWorker]]:
    """Start ``count`` subworkers for bench/tasks.py, one after another, each registered before the next.

    ``pool`` is their ``--pool`` (sync tasks in child processes, or in threads of the worker).

    Every worker that started is stopped by pid (SIGTERM, SIGKILL after a bound) when the block
    ends, however it ends, including when a later worker failed to start.
    """
    workers: list[RunningWorker] = []
    with tempfile.TemporaryDirectory(prefix="fastworker-bench-workers-") as folder:
        try:
            for index in range(count):
                workers.append(
                    start_worker(
                        cp.discovery,
                        task_modules=[TASK_MODULE],
                        concurrency=concurrency,
                        worker_id=f"{prefix}-{index}",
                        extra_args=[] if pool == "processes" else ["--pool", pool],
                        env=controlplane_env(),
                        workdir=Path(folder),
                        ready_timeout=60,
                    )
                )
            yield workers
        finally:
            for worker in workers:
                worker.stop()


async def wait_for_workers(client: Client, count: int, timeout: float = 20.0) -> list[str]:
    """Wait (bounded) until the control plane lists ``count`` workers; returns problems if it does not."""
    deadline = time.monotonic() + timeout
    listed: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        listed = await client.workers()
        if len(listed) >= count:
            return []
        await asyncio.sleep(0.05)
    return [f"only {len(listed)} of {count} workers registered within {timeout:g} s"]


# ----------------------------------------------------------------------------------- measurements


async def throughput_run(
    cp: RunningControlPlane, opts: Options, submit: SubmitFn, *, workers: int = 0, n: int | None = None
) -> dict[str, Any]:
    """Submit ``n`` add(i, i) tasks all at once through ``submit``, wait for all of them, check each result.

    With ``workers``, that many subworkers are started (and registered) before the clock starts;
    the control plane should then run with ``--local-concurrency 0``.
    """
    n = opts.tasks if n is None else n
    with fleet(cp, workers, opts.worker_concurrency, pool=opts.worker_pool):
        async with Client(cp.discovery) as client:
            problems = await wait_for_workers(client, workers) if workers else []
            await client.stats()  # connected and one round trip done before timing
            cp_cpu0, cpu0 = process_cpu_seconds(cp.pid), time.process_time()
            t0 = time.perf_counter()
            ids, submit_problems = await submit(client, n, opts)
            t1 = time.perf_counter()
            accepted = [task_id for task_id in ids if task_id is not None]
            infos, wait_problems = await collect_infos(client, accepted, opts.wait_timeout)
            t2 = time.perf_counter()
            cp_cpu1, cpu1 = process_cpu_seconds(cp.pid), time.process_time()
            stats = await client.stats()
    problems += submit_problems + wait_problems
    correct, wrong, lost = verify(ids, infos, lambda i: 2 * i, problems)
    result: dict[str, Any] = {
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
    if workers:
        result.update(_worker_checks(infos, workers, stats, problems, opts))
    return result


def _worker_checks(
    infos: Sequence[TaskInfo | None], workers: int, stats: dict[str, Any], problems: list[str], opts: Options
) -> dict[str, Any]:
    """Which subworkers ran the tasks (a note in ``problems`` when not all of them did, or the control plane did)."""
    used = {info.worker for info in infos if info is not None and info.worker}
    if len(used) != workers:
        problems.append(f"expected {workers} workers to run tasks, saw {sorted(map(str, used))}")
    local = stats.get("executed_locally") or 0
    if local:
        problems.append(f"the control plane ran {local} tasks itself (local execution should be off)")
    return {
        "workers": workers,
        "worker_concurrency": opts.worker_concurrency,
        "worker_pool": opts.worker_pool,
        "workers_used": len(used),
    }


async def latency_run(cp: RunningControlPlane, opts: Options, *, workers: int = 0) -> dict[str, Any]:
    """``opts.warmup`` then ``opts.samples`` sequential ``submit("add", i, 1)`` round trips; p50/p99 and CPU."""
    n = opts.samples
    problems: list[str] = []
    samples: list[float] = []
    wrong = lost = 0
    with fleet(cp, workers, opts.worker_concurrency, pool=opts.worker_pool):
        async with Client(cp.discovery) as client:
            if workers:
                problems += await wait_for_workers(client, workers)
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
                        problems.append(f"submit {i}: {short(exc)}")
                    continue
                samples.append(time.perf_counter() - started)
                if value != i + 1:
                    wrong += 1
                    if len(problems) < 10:
                        problems.append(f"submit {i}: got {value!r}, expected {i + 1}")
            total = time.perf_counter() - t0
            cp_cpu1, cpu1 = process_cpu_seconds(cp.pid), time.process_time()
            stats = await client.stats() if workers else {}
    result: dict[str, Any] = {
        "samples": n,
        "correct": len(samples) - wrong,
        "wrong": wrong,
        "lost": lost,
        "valid": wrong == 0 and lost == 0,
        **latency_summary(samples),
        "sequential_tps": n / total,
        "cp_cpu_us_per_task": per_task_us(cp_cpu0, cp_cpu1, n),
        "client_cpu_us_per_task": per_task_us(cpu0, cpu1, n),
        "problems": problems,
    }
    if workers and stats.get("executed_locally"):
        problems.append(f"the control plane ran {stats['executed_locally']} tasks itself")
    if workers:
        result.update(
            {"workers": workers, "worker_concurrency": opts.worker_concurrency, "worker_pool": opts.worker_pool}
        )
    return result


# ------------------------------------------------------------------------------------------ runner


def run_once(sc: Scenario, opts: Options) -> dict[str, Any]:
    """One repeat of one scenario against a fresh control plane (always stopped by pid)."""
    if not sc.needs_controlplane:
        try:
            return asyncio.run(sc.fn(None, opts))
        except Exception as exc:
            return {"valid": False, "error": short(exc), "traceback": traceback.format_exc()}
    cache = max(100_000, 2 * (opts.tasks + opts.samples + opts.warmup))
    args = ["--result-cache-size", str(cache)]
    if opts.local_concurrency is not None:
        args += ["--local-concurrency", str(opts.local_concurrency)]
    if sc.controlplane_args is not None:
        args += sc.controlplane_args(opts)  # later flags win
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
            metrics = {"valid": False, "error": short(exc), "traceback": traceback.format_exc()}
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
