"""The lease rule between the control plane and a subworker: who may act on a task, and when.

A subworker may start a task it holds only while its lease is fresh: measured on its own monotonic
clock from the moment it *sent* the latest request the control plane answered. The control plane
took that request in no earlier than it was sent, and it takes a silent worker's tasks back only
``heartbeat_timeout`` after the latest request it took in. So if the worker stops starting tasks
``fence_after(heartbeat_timeout)`` after that send, its fence always falls before the take-back,
by at least ``fence_margin(heartbeat_timeout)``: room for the two clocks disagreeing about how long
the silence lasted (a stalled process, a slow timer, clock drift).

Both sides import these functions, so the two ends of the rule can never drift apart.
"""

from __future__ import annotations

#: Least margin, in seconds, between a worker's fence and the control plane's take-back for the
#: default heartbeat timeout and above: covers 1 s of disagreement between the two clocks.
MARGIN_FLOOR = 1.25
#: Share of the heartbeat timeout kept as margin for long timeouts.
MARGIN_SHARE = 0.3


def fence_margin(heartbeat_timeout: float) -> float:
    """Seconds by which a worker's fence precedes the control plane's take-back.

    ``max(30% of the timeout, min(1.25 s, half the timeout))``: 1.5 s for the default 5 s timeout,
    1.25 s from 2.5 s up to about 4.2 s, and half the timeout below 2.5 s (short timeouts, as in
    tests, trade skew tolerance for a usable fence).
    """
    if heartbeat_timeout <= 0:
        raise ValueError("heartbeat_timeout must be positive")
    return max(MARGIN_SHARE * heartbeat_timeout, min(MARGIN_FLOOR, heartbeat_timeout / 2))


def fence_after(heartbeat_timeout: float) -> float:
    """Seconds of silence after which a worker starts none of the tasks it holds."""
    return heartbeat_timeout - fence_margin(heartbeat_timeout)


def worker_fenced(now: float, last_answered_send: float, heartbeat_timeout: float) -> bool:
    """True if a worker must start nothing: its latest answered request was sent too long ago.

    All times are the worker's own monotonic readings.
    """
    return now - last_answered_send >= fence_after(heartbeat_timeout)


def may_take_back(now: float, last_seen: float, heartbeat_timeout: float) -> bool:
    """True if the control plane may re-dispatch what a silent worker held.

    All times are the control plane's own monotonic readings; ``last_seen`` is when it took in the
    worker's latest request.
    """
    return now - last_seen > heartbeat_timeout
