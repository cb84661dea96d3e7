"""Tasks for the integration suite, loaded by the control-plane subprocess (``--task-modules fwtests_tasks``).

The tests submit by name and never import this module. With no subworkers attached, every task
runs inside the control-plane process, so the execution counter below sees every execution and
``fwtests.execution_counts`` reports it: that is how the tests tell "ran exactly once" from
"ran twice" or "never ran".
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from pathlib import Path

from fastworker.client import task

_lock = threading.Lock()
#: Executions per key in this process; the key is the task's identifying argument.
_executions: Counter[str] = Counter()


def _ran(key: str) -> int:
    """Count one execution of ``key``; returns how many times it has run, this one included."""
    with _lock:
        _executions[key] += 1
        return _executions[key]


@task(name="fwtests.square")
def square(n: int) -> int:
    """Return n squared; counted under ``square:<n>``."""
    _ran(f"square:{n}")
    return n * n


@task(name="fwtests.add")
def add(x: int, y: int) -> int:
    """Return x + y (not counted; used for round trips and wrong-argument calls)."""
    return x + y


@task(name="fwtests.record")
def record(tag: str) -> str:
    """Count one execution of ``tag`` and return it."""
    _ran(tag)
    return tag


@task(name="fwtests.block_until")
def block_until(path: str, tag: str, limit: float = 10.0) -> bool:
    """Wait (at most ``limit`` seconds) until ``path`` exists; True if it appeared. Counted under ``tag``."""
    _ran(tag)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if Path(path).exists():
            return True
        time.sleep(0.01)
    return False


@task(name="fwtests.unique_block_until", unique=True)
def unique_block_until(path: str, tag: str, limit: float = 10.0) -> bool:
    """block_until, declared unique: a submission with the same arguments while one is live returns its id."""
    return block_until(path, tag, limit)


@task(name="fwtests.sleep_then_mark")
def sleep_then_mark(seconds: float, marker: str) -> str:
    """Sleep, then write the wall-clock time into ``marker``; returns the marker path."""
    time.sleep(seconds)
    Path(marker).write_text(repr(time.time()))
    return marker


@task(name="fwtests.spin_then_mark")
def spin_then_mark(started: str, marker: str, seconds: float = 30.0) -> str:
    """Touch ``started``, run Python code for ``seconds``, then write ``marker`` (only if never interrupted)."""
    Path(started).touch()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    Path(marker).touch()
    return marker


@task(name="fwtests.block_in_c_then_mark")
def block_in_c_then_mark(started: str, marker: str, seconds: float) -> str:
    """Touch ``started``, block in one call into C (``time.sleep``) for ``seconds``, then write ``marker``."""
    Path(started).touch()
    time.sleep(seconds)
    Path(marker).touch()
    return marker


@task(name="fwtests.exit_process")
def exit_process(code: int) -> None:
    """End the whole process at once (``os._exit``): a task that crashes whatever runs it."""
    os._exit(code)


@task(name="fwtests.async_sleep_then_mark")
async def async_sleep_then_mark(started: str, marker: str, seconds: float = 30.0) -> str:
    """The async twin of spin_then_mark: touch ``started``, sleep on the loop, then write ``marker``."""
    Path(started).touch()
    await asyncio.sleep(seconds)
    Path(marker).touch()
    return marker


@task(name="fwtests.async_interrupt")
async def async_interrupt(message: str) -> None:
    """Raise KeyboardInterrupt(message) on the loop: a library's interrupt that a task lets out."""
    raise KeyboardInterrupt(message)


@task(name="fwtests.fail")
def fail(message: str) -> None:
    """Always raise ValueError(message)."""
    raise ValueError(message)  # fwtests: the raising line


@task(name="fwtests.fail_first_time")
def fail_first_time(tag: str) -> str:
    """Raise RuntimeError on the first execution of ``tag``, succeed on later ones."""
    if _ran(tag) == 1:
        raise RuntimeError(f"first attempt of {tag} fails")
    return tag


@task(name="fwtests.execution_counts")
def execution_counts(prefix: str = "") -> dict[str, int]:
    """Executions so far of every key that starts with ``prefix``."""
    with _lock:
        return {key: count for key, count in _executions.items() if key.startswith(prefix)}


@task(name="[bold]x[/]")
def markup_named(text: str) -> str:
    """A task whose name and result look like rich markup: operator views must show them literally."""
    return text


@task(name="fwtests.limited", rate_limit="100/s", max_concurrency=2)
def limited(x: int) -> int:
    """Return x; its definition limits it, for the operator CLI's flow-control commands."""
    return x


@task(name="fwtests.log_then_block")
def log_then_block(log: str, tag: str, gate: str, limit: float = 20.0) -> str:
    """Append ``tag`` to the file ``log`` (one line per run, whichever process runs it), then wait for ``gate``."""
    with open(log, "a") as lines:
        lines.write(tag + "\n")
    deadline = time.monotonic() + limit
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return tag


@task(name="fwtests.heap")
def heap() -> list[int]:
    """How the process running it collects garbage: [young-generation threshold, objects frozen]."""
    import gc

    return [gc.get_threshold()[0], gc.get_freeze_count()]
