"""Display helpers: durations, sizes, load bars and styled states."""

from __future__ import annotations

import pytest

from fastworker.client import Priority, TaskState
from fastworker.dashboard.tui.format import (
    format_age,
    format_bytes,
    format_count,
    format_duration,
    load_bar,
    priority_text,
    short_id,
    state_text,
)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "-"),
        (0.254, "0.25s"),
        (12.34, "12.3s"),
        (245, "4m05s"),
        (7380, "2h03m"),
        (273600, "3d04h"),
        (-3, "0.00s"),
    ],
)
def test_format_duration(seconds: float | None, expected: str) -> None:
    assert format_duration(seconds) == expected


def test_format_age_and_sizes_and_counts() -> None:
    assert format_age(None, 100.0) == "-"
    assert format_age(90.0, 100.0) == "10.0s"
    assert format_bytes(0) == "-" and format_bytes(512) == "512 B" and format_bytes(3 * 1024**3) == "3.0 GiB"
    assert format_count(1234567) == "1,234,567" and format_count(None) == "-"


def test_load_bar_shows_any_load_and_is_full_only_at_capacity() -> None:
    assert load_bar(0, 4).plain == "░░░░░░░░░░ 0/4"
    assert load_bar(1, 100).plain == "█░░░░░░░░░ 1/100"
    assert load_bar(3, 4).plain == "████████░░ 3/4"
    assert load_bar(4, 4).plain == "██████████ 4/4"
    assert load_bar(1, 0).plain.endswith(" 1/0")


def test_styled_texts_keep_unknown_values_literal() -> None:
    assert state_text(TaskState.FAILURE).plain == "FAILURE"
    assert state_text("[b]odd[/b]").plain == "[b]odd[/b]"
    assert priority_text(Priority.HIGH).plain == "high"
    assert priority_text("[i]x").plain == "[i]x"
    assert short_id("0123456789abcdef") == "01234567"
