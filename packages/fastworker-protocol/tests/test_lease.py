"""The lease rule: a cut-off worker fences itself before the control plane takes its tasks back.

Simulated on one real timeline with two clocks that disagree: each process measures silence on its
own monotonic clock, with any offset and with rates that make the two readings of the same silence
differ by up to 1 s, over network delays up to half a second.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from fastworker.protocol.lease import fence_after, fence_margin, may_take_back, worker_fenced

STEP = 0.001


def first_true(predicate: Callable[[float], bool], start: float, end: float) -> float:
    """The first real time in [start, end] at which predicate holds (a step-wise scan)."""
    steps = int((end - start) / STEP) + 1
    for i in range(steps):
        t = start + i * STEP
        if predicate(t):
            return t
    raise AssertionError("never true")


def drifting_clock(offset: float, rate: float) -> Callable[[float], float]:
    """A monotonic clock reading for real time t: its own offset, running at ``rate`` real speed."""
    return lambda t: offset + rate * t


def fence_and_take_back(
    heartbeat_timeout: float, skew: float, worker_share: float, delay: float, fence: float | None = None
) -> tuple[float, float]:
    """Real times of the worker's fence and of the control plane's take-back after the last exchange.

    The worker sends at real time 10; the control plane takes the request in ``delay`` later and
    hears nothing more. The worker's clock runs slow and the control plane's fast, so that over the
    silence their readings differ by ``skew`` seconds, ``worker_share`` of it on the worker's side.
    """
    sent, taken_in = 10.0, 10.0 + delay
    worker_clock = drifting_clock(-5_000.0, 1 - skew * worker_share / heartbeat_timeout)
    cp_clock = drifting_clock(123_456.0, 1 + skew * (1 - worker_share) / heartbeat_timeout)
    end = taken_in + 2 * heartbeat_timeout
    if fence is None:
        fenced_at = first_true(
            lambda t: worker_fenced(worker_clock(t), worker_clock(sent), heartbeat_timeout), sent, end
        )
    else:
        fenced_at = first_true(lambda t: worker_clock(t) - worker_clock(sent) >= fence, sent, end)
    taken_back_at = first_true(lambda t: may_take_back(cp_clock(t), cp_clock(taken_in), heartbeat_timeout), sent, end)
    return fenced_at, taken_back_at


@pytest.mark.parametrize("heartbeat_timeout", [2.5, 5.0, 10.0, 30.0])
def test_the_worker_fences_itself_before_the_control_plane_takes_back_under_1_s_of_clock_skew(
    heartbeat_timeout: float,
) -> None:
    for skew, worker_share, delay in itertools.product([0.0, 0.5, 1.0], [0.0, 0.5, 1.0], [0.0, 0.5]):
        fenced_at, taken_back_at = fence_and_take_back(heartbeat_timeout, skew, worker_share, delay)
        assert fenced_at < taken_back_at, (heartbeat_timeout, skew, worker_share, delay)


def test_without_the_margin_the_same_skew_lets_the_control_plane_take_back_first() -> None:
    # What the margin is for: a worker that waited the whole heartbeat timeout would still be
    # starting tasks after the control plane handed them to someone else.
    fenced_at, taken_back_at = fence_and_take_back(5.0, skew=1.0, worker_share=0.5, delay=0.0, fence=5.0)
    assert fenced_at > taken_back_at


def test_the_margin_is_30_percent_of_the_timeout_but_at_least_1_25_s_and_at_most_half() -> None:
    assert fence_margin(5.0) == pytest.approx(1.5)
    assert fence_margin(30.0) == pytest.approx(9.0)
    assert fence_margin(3.0) == pytest.approx(1.25)
    assert fence_margin(1.0) == pytest.approx(0.5)  # short test timeouts: half
    assert fence_after(5.0) == pytest.approx(3.5)
    with pytest.raises(ValueError):
        fence_margin(0.0)


def test_a_fresh_lease_is_not_fenced_and_a_recent_request_is_not_taken_back() -> None:
    assert not worker_fenced(now=101.0, last_answered_send=100.0, heartbeat_timeout=5.0)
    assert worker_fenced(now=103.5, last_answered_send=100.0, heartbeat_timeout=5.0)
    assert not may_take_back(now=105.0, last_seen=100.0, heartbeat_timeout=5.0)
    assert may_take_back(now=105.01, last_seen=100.0, heartbeat_timeout=5.0)
