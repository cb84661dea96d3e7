"""FastWorker benchmark suite: ``python bench/run.py`` (see bench/README.md).

Every scenario run gets a fresh control plane (started by pid on free loopback ports through
``fastworker.controlplane.testing``) that loads ``bench/tasks.py``; the runner repeats each
scenario, reports the median and the spread (min-max) of every metric, prints a table (and the
peer ratios with ``--peer-reference`` / ``--peer-huey``) and writes JSON. Targets are shown,
never asserted: the exit code is non-zero only when a run failed or lost or corrupted tasks, so
``--quick`` is a smoke test.

The code lives in ``bench/fwbench/``: ``core`` (options, registry, measuring primitives),
``scenarios/`` (local, workers, memory), ``peers/`` (reference, Huey), ``report`` and ``cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fwbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
