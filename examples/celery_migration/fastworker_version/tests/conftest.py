"""Each test starts with an empty audit trail (the tests that run eagerly ask for ``fastworker_eager``)."""

from __future__ import annotations

import pytest
from shop.audit import TRAIL


@pytest.fixture(autouse=True)
def empty_trail() -> None:
    TRAIL.clear()
