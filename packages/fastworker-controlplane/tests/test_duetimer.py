"""One timer for the earliest due time: an earlier time re-arms it, a later one does not."""

from __future__ import annotations

import asyncio
import time

from fastworker.controlplane.duetimer import DueTimer


async def test_it_fires_once_at_the_earliest_time_it_was_given() -> None:
    fired: list[float] = []
    timer = DueTimer(asyncio.get_running_loop(), time.time, lambda: fired.append(time.time()))
    now = time.time()
    timer.arm(now + 5.0)
    timer.arm(now + 0.05)  # earlier: re-armed
    timer.arm(now + 1.0)  # later: ignored
    timer.arm(None)  # nothing due: ignored
    await asyncio.sleep(0.3)
    assert len(fired) == 1 and fired[0] >= now + 0.05

    timer.arm(time.time() + 0.05)  # armed again after it fired
    timer.cancel()
    await asyncio.sleep(0.2)
    assert len(fired) == 1
