"""``Retry(delay=...)`` takes a number of seconds: anything else is refused where the task raises it."""

from __future__ import annotations

import pytest

from fastworker.client import Retry


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -1.0])
def test_a_delay_that_is_no_number_of_seconds_is_refused_naming_it(delay: float) -> None:
    with pytest.raises(ValueError, match=r"Retry delay must be a finite number of seconds, 0 or more, got"):
        Retry(delay=delay)


def test_a_delay_and_none_are_kept() -> None:
    assert Retry(delay=2.5).delay == 2.5
    assert Retry().delay is None
    assert "in 2.5 s" in str(Retry(delay=2.5))
