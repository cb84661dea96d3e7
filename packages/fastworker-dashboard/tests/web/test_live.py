"""The live feed and the SSE panels: one upstream poller for all viewers, shared reads, only changed panels sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
from starlette.requests import Request
from web_fakes import FakeAdminClient, make_task

from fastworker.dashboard.web.app import create_app
from fastworker.dashboard.web.deps import DashboardState
from fastworker.dashboard.web.live import FeedClosed, LiveFeed
from fastworker.dashboard.web.query import BadQuery, TaskFilters
from fastworker.dashboard.web.routes.stream import make_panel_renderer, panel_events

WAIT = 10.0  # bound of every wait below, in seconds


@pytest.fixture
async def state(fake: FakeAdminClient) -> AsyncIterator[DashboardState]:
    app = create_app(control_plane="tcp://127.0.0.1:5550", client=fake, refresh_interval=0.05)
    async with app.router.lifespan_context(app):
        yield app.state.dashboard


def stream_request(state: DashboardState, query: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/stream", "query_string": query.encode(), "headers": []})


async def next_panels(events: AsyncIterator[str], wanted: str, *, containing: str = "") -> dict[str, str]:
    """Read SSE messages until panel ``wanted`` arrives (containing ``containing``); returns every panel seen."""
    seen: dict[str, str] = {}
    async with asyncio.timeout(WAIT):
        async for message in events:
            if message.startswith("event: panel"):
                payload = json.loads(message.split("data: ", 1)[1])
                seen[payload["id"]] = payload["html"]
                if payload["id"] == wanted and containing in payload["html"]:
                    return seen
    raise AssertionError(f"stream ended before {wanted}")


async def test_many_viewers_share_one_upstream_poller(fake: FakeAdminClient) -> None:
    feed = LiveFeed(fake, interval=0.05, event_wait=0.5)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(20):
            await stack.enter_async_context(feed.watching())
        assert feed.viewers == 20
        # Wait (bounded) for a few snapshot rounds
        version = feed.version
        for _ in range(3):
            version = await feed.wait_for_change(version, WAIT)
        # One event long poll at a time, and one snapshot per round, whatever the number of viewers
        assert fake.max_events_in_flight == 1
        assert fake.calls["stats"] <= feed.version + 1
    assert feed.viewers == 0
    await feed.aclose()


async def test_task_changes_bump_the_tasks_version(fake: FakeAdminClient) -> None:
    feed = LiveFeed(fake, interval=0.01, event_wait=5.0)
    async with feed.watching():
        # The follower first reads the newest sequence, then waits on the long poll
        deadline = time.monotonic() + WAIT
        while fake.events_in_flight == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        before = feed.tasks_version
        fake.add(make_task("99999999-0000-4000-8000-000000000000"))
        while feed.tasks_version == before:
            assert time.monotonic() < deadline, "the event never bumped tasks_version"
            await feed.wait_for_change(feed.version, 0.5)
    await feed.aclose()


async def test_concurrent_viewers_with_the_same_filters_share_one_read(fake: FakeAdminClient) -> None:
    feed = LiveFeed(fake)
    filters = TaskFilters(limit=5)
    pages = await asyncio.gather(*(feed.task_page(filters) for _ in range(10)))
    assert fake.calls["list_tasks"] == 1
    assert all(page is pages[0] for page in pages)
    await feed.task_page(TaskFilters(limit=6))
    assert fake.calls["list_tasks"] == 2
    await feed.aclose()


async def test_a_failed_shared_read_is_not_cached(fake: FakeAdminClient) -> None:
    feed = LiveFeed(fake)
    fake.unavailable = True
    with pytest.raises(Exception, match="fake"):
        await feed.task_page(TaskFilters())
    fake.unavailable = False
    assert (await feed.task_page(TaskFilters())).total == 3
    await feed.aclose()


async def test_overview_stream_pushes_new_tasks_and_only_changed_panels(
    state: DashboardState, fake: FakeAdminClient
) -> None:
    render = make_panel_renderer(state, stream_request(state, "view=overview"))
    events = panel_events(state.feed, render)
    try:
        assert await anext(events) == "retry: 2000\n\n"
        first = await next_panels(events, "panel-recent")
        assert {"panel-status", "panel-counters", "panel-queues", "panel-workers", "panel-throughput"} <= set(first)
        assert 'data-worker-id="w1"' in first["panel-workers"]
        # When another client submits a task, the recent list is pushed again with it
        fresh = make_task("eeeeeeee-0000-4000-8000-00000000000e", name="app.fresh", queued_at=time.time())
        fake.add(fresh)
        later = await next_panels(events, "panel-recent", containing=fresh.id)
        assert "panel-queues" not in later  # unchanged panels are not re-sent
    finally:
        await events.aclose()
    assert state.feed.viewers == 0  # leaving the stream stops counting the viewer


async def test_tasks_stream_honours_the_page_filters(state: DashboardState, fake: FakeAdminClient) -> None:
    render = make_panel_renderer(state, stream_request(state, "view=tasks&state=FAILURE"))
    panels = await render()
    assert "ffffffff-0000-4000-8000-000000000001" in panels["panel-tasks"]
    assert "aaaaaaaa-0000-4000-8000-000000000001" not in panels["panel-tasks"]


async def test_task_stream_reports_an_evicted_task_in_the_status_panel(state: DashboardState) -> None:
    render = make_panel_renderer(state, stream_request(state, "view=task&id=gone"))
    panels = await render()
    assert list(panels) == ["panel-status"]
    assert "no longer known" in panels["panel-status"]


async def test_stream_shows_control_plane_loss_in_the_status_panel(
    state: DashboardState, fake: FakeAdminClient
) -> None:
    render = make_panel_renderer(state, stream_request(state, "view=workers"))
    events = panel_events(state.feed, render)
    try:
        await next_panels(events, "panel-workers")
        fake.unavailable = True
        await next_panels(events, "panel-status", containing="Control plane unavailable")
    finally:
        await events.aclose()


async def test_unknown_view_is_a_bad_query(state: DashboardState) -> None:
    with pytest.raises(BadQuery):
        make_panel_renderer(state, stream_request(state, "view=nope"))
    with pytest.raises(BadQuery):
        make_panel_renderer(state, stream_request(state, "view=task"))


async def test_closing_the_feed_ends_every_stream(state: DashboardState) -> None:
    events = panel_events(state.feed, make_panel_renderer(state, stream_request(state, "view=overview")))
    await anext(events)
    state.feed.close()
    async with asyncio.timeout(WAIT):
        async for _ in events:
            pass
    with pytest.raises(FeedClosed):
        await state.feed.wait_for_change(-1, 0)
