"""What both daemons' execution options accept: the pools sync tasks may run in, and the most slots.

Apart from :mod:`fastworker.worker.runtime` so that the control plane's ``--local-pool`` and
``--local-concurrency`` check against the same values without loading the subworker's runtime.
"""

from __future__ import annotations

#: Largest --concurrency accepted (slots; with ``--pool processes``, child processes).
MAX_CONCURRENCY = 10_000
#: Where sync tasks may run (``--pool``): child processes, or threads of the worker process.
POOLS = ("processes", "threads")
