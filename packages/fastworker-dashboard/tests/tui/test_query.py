"""How the task list's filters and search box become list_tasks requests."""

from __future__ import annotations

from fastworker.client import TaskState
from fastworker.dashboard.tui.query import STATE_FILTERS, TaskQuery, fetch_tasks


def test_filters_start_with_all_and_include_active_and_failed() -> None:
    labels = [f.label for f in STATE_FILTERS]
    assert labels[0] == "all" and STATE_FILTERS[0].states == ()
    assert "active" in labels and "failed" in labels
    failed = next(f for f in STATE_FILTERS if f.label == "failed")
    assert failed.states == (TaskState.FAILURE,)


async def test_no_text_asks_once_with_the_states(fake) -> None:
    listing = await fetch_tasks(fake, TaskQuery(states=(TaskState.FAILURE,)))
    assert [t.name for t in listing.tasks] == ["fwtop.fail"] and listing.total == 1
    assert fake.list_calls == [{"states": {TaskState.FAILURE}, "name": "", "search": "", "limit": 200}]


async def test_text_is_one_request_whose_search_the_control_plane_matches(fake) -> None:
    listing = await fetch_tasks(fake, TaskQuery(text=" sleep "))
    assert [t.id[:4] for t in listing.tasks] == ["eeee", "cccc"]
    assert [c["search"] for c in fake.list_calls] == ["sleep"]
