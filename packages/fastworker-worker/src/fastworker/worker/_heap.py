"""How the daemons run Python's cyclic garbage collector: the heap they start with is frozen, young collections are rarer.

Private, shared by the daemons (see ``SHARED_INTERNALS`` in ``scripts/check_layout.py``); never
called by the client library, whose process belongs to the application. A control plane holding
100,000 live task records spent about 2 µs of each task's loop time collecting with CPython's
defaults (a collection every 700 net allocations, every full one walking every record); a
threshold of 20,000 cut that to a third, which measured as ~7% of ``delay_many``'s control-plane
CPU. Cycles are still collected, only in larger steps: at most about this many container objects
of garbage wait for the next collection.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle_heap"]

#: Net container allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 20_000
#: Young collections per middle one, and middle ones per full one (CPython's defaults: 10, 10).
OLDER_THRESHOLDS = (20, 20)


def settle_heap() -> None:
    """Collect once, move what startup made (modules, classes, settings) out of the collector's sight, and raise the thresholds.

    Call once a daemon has started: everything frozen then lives as long as the process, and no
    full collection walks it again (``gc.freeze``).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
