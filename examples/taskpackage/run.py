"""Run the ``acme.tasks`` package: a control plane, one subworker, and a client that submits to both.

One command (with the FastWorker packages installed, e.g. ``.venv-demo/bin/python``)::

    python examples/taskpackage/run.py

What it starts is what you would run in production, on free loopback ports here::

    fastworker-controlplane --task-modules acme.tasks --local-concurrency 0   # queue only
    fastworker-worker --task-modules acme.tasks --concurrency 2               # runs the tasks

Both processes are started by ``fastworker.controlplane.testing`` (the harness FastWorker's own
tests use) and stopped by pid at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path

from acme.tasks.emails import send_welcome
from acme.tasks.reports import checksum, monthly_report

from fastworker.client import Client, TaskFailed
from fastworker.controlplane.testing import run_controlplane, run_worker

HERE = Path(__file__).resolve().parent


async def submit_work(control_plane: str) -> None:
    async with Client(control_plane) as client:
        welcome = await send_welcome.delay("ada@example.com", "Ada")  # TaskHandle[dict[str, str]]
        report = await monthly_report.delay(2026, 11, [Decimal("19.99"), Decimal("5.01")])
        sums = [await checksum.delay(f"doc-{i}", rounds=2_000) for i in range(20)]

        print(f"emails.send_welcome -> {await welcome.result(timeout=30)}")
        summary = await report.result(timeout=30)
        print(f"reports.monthly -> {summary['period']}: total {summary['total']} over {summary['count']} sales")
        print(f"20 reports.checksum tasks -> {len({await s.result(timeout=30) for s in sums})} distinct digests")

        try:
            await send_welcome.submit("not-an-address", "Bob")
        except TaskFailed as exc:
            info = exc.info
            print(
                f"bad address -> {info.state} after {info.attempts} attempt(s): {info.error.message if info.error else ''}"
            )

        ran_on = {(await client.status(task_id)).worker for task_id in [welcome.id, report.id, *(s.id for s in sums)]}
        print(f"ran on: {', '.join(sorted(w or '?' for w in ran_on))}")


def main() -> int:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    with run_controlplane(task_modules=["acme.tasks"], extra_args=["--local-concurrency", "0"], env=env) as cp:
        print(f"control plane pid {cp.pid} on {cp.discovery}")
        with run_worker(cp.discovery, task_modules=["acme.tasks"], concurrency=2, worker_id="acme-1", env=env) as w:
            print(f"subworker {w.worker_id} (pid {w.pid}) registered")
            asyncio.run(submit_work(cp.discovery))
    print("stopped both")
    return 0


if __name__ == "__main__":
    sys.exit(main())
