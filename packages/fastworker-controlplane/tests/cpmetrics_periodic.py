"""A periodic task for the /metrics test of a real control-plane process: its first run outlasts its interval."""

from __future__ import annotations

import os
import time

from fastworker.client import task


@task(name="metrics.slow_beat", every=1)
def slow_beat() -> str:
    """Runs until the file named by ``CPMETRICS_RELEASE`` exists (bounded), so later slots find it running."""
    deadline = time.monotonic() + 30
    while not os.path.exists(os.environ["CPMETRICS_RELEASE"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "released"
