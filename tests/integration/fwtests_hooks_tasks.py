"""Tasks and hooks for ``test_hooks.py``: loaded by a control plane or a subworker (and its child processes).

The hooks are registered when this module is imported, so every process that imports it to run
its tasks has them: the control plane, a subworker, and each of the subworker's child processes.
Each recording hook appends one JSON line (what it saw, and the process and thread it ran in) to
the file named by ``FWTESTS_HOOKS_LOG``; before each of them sits a hook that raises, which must
neither fail a task nor stop the hooks after it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from fastworker.client import TaskContext, current_task, hooks, task
from fastworker.client.hooks import RunOutcome


def record(kind: str, ctx: TaskContext, detail: Any = None) -> None:
    """Append one line to the hooks log (one write per line, so the processes' lines never interleave)."""
    path = os.environ.get("FWTESTS_HOOKS_LOG")
    if not path:
        return
    line = {
        "kind": kind,
        "id": ctx.id,
        "name": ctx.name,
        "attempt": ctx.attempt,
        "worker": ctx.worker_id,
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "detail": detail,
    }
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


@hooks.before_task
def broken_before(ctx: TaskContext) -> None:
    raise RuntimeError("broken before_task hook")


@hooks.before_task
def record_before(ctx: TaskContext) -> None:
    record("before", ctx)


@hooks.on_retry
def broken_retry(ctx: TaskContext, error: BaseException) -> None:
    raise RuntimeError("broken on_retry hook")


@hooks.on_retry
def record_retry(ctx: TaskContext, error: BaseException) -> None:
    record("retry", ctx, f"{type(error).__name__}: {error}")


@hooks.on_failure
def broken_failure(ctx: TaskContext, error: BaseException) -> None:
    raise RuntimeError("broken on_failure hook")


@hooks.on_failure
def record_failure(ctx: TaskContext, error: BaseException) -> None:
    record("failure", ctx, f"{type(error).__name__}: {error}")


@hooks.after_task
def broken_after(ctx: TaskContext, outcome: RunOutcome) -> None:
    raise RuntimeError("broken after_task hook")


@hooks.after_task
def record_after(ctx: TaskContext, outcome: RunOutcome) -> None:
    error = None if outcome.error is None else type(outcome.error).__name__
    record("after", ctx, {"succeeded": outcome.succeeded, "value": outcome.value, "error": error})


@task(name="fwhooks.add")
def add(x: int, y: int) -> int:
    """A sync task: a slot thread on the control plane, a child process on a subworker."""
    record("task", current_task())
    return x + y


@task(name="fwhooks.add_async")
async def add_async(x: int, y: int) -> int:
    """An async task: the event loop of the control plane or of the subworker's main process."""
    record("task", current_task())
    return x + y


@task(name="fwhooks.flaky", retries=2, retry_backoff=0.05)
def flaky(marker: str) -> str:
    """Fails its first attempt (creating ``marker``), succeeds on the retry."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise ConnectionError("first attempt fails")
    return "ok"


@task(name="fwhooks.always_down", retries=1, retry_backoff=0.05)
def always_down() -> None:
    """Fails every attempt: retried once, then final."""
    raise ConnectionError("upstream down")
