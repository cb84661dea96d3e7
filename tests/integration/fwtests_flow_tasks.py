"""Tasks for ``test_flow_control.py``: limited and unlimited names that record when they ran.

Loaded by subworkers and, for the mixed-fleet test, by the control plane too (same definitions
everywhere). Each task returns its own ``time.time()`` readings (start, or ``[start, end]``), so
the test judges the limits by what the tasks saw, not by what the control plane says it did.
Async tasks run on an event loop; ``bounded_sync`` runs on a control-plane slot thread or in a
subworker's child process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from fastworker.client import task

#: ``paced``'s rate limit.
PACED_RATE = "50/s"
#: ``bounded``'s and ``bounded_sync``'s concurrency limit.
BOUNDED = 3
#: Longest a task waits for its gate file, in seconds (a failed test must not leave it running for ever).
GATE_WAIT = 60.0


@task(name="fwflow.paced", rate_limit=PACED_RATE)
async def paced() -> float:
    """When it started."""
    return time.time()


async def _hold(seconds: float, gate: str) -> list[float]:
    started = time.time()
    if gate:  # a mark that this run began: the test opens the gate only once the runs it counts have
        Path(f"{gate}.started-{uuid.uuid4().hex}").touch()
    await asyncio.sleep(seconds)
    if gate:
        deadline = time.monotonic() + GATE_WAIT
        while not Path(gate).exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    return [started, time.time()]


@task(name="fwflow.bounded", max_concurrency=BOUNDED)
async def bounded(seconds: float, gate: str = "") -> list[float]:
    """Sleep ``seconds``, then wait for the file ``gate`` if one is named (marking ``gate.started-*``); ``[start, end]``."""
    return await _hold(seconds, gate)


@task(name="fwflow.bounded_sync", max_concurrency=BOUNDED)
def bounded_sync(seconds: float) -> list[float]:
    """As ``bounded``, blocking (a slot thread or a child process); ``[start, end]``."""
    started = time.time()
    time.sleep(seconds)
    return [started, time.time()]


@task(name="fwflow.free")
async def free(seconds: float) -> list[float]:
    """No limit: sleep ``seconds``; ``[start, end]``."""
    return await _hold(seconds, "")
