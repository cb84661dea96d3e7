"""Python bytecodes the control plane runs per task: ``python bench/opcodes.py`` (see bench/README.md).

CPU time on a small shared VM moves by ±20% from one run to the next, so a change worth 5% needs
many alternating rounds to show. The number of bytecodes the control plane's Python executes for
``N`` trivial tasks (submitted with ``delay_many``, run on its local slots, waited for) moves by
well under 1%: it tells which code got heavier, by function, in one run of each tree. It counts
Python only (protobuf, msgpack and nng work in C is not in it), and tracing every bytecode makes the
run about 50 times slower, so keep ``--tasks`` small.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fwbench.core import TASK_MODULE, controlplane_env, verify

from fastworker.client import Client
from fastworker.controlplane.testing import start_controlplane

#: Loaded by the control plane at startup (``sitecustomize`` on its PYTHONPATH): counts every
#: bytecode by (file, function) between the moments the files ``on`` and ``off`` appear.
_COUNTER = """
import collections, json, os, sys, threading, time
_dir = os.environ["FWBENCH_OPCODES_DIR"]
_counts = collections.Counter()
_on = [False]
def _local(frame, event, arg):
    if event == "opcode" and _on[0]:
        code = frame.f_code
        _counts[(code.co_filename.rsplit("/", 1)[-1], code.co_name)] += 1
    return _local
def _global(frame, event, arg):
    frame.f_trace_opcodes = True
    return _local
def _control():
    while True:
        time.sleep(0.05)
        if os.path.exists(os.path.join(_dir, "on")):
            os.remove(os.path.join(_dir, "on"))
            _counts.clear()
            _on[0] = True
        if os.path.exists(os.path.join(_dir, "off")):
            os.remove(os.path.join(_dir, "off"))
            _on[0] = False
            with open(os.path.join(_dir, "counts.json.tmp"), "w") as out:
                json.dump([[f, n, c] for (f, n), c in _counts.items()], out)
            os.replace(os.path.join(_dir, "counts.json.tmp"), os.path.join(_dir, "counts.json"))
threading.Thread(target=_control, daemon=True).start()
sys.settrace(_global)
threading.settrace(_global)
"""
#: Bound on each wait for the counter to take a command, in seconds.
COMMAND_TIMEOUT = 30.0


async def _signal(folder: Path, command: str) -> None:
    """Ask the counter to start or stop, and wait until it took the command."""
    (folder / command).touch()
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while (folder / command).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the control plane's counter did not take {command!r}")
        await asyncio.sleep(0.05)


async def _load(discovery: str, folder: Path, tasks: int, batch: int) -> None:
    async with Client(discovery, request_timeout=600) as client:
        await client.stats()
        await _signal(folder, "on")
        batches = [
            [("add", (i, i)) for i in range(start, min(start + batch, tasks))] for start in range(0, tasks, batch)
        ]
        ids = [task_id for ids in await asyncio.gather(*map(client.delay_many, batches)) for task_id in ids]
        infos = await client.wait_many(ids, timeout=600)
        await _signal(folder, "off")
    problems: list[str] = []
    correct, wrong, lost = verify(ids, infos, lambda i: 2 * i, problems)
    if correct != tasks:
        raise RuntimeError(f"{correct} of {tasks} tasks correct ({wrong} wrong, {lost} lost): {problems[:3]}")


def count(tasks: int, batch: int) -> dict[tuple[str, str], float]:
    """Bytecodes per task by (file, function), over ``tasks`` add tasks on a fresh control plane."""
    with tempfile.TemporaryDirectory(prefix="fastworker-opcodes-") as name:
        folder = Path(name)
        (folder / "sitecustomize.py").write_text(_COUNTER)
        env = controlplane_env()
        env["PYTHONPATH"] = f"{folder}:{env['PYTHONPATH']}"
        env["FWBENCH_OPCODES_DIR"] = str(folder)
        cp = start_controlplane(
            task_modules=[TASK_MODULE],
            extra_args=["--result-cache-size", str(max(100_000, 2 * tasks))],
            env=env,
            workdir=folder,
            ready_timeout=120,
        )
        try:
            asyncio.run(_load(cp.discovery, folder, tasks, batch))
            deadline = time.monotonic() + COMMAND_TIMEOUT
            while not (folder / "counts.json").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            rows = json.loads((folder / "counts.json").read_text())
        finally:
            cp.stop()
    return {(file, function): counted / tasks for file, function, counted in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=4000, help="tasks to run (default 4000)")
    parser.add_argument("--batch", type=int, default=1000, help="tasks per delay_many call (default 1000)")
    parser.add_argument("--top", type=int, default=30, help="functions to list (default 30)")
    parser.add_argument("--json", type=Path, help="also write every function's count per task here")
    args = parser.parse_args(argv)
    per_task = count(args.tasks, args.batch)
    print(f"{sum(per_task.values()):,.0f} bytecodes per task in the control plane ({args.tasks:,} tasks)")
    for (file, function), value in sorted(per_task.items(), key=lambda item: -item[1])[: args.top]:
        print(f"{value:9.1f}  {file}:{function}")
    if args.json is not None:
        args.json.write_text(json.dumps([[f, n, v] for (f, n), v in sorted(per_task.items())], indent=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
