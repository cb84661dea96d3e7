"""``--peer-huey``: Huey with Redis, the fastest broker-based peer measured (DESIGN.md): 1 consumer worker.

A private ``redis-server`` (Debian's) on a free loopback port with a temporary directory and no
persistence (``--save '' --appendonly no``), a ``huey_consumer`` with one worker (``-k process``
by default, ``--huey-worker-type`` to change; ``-q``: WARNING logging), and the same trivial
task. Both are stopped by pid (the consumer with its process group) whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fwbench.core import PEERS_DIR, Metric, Options, scenario
from fwbench.peers.venvs import ensure_venv, peer_env, run_driver
from fwbench.procs import free_port, running, start_process, wait_for_port

HUEY_REQUIREMENTS = ["huey==3.5.4", "redis==8.1.0"]


def huey_python(opts: Options) -> Path:
    base = str(opts.extra.get("huey_python") or getattr(sys, "_base_executable", sys.executable))
    folder = Path(opts.extra.get("peers_dir") or PEERS_DIR) / "huey-redis"
    return ensure_venv(folder, base, HUEY_REQUIREMENTS)


def redis_server() -> str:
    """Debian's redis-server; installed with apt-get when missing and this is root on a Debian machine."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("[peers] redis-server missing: apt-get install -y redis-server", file=sys.stderr, flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "redis-server"]):
            subprocess.run(argv, env=env, capture_output=True, timeout=900, check=True)
        found = shutil.which("redis-server")
        if found:
            return found
    raise RuntimeError("redis-server not found: apt-get install -y redis-server")


@scenario(
    "peer_huey",
    "peer: Huey + Redis, 1 consumer worker: enqueue N add(i, i) then wait every result; sequential round trips",
    display=(
        Metric("tps", "end to end, tasks/s"),
        Metric("enqueue_tps", "enqueue only, tasks/s"),
        Metric("p50_ms", "sequential p50, ms", ".3f"),
        Metric("p99_ms", "sequential p99, ms", ".3f"),
        Metric("sequential_tps", "sequential, tasks/s"),
    ),
    needs_controlplane=False,
    default=False,
)
async def huey_scenario(cp: object, opts: Options) -> dict[str, Any]:
    python = await asyncio.to_thread(huey_python, opts)
    server = await asyncio.to_thread(redis_server)
    port = free_port()
    env = peer_env(BENCH_REDIS_PORT=str(port))
    with tempfile.TemporaryDirectory(prefix="fastworker-bench-huey-") as folder:
        redis_log = Path(folder) / "redis.log"
        redis = start_process(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                folder,
                "--daemonize",
                "no",
            ],
            log_path=redis_log,
            cwd=Path(folder),
        )
        with running(redis, timeout=5.0):
            await asyncio.to_thread(wait_for_port, redis, port, 20.0, redis_log)
            consumer = start_process(
                [
                    str(python),
                    "-m",
                    "huey.bin.huey_consumer",
                    "huey_tasks.huey",
                    "-w",
                    "1",
                    "-k",
                    opts.huey_worker_type,
                    "-n",
                    "-q",
                ],
                log_path=Path(folder) / "consumer.log",
                env=env,
                cwd=Path(folder),
                new_session=True,
            )
            with running(consumer, timeout=5.0, group=True):
                driver_args = [
                    "--tasks",
                    str(opts.peer_tasks),
                    "--samples",
                    str(opts.peer_samples),
                    "--timeout",
                    str(opts.wait_timeout),
                ]
                out = await asyncio.to_thread(run_driver, python, "huey_driver.py", driver_args, env, 900.0)
                alive = consumer.poll() is None
    result: dict[str, Any] = dict(out)
    problems = []
    if not alive:
        problems.append("the huey consumer exited during the run")
    if out.get("peer_wrong") or out.get("peer_failed") or out.get("seq_wrong"):
        problems.append(f"huey returned wrong or no results: {out}")
    result.update({"problems": problems, "valid": not problems, "worker_type": opts.huey_worker_type})
    result["peer"] = " ".join(HUEY_REQUIREMENTS)
    return result
