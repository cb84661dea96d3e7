"""A blocked event loop is reported with the code that holds it, and again when it runs."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from fastworker.worker._stallwatch import LoopStallWatch


def hold_the_loop_with_a_blocking_call(seconds: float) -> None:
    time.sleep(seconds)  # what an async task that forgets to await does


async def test_a_loop_held_past_the_threshold_is_reported_naming_the_blocking_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = LoopStallWatch(asyncio.get_running_loop(), what="test loop", threshold=0.3, tick=0.05)
    with caplog.at_level(logging.WARNING, logger="fastworker.worker._stallwatch"):
        watch.start()
        try:
            await asyncio.sleep(0.4)  # a loop that turns is not reported
            assert not caplog.records
            hold_the_loop_with_a_blocking_call(1.0)
            await asyncio.sleep(0.3)  # the loop runs again: that is reported too
        finally:
            watch.stop()

    stalled, resumed = (record.getMessage() for record in caplog.records)
    assert "the test loop has not run for" in stalled
    assert "hold_the_loop_with_a_blocking_call" in stalled and "test_stallwatch.py" in stalled
    assert "the test loop runs again, after" in resumed
    blocked_for = float(resumed.rsplit("after ", 1)[1].split(" s")[0])
    assert 0.9 <= blocked_for <= 3.0


async def test_stop_ends_the_ticks_and_the_watcher_thread() -> None:
    loop = asyncio.get_running_loop()
    watch = LoopStallWatch(loop, what="test loop", threshold=0.3, tick=0.05)
    watch.start()
    watch.stop()
    assert watch._watcher is None and watch._handle is None
