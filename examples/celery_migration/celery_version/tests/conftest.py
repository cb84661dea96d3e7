"""Run every task in the test's own process, at the moment it is queued (Celery's eager mode)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from shop.audit import TRAIL
from shop.celery_app import app


@pytest.fixture(autouse=True)
def eager() -> Iterator[None]:
    app.conf.update(task_always_eager=True, broker_url="memory://", result_backend="cache+memory://")
    TRAIL.clear()
    yield
    app.conf.update(task_always_eager=False)
