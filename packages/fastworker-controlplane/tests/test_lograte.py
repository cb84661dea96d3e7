"""Refusals of what peers send are logged at most once a second, saying how many were left out."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fastworker.controlplane.lograte import RateLimitedLog


def test_the_first_warning_goes_out_then_one_per_interval_with_the_count_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = RateLimitedLog(logging.getLogger("lograte-test"), interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="lograte-test"):
        for n in range(50):
            log.warning("bad frame %d", n)
        now[0] += 1.0
        log.warning("bad frame %d", 50)
        now[0] += 5.0
        log.warning("bad frame %d", 51)

    assert [r.getMessage() for r in caplog.records] == [
        "bad frame 0",
        "bad frame 50 (and 49 more like it not logged since the last line)",
        "bad frame 51",
    ]


async def test_a_burst_that_ends_between_two_lines_is_summed_up_an_interval_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RateLimitedLog(logging.getLogger("lograte-test"), interval=0.2)
    with caplog.at_level(logging.WARNING, logger="lograte-test"):
        log.warning("refused: %s", "bad magic")
        for reason in ("version 99", "frame too large", "frame too large"):
            log.warning("refused: %s", reason)
        await asyncio.sleep(0.4)

    # The last one left out is written once the interval passed, with how many were left out
    assert [r.getMessage() for r in caplog.records] == [
        "refused: bad magic",
        "refused: frame too large (and 2 more like it not logged since the last line)",
    ]
