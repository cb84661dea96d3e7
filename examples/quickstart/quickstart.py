"""FastWorker in one file: define tasks, start a control plane that runs them, submit work through typed handles.

Run it with the FastWorker packages installed (``bash scripts/demo`` makes ``.venv-demo``)::

    python examples/quickstart/quickstart.py

In production the control plane is a long-running process of its own
(``fastworker-controlplane --task-modules quickstart``); this script starts one on free loopback
ports, submits work to it, and stops it by pid at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastworker.client import Client, TaskFailed, TaskHandle, task

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------- tasks
# The control plane imports this module (--task-modules quickstart) to run them; this process
# imports it too, but only to submit: calling a task function here would run it here.


@task
def add(x: int, y: int) -> int:
    """The classic."""
    return x + y


@task(name="text.shout", priority="high")
async def shout(text: str) -> str:
    """An async task: runs on the control plane's event loop without blocking it."""
    await asyncio.sleep(0.01)
    return text.upper() + "!"


@task
def divide(a: float, b: float) -> float:
    """Fails for b == 0: the error and its traceback come back to the client."""
    return a / b


# ------------------------------------------------------------------------------------------ client


async def submit_work(control_plane: str) -> None:
    async with Client(control_plane) as client:  # the current client for typed calls in this block
        handle: TaskHandle[int] = await add.delay(1, 2)  # returns at once: the task is queued
        total: int = await handle.result(timeout=10)
        print(f"add(1, 2) = {total}")

        print(f"text.shout('hello') = {await shout.submit('hello')!r}")  # queue and wait in one call

        handles = [await add.delay(i, i) for i in range(100)]
        values = [await h.result(timeout=10) for h in handles]
        print(f"100 add tasks: sum of results = {sum(values)}")

        print(f"by name, without importing the task: add(20, 22) = {await client.submit('add', 20, 22, timeout=10)}")

        try:
            await divide.submit(1, 0)
        except TaskFailed as exc:
            error = exc.info.error
            print(f"divide(1, 0) failed remotely: {error.type}: {error.message}" if error else str(exc))

        stats = await client.stats()
        print(f"control plane: {stats['succeeded']} succeeded, {stats['failed']} failed")


# ----------------------------------------------------------------------------------- control plane


def start_control_plane(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``fastworker-controlplane --task-modules quickstart`` on free ports; returns it and its address."""
    ready = folder / "ready.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "fastworker.controlplane", "--task-modules", "quickstart"]
    argv += ["--discovery-address", "tcp://127.0.0.1:0", "--client-address", "tcp://127.0.0.1:0"]
    argv += ["--dispatch-address", "tcp://127.0.0.1:0", "--no-dashboard", "--metrics-address", "127.0.0.1:0"]
    argv += ["--ready-file", str(ready)]
    process = subprocess.Popen(argv, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the control plane exited with {process.returncode}")
        try:
            return process, json.loads(ready.read_text())["discovery"]  # written once it serves
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)
    stop(process)
    raise SystemExit("the control plane did not start within 30 s")


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the control plane drains and exits 0), SIGKILL if it does not exit in time."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
    return process.wait()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="fastworker-quickstart-") as folder:
        process, address = start_control_plane(Path(folder))
        print(f"control plane pid {process.pid} on {address}")
        try:
            asyncio.run(submit_work(address))
        finally:
            print(f"control plane stopped (exit code {stop(process)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
