"""The daemons' garbage-collector settings: startup's heap frozen, young collections rarer (in a child: they are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

from fastworker.worker._heap import OLDER_THRESHOLDS, YOUNG_THRESHOLD

PROBE = """
import gc, json
before = gc.get_threshold()
from fastworker.worker._heap import settle_heap
settle_heap()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_settling_the_heap_freezes_what_exists_and_raises_the_thresholds() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(out.stdout)
    assert seen["before"][0] < YOUNG_THRESHOLD  # (CPython 3.11-3.13: 700)
    assert seen["after"] == [YOUNG_THRESHOLD, *OLDER_THRESHOLDS]
    assert seen["frozen"] > 1000  # the modules, classes and functions loaded so far
