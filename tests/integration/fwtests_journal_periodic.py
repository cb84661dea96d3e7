"""A periodic task for the journal tests: fires every second and records each run (see fwtests_journal_tasks)."""

from __future__ import annotations

import os

from fwtests_journal_tasks import mark

from fastworker.client import task


@task(name="fwtests_journal.tick", every=1.0)
def tick() -> None:
    """Record a run in ``FWTESTS_JOURNAL_DIR``."""
    mark(os.environ["FWTESTS_JOURNAL_DIR"], "tick")
