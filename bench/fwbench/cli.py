"""``python bench/run.py``: parse the options, run the scenarios, print the tables, write the JSON."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fwbench import peers, procs, scenarios  # noqa: F401  (registers the scenarios)
from fwbench.core import (
    DEFAULT_JSON,
    DEFAULT_WORKER_CONCURRENCY,
    PEERS_DIR,
    REPO_ROOT,
    SCENARIOS,
    Options,
    run_once,
    summarize,
)
from fwbench.procs import install_sigint_handler, reap_children, stop_all
from fwbench.report import compute_ratios, cpu_line, flow_line, print_tables, table_rows, target_met


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="FastWorker benchmarks: each scenario on a fresh control plane, repeated; median and spread.",
    )
    p.add_argument("--scenarios", nargs="+", metavar="NAME", help="run only these (default: all default ones; --list)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--repeats", type=int, help="runs per scenario (default 3; 1 with --quick)")
    p.add_argument("--tasks", type=int, help="tasks per throughput run (default 20000; 500 with --quick)")
    p.add_argument("--batch-size", type=int, help="delay_many batch size (default 1000; 100 with --quick)")
    p.add_argument("--samples", type=int, help="latency samples (default 2000; 100 with --quick)")
    p.add_argument("--warmup", type=int, help="latency warm-up round trips (default 200; 20 with --quick)")
    p.add_argument("--local-concurrency", type=int, help="control plane --local-concurrency (default: its own)")
    p.add_argument(
        "--worker-concurrency",
        type=int,
        help=f"subworker --concurrency for the workers* and rss scenarios (default {DEFAULT_WORKER_CONCURRENCY}; "
        "4 with --quick, which spawns fewer child processes)",
    )
    p.add_argument(
        "--worker-pool",
        choices=("processes", "threads"),
        default="processes",
        help="subworker --pool for the workers* scenarios (default processes)",
    )
    p.add_argument("--rss-tasks", type=int, help="tasks queued by the rss scenario (default 100000; 5000 with --quick)")
    p.add_argument("--rss-cycles", type=int, help="queue-and-drain cycles in rss (default 3; 1 with --quick)")
    p.add_argument("--cpu-tasks", type=int, help="5 ms tasks per cpu_scaling half (default 400; 60 with --quick)")
    p.add_argument(
        "--fleet-sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="fleet: connected subworkers per row (default 1 10 100 500; 1 10 with --quick)",
    )
    p.add_argument(
        "--fleet-real-max",
        type=int,
        help="fleet: largest size run with real worker processes; larger sizes are simulated (default 10; 1 with --quick)",
    )
    p.add_argument("--fleet-capacity", type=int, default=2, help="fleet: slots (--concurrency) of each worker (2)")
    p.add_argument("--wait-timeout", type=float, default=120.0, help="seconds to wait for a run's tasks (120)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"write results here (default {DEFAULT_JSON})")
    p.add_argument("--quick", action="store_true", help="smoke test: one small run per scenario (< 60 s)")
    peers_group = p.add_argument_group("peers (opt-in; each in its own venv cached under bench/.peers/)")
    peers_group.add_argument("--peer-reference", action="store_true", help="also measure PyPI fastworker==0.3.0")
    peers_group.add_argument("--peer-huey", action="store_true", help="also measure Huey + Redis")
    peers_group.add_argument("--peer-tasks", type=int, help="Huey throughput tasks (default 5000; 500 with --quick)")
    peers_group.add_argument("--peer-samples", type=int, help="Huey round trips (default 1000; 100 with --quick)")
    peers_group.add_argument(
        "--reference-tasks", type=int, help="reference sequential round trips (default 500; 100 with --quick)"
    )
    peers_group.add_argument(
        "--reference-concurrent", type=int, help="reference burst: requests at once (default 2000; 200 with --quick)"
    )
    peers_group.add_argument(
        "--reference-callers", type=int, default=8, help="reference concurrent callers, one request each at a time (8)"
    )
    peers_group.add_argument(
        "--reference-seconds", type=float, help="how long the reference callers run (default 5; 2 with --quick)"
    )
    peers_group.add_argument(
        "--huey-worker-type", choices=("process", "thread"), default="process", help="huey_consumer -k (process)"
    )
    peers_group.add_argument("--reference-python", help="Python 3.12 for the reference venv (pyenv 3.12.1)")
    peers_group.add_argument("--huey-python", help="Python for the Huey venv (default: this interpreter's base)")
    peers_group.add_argument("--peers-dir", type=Path, default=PEERS_DIR, help=f"venv cache (default {PEERS_DIR})")
    return p.parse_args(argv)


def build_options(args: argparse.Namespace) -> Options:
    quick = args.quick

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    return Options(
        tasks=pick(args.tasks, 20_000, 500),
        batch_size=pick(args.batch_size, 1_000, 100),
        samples=pick(args.samples, 2_000, 100),
        warmup=pick(args.warmup, 200, 20),
        local_concurrency=args.local_concurrency,
        wait_timeout=args.wait_timeout,
        worker_concurrency=pick(args.worker_concurrency, DEFAULT_WORKER_CONCURRENCY, 4),
        worker_pool=args.worker_pool,
        rss_tasks=pick(args.rss_tasks, 100_000, 5_000),
        rss_cycles=pick(args.rss_cycles, 3, 1),
        cpu_tasks=pick(args.cpu_tasks, 400, 60),
        peer_tasks=pick(args.peer_tasks, 5_000, 500),
        peer_samples=pick(args.peer_samples, 1_000, 100),
        reference_tasks=pick(args.reference_tasks, 500, 100),
        reference_concurrent=pick(args.reference_concurrent, 2_000, 200),
        reference_callers=args.reference_callers,
        reference_seconds=args.reference_seconds if args.reference_seconds is not None else (2.0 if quick else 5.0),
        huey_worker_type=args.huey_worker_type,
        fleet_sizes=tuple(args.fleet_sizes or ((1, 10) if quick else (1, 10, 100, 500))),
        fleet_real_max=pick(args.fleet_real_max, 10, 1),
        fleet_capacity=args.fleet_capacity,
        quick=quick,
        extra={
            "reference_python": args.reference_python,
            "huey_python": args.huey_python,
            "peers_dir": str(args.peers_dir),
        },
    )


def scenario_names(args: argparse.Namespace) -> list[str]:
    names = list(args.scenarios) if args.scenarios else [n for n, sc in SCENARIOS.items() if sc.default]
    for flag, name in ((args.peer_reference, "peer_reference"), (args.peer_huey, "peer_huey")):
        if flag and name not in names:
            names.append(name)
    return names


def run_all(names: Sequence[str], opts: Options, repeats: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        sc = SCENARIOS[name]
        runs = []
        started = time.monotonic()
        for i in range(repeats):
            run = run_once(sc, opts)
            if procs.INTERRUPTED:
                raise KeyboardInterrupt
            runs.append(run)
            print(f"[{name} {i + 1}/{repeats}] {_describe_run(run, sc)}", file=sys.stderr, flush=True)
            for problem in run.get("problems", [])[:5]:
                print(f"    {problem}", file=sys.stderr)
        results[name] = {
            "description": sc.description,
            "repeats": repeats,
            "valid_runs": sum(1 for run in runs if run.get("valid")),
            "seconds": time.monotonic() - started,
            "summary": summarize(runs),
            "runs": runs,
        }
        results[name]["targets"] = [
            {"metric": t.metric, "op": t.op, "value": t.value, "text": t.text, "met": target_met(t, results[name])}
            for t in sc.targets
        ]
    return results


def _finite(value: Any) -> Any:
    """The report with NaN and infinities as null, so that the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _describe_run(run: dict[str, Any], sc: Any) -> str:
    if "error" in run:
        return f"ERROR {run['error']}"
    parts = []
    for metric in sc.display[:3]:
        value = run.get(metric.key)
        if isinstance(value, int | float):
            parts.append(f"{metric.label} {value:{metric.fmt}}")
    if sc.needs_controlplane:
        parts.append(f"wrong {run.get('wrong', '?')}, lost {run.get('lost', '?')}")
    return "; ".join(parts) + ("" if run.get("valid") else "  [INVALID]")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for sc in sorted(SCENARIOS.values(), key=lambda sc: not sc.default):
            print(f"{sc.name:24} {'' if sc.default else '(opt-in) '}{sc.description}")
        return 0
    opts = build_options(args)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    names = scenario_names(args)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2

    started = time.monotonic()
    install_sigint_handler()
    try:
        results = run_all(names, opts, repeats)
    except KeyboardInterrupt:
        reaped = reap_children()
        print(f"\ninterrupted; stopped {len(reaped)} leftover child process(es)", file=sys.stderr)
        return 130
    finally:
        stop_all()
    elapsed = time.monotonic() - started

    ratios = compute_ratios(results)
    cpus = os.cpu_count()
    title = (
        f"FastWorker benchmarks — {opts.tasks:,} tasks/throughput run (batch {opts.batch_size:,}), "
        f"{opts.samples:,} latency samples, worker concurrency {opts.worker_concurrency}, {repeats} repeat(s); "
        f"Python {platform.python_version()}, {cpus} CPU(s); {elapsed:,.0f} s" + ("  [--quick]" if args.quick else "")
    )
    notes = [line for line in (cpu_line(results), flow_line(results)) if line]
    if "rss" in results:
        dash = {run.get("dashboard_note") for run in results["rss"]["runs"] if run.get("dashboard_note")}
        if dash and "idle_dashboard_rss_mb" not in results["rss"]["summary"]:
            notes.append("RSS with the dashboard on: n/a — " + "; ".join(sorted(dash))[:300])
    print_tables(title, table_rows(results), ratios, notes)
    for name, result in results.items():
        own_report = SCENARIOS[name].report
        if own_report is not None:
            own_report(result)

    report = {
        "meta": {
            "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "python": sys.version,
            "platform": platform.platform(),
            "cpu_count": cpus,
            "cpu_model": _cpu_model(),
            "quick": args.quick,
            "repeats": repeats,
            "seconds": elapsed,
            "options": opts.__dict__,
            "argv": sys.argv,
        },
        "scenarios": results,
        "ratios": ratios,
    }
    json_path: Path = args.json
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_finite(report), indent=2, default=str, allow_nan=False) + "\n")
    print(f"\nwrote {json_path}")
    failed = [name for name, result in results.items() if result["valid_runs"] != result["repeats"]]
    if failed:
        print(f"invalid or failed runs in: {', '.join(failed)} (see the JSON for details)", file=sys.stderr)
        return 1
    return 0
