"""Start FastWorker with the example tasks, submit work to it, and show what happened.

Run with ``bash scripts/demo`` (or ``python examples/demo.py`` with the packages installed).
``--keep-running`` leaves the control plane up afterwards until Ctrl+C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

from fastworker.client import Client, TaskFailed
from fastworker.controlplane.testing import HarnessError, RunningControlPlane, start_controlplane, start_worker

HERE = Path(__file__).resolve().parent


async def submit_work(control_plane: RunningControlPlane) -> None:
    async with Client(control_plane.discovery) as client:
        print(f"add(2, 3) = {await client.submit('add', 2, 3, timeout=10)}")
        email = await client.submit("emails.send", 42, subject="Welcome", timeout=10)
        print(f"emails.send(42) -> {email}")
        total = await client.submit("invoice_total", [("tea", Decimal("3.20")), ("cake", Decimal("4.15"))], timeout=10)
        print(f"invoice_total -> {total!r}")

        started = time.perf_counter()
        ids = await asyncio.gather(*[client.delay("add", i, i) for i in range(2000)])
        values = await client.results(ids, timeout=30)
        elapsed = time.perf_counter() - started
        assert values == [2 * i for i in range(2000)], "wrong results"
        print(f"2,000 concurrent add tasks: all correct in {elapsed:.2f} s")

        ids = await client.delay_many([("reports.checksum", (f"doc-{i}",), {"rounds": 200}) for i in range(50)])
        await client.wait_many(ids, timeout=30)
        print(f"50 low-priority checksum tasks finished, e.g. {(await client.status(ids[0])).result[:16]}...")

        try:
            await client.submit("fail", "the demo asked for it", timeout=10)
        except TaskFailed as exc:
            print(
                f"fail -> TaskFailed: {exc.info.error.type}: {exc.info.error.message}" if exc.info.error else str(exc)
            )

        workers = await client.workers()
        for worker in workers:
            print(f"worker {worker['worker_id']}: processed {worker['processed']}, failed {worker['failed']}")
        stats = await client.stats()
        print(
            "stats: submitted={submitted} succeeded={succeeded} failed={failed} throughput={throughput:.0f}/s".format(
                **stats
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-running", action="store_true", help="leave the control plane running until Ctrl+C")
    parser.add_argument(
        "--dashboard-address", default="127.0.0.1:8080", help="HOST:PORT for the web dashboard (port 0: any free one)"
    )
    args = parser.parse_args()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "quickstart"), os.environ.get("PYTHONPATH")]))}
    print("starting the control plane with examples/quickstart/example_tasks.py ...")
    try:
        control_plane = start_controlplane(task_modules=["example_tasks"], env=env, dashboard=args.dashboard_address)
    except HarnessError as exc:
        if "cannot listen on the --dashboard-address" not in str(exc):
            raise
        # A port in use stops the control plane's start: the demo takes any free one instead.
        print(f"{args.dashboard_address} is taken: serving the web dashboard on a free port instead")
        control_plane = start_controlplane(task_modules=["example_tasks"], env=env, dashboard="127.0.0.1:0")
    print(f"control plane pid {control_plane.pid}: discovery {control_plane.discovery}, clients {control_plane.client}")
    if control_plane.dashboard:
        print(f"web dashboard: {control_plane.dashboard}")
    else:
        print("web dashboard not served (is fastworker-dashboard installed?)")
    print(f"Prometheus metrics: {control_plane.metrics}/metrics (health: {control_plane.metrics}/healthz)")
    worker = start_worker(control_plane.discovery, task_modules=["example_tasks"], worker_id="demo-worker", env=env)
    print(f"subworker pid {worker.pid} registered; it shares the work with the control plane's own slots")
    print(f"terminal view: fastworker-top --control-plane {control_plane.discovery}")
    try:
        asyncio.run(submit_work(control_plane))
        if args.keep_running:
            print(
                f"control plane still running: dashboard {control_plane.dashboard}, "
                f"Client({control_plane.discovery!r}). Ctrl+C stops it."
            )
            control_plane.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print(f"subworker stopped (exit code {worker.stop()})")
        code = control_plane.stop()
        print(f"control plane stopped (exit code {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
