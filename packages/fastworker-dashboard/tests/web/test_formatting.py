"""Pure helpers behind the pages: human durations, payload text, the sparkline geometry, filter round trips."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from fastworker.client import Priority, TaskState
from fastworker.dashboard.web.formatting import ago, can_cancel, can_retry, duration, number, pretty, state_class
from fastworker.dashboard.web.query import BadQuery, TaskFilters, page_links
from fastworker.dashboard.web.security import safe_next
from fastworker.dashboard.web.sparkline import build_sparkline


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.0123, "12 ms"),
        (12.34, "12.3 s"),
        (245, "4 min 05 s"),
        (7620, "2 h 07 min"),
        (273600, "3 d 04 h"),
    ],
)
def test_duration_reads_like_a_person_would_say_it(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_ago_is_coarse_so_live_panels_change_rarely() -> None:
    assert ago(100.0, now=100.4) == "just now"
    assert ago(100.0, now=103.9) == "3 s ago"
    assert ago(None) == "—"


def test_number_and_state_helpers() -> None:
    assert number(1234567) == "1,234,567"
    assert number(2.5) == "2.50"
    assert state_class(TaskState.FAILURE) == "state-failure"
    assert state_class("bogus") == "state-unknown"
    assert can_cancel(TaskState.RUNNING) and not can_cancel(TaskState.SUCCESS)
    assert can_retry(TaskState.CANCELLED) and not can_retry(TaskState.PENDING)


def test_pretty_prints_json_and_falls_back_to_repr() -> None:
    assert pretty({"a": [1, 2]}) == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert pretty(b"\x00") == "\"b'\\\\x00'\""


def test_sparkline_scales_to_the_peak_and_totals_the_history() -> None:
    history = [{"at": i, "succeeded": n, "failed": 1 if i == 2 else 0} for i, n in enumerate([0, 2, 4, 2])]
    spark = build_sparkline(history, width=300, height=100)
    assert (spark.total_succeeded, spark.total_failed, spark.peak, spark.seconds) == (8, 1, 4, 4)
    assert spark.succeeded_points.split() == ["0,100", "100,53", "200,6", "300,53"]
    assert spark.succeeded_area.startswith("M 0 100 L 0 100") and spark.succeeded_area.endswith("L 300 100 Z")
    assert build_sparkline(None).empty


def test_filters_round_trip_through_the_query_string() -> None:
    params = QueryParams(
        "state=failure,CANCELLED&state=FAILURE&priority=HIGH&name=app.x&worker=w1&search=ab&offset=50&limit=25"
    )
    filters = TaskFilters.from_query(params)
    assert filters.states == (TaskState.FAILURE, TaskState.CANCELLED)
    assert filters.priority is Priority.HIGH
    again = TaskFilters.from_query(QueryParams(filters.query_string()))
    assert again == filters
    assert page_links(filters, total=80) == {
        "prev": filters.query_string(offset=25),
        "next": filters.query_string(offset=75),
    }
    assert page_links(filters, total=60)["next"] is None


@pytest.mark.parametrize("query", ["state=NOPE", "priority=urgent", "offset=-5", "limit=0", "offset=x"])
def test_bad_filters_are_refused(query: str) -> None:
    with pytest.raises(BadQuery):
        TaskFilters.from_query(QueryParams(query))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/tasks?state=FAILURE", "/tasks?state=FAILURE"),
        ("//evil", "/"),
        ("http://evil/", "/"),
        ("", "/"),
        ("/\\evil", "/"),
    ],
)
def test_redirect_targets_stay_local(target: str, expected: str) -> None:
    assert safe_next(target) == expected
