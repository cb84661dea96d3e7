"""Tasks that log, read their context and retry, for ``test_task_context.py``: loaded by a control plane or a subworker.

Sync tasks run on a slot thread or a worker's child process (``hello_limited``, which has a time
limit, in a child process on the control plane too), async ones on an event loop. Tasks that
must behave differently on a later attempt keep their state in files the test names.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from fastworker.client import Retry, task
from fastworker.client.context import current_task

logger = logging.getLogger("fwtests.context")

#: retry_backoff of ``backoff``, in seconds: long enough that "at once" cannot pass for it.
BACKOFF = 1.0


def _fields() -> list[Any]:
    context = current_task()
    return [context.id, context.name, context.attempt, context.retries_left, context.worker_id, context.traceparent]


@task(name="fwcontext.hello")
def hello() -> str:
    logger.info("hello from %s", current_task().id)
    logger.debug("debug from %s", current_task().id)  # below the daemons' INFO
    return current_task().id


@task(name="fwcontext.hello_limited", timeout=120)
def hello_limited() -> str:
    return hello.fn()


@task(name="fwcontext.hello_async")
async def hello_async() -> str:
    logger.info("hello from %s", current_task().id)
    return current_task().id


@task(name="fwcontext.whoami", retries=2, retry_backoff=0.05)
def whoami(first_attempt: str) -> list[Any]:
    """Fails its first attempt (after writing its context to ``first_attempt``); returns the second's context."""
    marker = Path(first_attempt)
    if not marker.exists():
        marker.write_text(json.dumps(_fields()))
        raise ConnectionError("first attempt fails")
    return _fields()


@task(name="fwcontext.backoff", retries=1, retry_backoff=BACKOFF)
def backoff(stamps: str) -> int:
    """Appends ``[attempt, started, ended]`` (wall clock) to ``stamps`` per attempt; asks for a retry with no delay once."""
    started = time.time()
    attempt = current_task().attempt
    with open(stamps, "a") as out:
        out.write(json.dumps([attempt, started, time.time()]) + "\n")
    if attempt == 1:
        raise Retry()
    return attempt


@task(name="fwcontext.always_down", retries=1, retry_backoff=0.05)
def always_down() -> None:
    """Asks for a retry on every attempt, for its own error: it ends with that error, not Retry."""
    try:
        raise ConnectionError("upstream down")
    except ConnectionError as exc:
        raise Retry() from exc


@task(name="fwcontext.flaky_once", retries=1, retry_backoff=0.05)
def flaky_once(marker: str) -> str:
    """Fails its first attempt with a ValueError, then succeeds."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise ValueError("first attempt fails")
    return "ok"
