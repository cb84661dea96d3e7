"""``--peer-reference``: the reference implementation, PyPI ``fastworker==0.3.0``, on Python 3.12 in its own venv.

Its control plane executes the tasks itself (its subworkers crash at start), on ports derived
from a base address (base .. base+4), plus a discovery and a subworker-registry port; it ignores
SIGTERM, so it is stopped by pid with SIGKILL after a short bound. Its logging is set to WARNING
(it logs every task at INFO), which is its fastest configuration.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from fwbench.core import PEERS_DIR, Metric, Options, scenario
from fwbench.peers.venvs import ensure_venv, peer_env, run_driver
from fwbench.procs import free_port, free_port_run, process_rss_mb, running, start_process, wait_for_port

REFERENCE_REQUIREMENT = "fastworker==0.3.0"
REFERENCE_PYTHON = "/root/.pyenv/versions/3.12.1/bin/python"


def reference_python(opts: Options) -> Path:
    base = str(opts.extra.get("reference_python") or REFERENCE_PYTHON)
    folder = Path(opts.extra.get("peers_dir") or PEERS_DIR) / "reference-fastworker-0.3.0"
    return ensure_venv(folder, base, [REFERENCE_REQUIREMENT])


@scenario(
    "peer_reference",
    "peer: reference fastworker 0.3.0 (its control plane runs the tasks): sequential round trips, "
    "then 8 concurrent callers for 5 s and a burst of N requests, counting only correct results",
    display=(
        Metric("p50_ms", "sequential p50, ms", ".3f"),
        Metric("p99_ms", "sequential p99, ms", ".3f"),
        Metric("sequential_tps", "sequential, tasks/s"),
        Metric("seq_correct", "sequential correct"),
        Metric("concurrent_correct_tps", "burst of N at once: correct tasks/s", ",.1f"),
        Metric("concurrent_correct", "burst: correct"),
        Metric("concurrent_wrong", "burst: wrong (another task's result)"),
        Metric("concurrent_failed", "burst: failed or timed out (5 s)"),
        Metric("callers_correct_tps", "8 callers, 1 request each: correct tasks/s", ",.1f"),
        Metric("callers_wrong_pct", "8 callers: wrong, %", ",.1f"),
        Metric("idle_rss_mb", "idle RSS, MiB", ",.1f"),
    ),
    needs_controlplane=False,
    default=False,
)
async def reference_scenario(cp: object, opts: Options) -> dict[str, Any]:
    python = await asyncio.to_thread(reference_python, opts)
    base = free_port_run(5)
    taken = set(range(base, base + 5))
    discovery, registry = free_port(), free_port()
    while discovery in taken or registry in taken or discovery == registry:
        discovery, registry = free_port(), free_port()
    env = peer_env()
    with tempfile.TemporaryDirectory(prefix="fastworker-bench-ref-") as folder:
        log = Path(folder) / "reference-cp.log"
        argv = [
            str(python),
            "-m",
            "fastworker.cli",
            "--log-level",
            "WARNING",
            "control-plane",
            "--base-address",
            f"tcp://127.0.0.1:{base}",
            "--discovery-address",
            f"tcp://127.0.0.1:{discovery}",
            "--subworker-port",
            str(registry),
            "--no-gui",
            "--task-modules",
            "ref_tasks",
        ]
        process = start_process(argv, log_path=log, env=env, cwd=Path(folder), new_session=True)
        with running(process, timeout=3.0, group=True):
            await asyncio.to_thread(wait_for_port, process, base + 2, 30.0, log)  # the "normal" priority socket
            await asyncio.sleep(1.0)
            idle = process_rss_mb(process.pid)
            driver_args = [
                "--discovery",
                f"tcp://127.0.0.1:{discovery}",
                "--tasks",
                str(opts.reference_tasks),
                "--concurrent",
                str(opts.reference_concurrent),
                "--callers",
                str(opts.reference_callers),
                "--seconds",
                str(opts.reference_seconds),
                "--timeout",
                "5",
            ]
            out = await asyncio.to_thread(run_driver, python, "ref_driver.py", driver_args, env, 600.0)
            after = process_rss_mb(process.pid)
            alive = process.poll() is None
    result: dict[str, Any] = dict(out)
    result.update({"idle_rss_mb": idle, "rss_after_mb": after, "peer": REFERENCE_REQUIREMENT})
    counts = {k: float(v) for k, v in out.items() if isinstance(v, int | float)}
    answered = sum(counts.get(f"callers_{k}", 0.0) for k in ("correct", "wrong", "failed"))
    if answered:
        result["callers_wrong_pct"] = 100 * counts.get("callers_wrong", 0.0) / answered
    problems = []
    if "error" in out:
        problems.append(str(out["error"]))
    if not alive:
        problems.append("the reference control plane exited during the run")
    if not out.get("seq_correct"):
        problems.append("no correct sequential result")
    result["problems"] = problems
    # The peer's wrong results are its bug, measured here, not a failure of this benchmark.
    result["valid"] = not problems
    return result
