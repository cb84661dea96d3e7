"""``/stream``: Server-Sent Events that push re-rendered page panels as the control plane changes.

Each viewer names its page (``view=overview|tasks|task|workflow|workers``, plus the task filters or id).
All viewers share the app's :class:`LiveFeed` (one upstream poller); the panels of one page are
rendered once per feed change and shared by all its viewers (``LiveFeed.rendered``), at most once
per refresh interval, and each viewer is sent only panels whose HTML changed, through a bounded
queue that drops a viewer who stops reading (:mod:`~fastworker.dashboard.web.sse`). The stream
ends when the browser goes away or the server stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request

from fastworker.client import FastworkerError, TaskNotFound, TaskState, WorkflowInfo
from fastworker.dashboard.source import TaskDetailView
from fastworker.dashboard.web.deps import DashboardState, StateDep
from fastworker.dashboard.web.live import FeedClosed, LiveFeed
from fastworker.dashboard.web.query import BadQuery, TaskFilters
from fastworker.dashboard.web.sse import BoundedEventStream
from fastworker.dashboard.web.views import (
    OVERVIEW_PANELS,
    RECENT_LIMIT,
    STATUS_PANEL,
    TASK_PANELS,
    TASKS_PANELS,
    WORKERS_PANELS,
    WORKFLOW_PANELS,
    Ui,
    detail_context,
    make_ui,
    stats_context,
    tasks_context,
    workflow_context,
)

logger = logging.getLogger(__name__)

router = APIRouter()

#: Seconds of silence after which a comment line keeps proxies and the browser from timing out.
KEEPALIVE = 10.0
#: Longest wait for the feed's first snapshot before rendering what there is.
FIRST_SNAPSHOT_WAIT = 5.0

#: Renders one page's panels: panel element id -> inner HTML.
PanelRenderer = Callable[[], Awaitable[dict[str, str]]]


@dataclass(frozen=True)
class LiveView:
    """What one viewer watches: ``key`` names everything its panels depend on, ``render`` draws them."""

    key: Hashable
    render: PanelRenderer

    async def __call__(self) -> dict[str, str]:
        """Render the panels now (unshared)."""
        return await self.render()


def sse_event(event: str, data: Any) -> str:
    """One SSE message (JSON data on a single line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _status(state: DashboardState, ui: Ui, error: str | None) -> tuple[str, str]:
    panel_id, template = STATUS_PANEL
    return panel_id, state.renderer.fragment(template, {"ui": ui, "status_error": error})


def _render_all(state: DashboardState, panels: dict[str, str], context: dict[str, Any]) -> dict[str, str]:
    return {panel_id: state.renderer.fragment(template, context) for panel_id, template in panels.items()}


def make_panel_renderer(state: DashboardState, request: Request) -> LiveView:
    """The live view for the page named in the query (``view``, plus filters or ``id``).

    Raises:
        BadQuery: unknown view, missing task id, or bad filters.
    """
    params = request.query_params
    view = params.get("view", "overview")
    feed = state.feed

    if view in ("overview", "workers"):
        full = view == "workers"
        ui = make_ui(state.config, request, "/workers" if full else "/")

        async def render_stats() -> dict[str, str]:
            snapshot = await feed.current_snapshot(FIRST_SNAPSHOT_WAIT)
            context: dict[str, Any] = {"ui": ui, "full_workers": full}
            context.update(
                stats_context(snapshot.stats, snapshot.queues, snapshot.workers, snapshot.limits, snapshot.limits_error)
            )
            panels = WORKERS_PANELS if full else OVERVIEW_PANELS
            if not full:
                try:
                    context["recent"] = list((await feed.task_page(TaskFilters(limit=RECENT_LIMIT))).tasks)
                except FastworkerError as exc:
                    return dict([_status(state, ui, str(exc))])
            out = dict([_status(state, ui, snapshot.error)])
            if snapshot.taken_at:
                out.update(_render_all(state, panels, context))
            return out

        return LiveView((view, ui), render_stats)

    if view == "tasks":
        filters = TaskFilters.from_query(params)
        query = filters.query_string()
        ui = make_ui(state.config, request, "/tasks" + (f"?{query}" if query else ""))

        async def render_tasks() -> dict[str, str]:
            try:
                page = await feed.task_page(filters)
            except FastworkerError as exc:
                return dict([_status(state, ui, str(exc))])
            context = {"ui": ui, **tasks_context(filters, page)}
            return {**dict([_status(state, ui, None)]), **_render_all(state, TASKS_PANELS, context)}

        return LiveView((view, filters, ui), render_tasks)

    def one_object(
        kind: str,
        path: str,
        fetch: Callable[[str], Awaitable[Any]],
        to_context: Callable[[Any], Awaitable[dict[str, Any]]],
        panels: dict[str, str],
    ) -> LiveView:
        """The live view of one task or workflow page, by the ``id`` query parameter."""
        object_id = params.get("id", "")
        if not object_id:
            raise BadQuery(f"view={kind} needs id=<{kind} id>")
        ui = make_ui(state.config, request, f"{path}/{quote(object_id, safe='')}")

        async def render() -> dict[str, str]:
            try:
                found = await fetch(object_id)
            except TaskNotFound:
                return dict([_status(state, ui, f"{kind} {object_id} is no longer known to the control plane")])
            except FastworkerError as exc:
                return dict([_status(state, ui, str(exc))])
            context = {"ui": ui, **(await to_context(found))}
            return {**dict([_status(state, ui, None)]), **_render_all(state, panels, context)}

        return LiveView((view, object_id, ui), render)

    async def task_context(detail: TaskDetailView) -> dict[str, Any]:
        # Only a waiting task needs the queues (is its queue served?): the feed's snapshot has them.
        if detail.info.state is not TaskState.PENDING:
            return detail_context(detail)
        return detail_context(detail, (await feed.current_snapshot(FIRST_SNAPSHOT_WAIT)).queues)

    async def workflow_page_context(workflow: WorkflowInfo) -> dict[str, Any]:
        return workflow_context(workflow)

    if view == "task":
        return one_object("task", "/tasks", feed.task_detail, task_context, TASK_PANELS)
    if view == "workflow":
        return one_object("workflow", "/workflows", feed.workflow, workflow_page_context, WORKFLOW_PANELS)

    raise BadQuery(f"unknown view {view!r}: expected overview, tasks, task, workflow or workers")


async def panel_events(feed: LiveFeed, view: LiveView) -> AsyncGenerator[str, None]:
    """The SSE text for one viewer: changed panels as ``panel`` events and keepalive comments.

    Panels are rendered once per feed change for all viewers of the same view. It ends when the
    feed closes or the response closes it (viewer gone or dropped); leaving ``feed.watching()``
    stops polling for it.
    """
    try:
        async with feed.watching():
            yield "retry: 2000\n\n"
            seen = -1
            sent: dict[str, str] = {}
            while True:
                version = await feed.wait_for_change(seen, KEEPALIVE)
                if version == seen:
                    yield ": keepalive\n\n"
                    continue
                seen = version
                started = time.monotonic()
                for panel_id, html in (await feed.rendered(view.key, view.render)).items():
                    if sent.get(panel_id) != html:
                        sent[panel_id] = html
                        yield sse_event("panel", {"id": panel_id, "html": html})
                # Throttle: at most one redraw per interval, however busy the control plane is.
                await asyncio.sleep(max(0.0, feed.interval - (time.monotonic() - started)))
    except FeedClosed:
        return


@router.get("/stream")
async def stream(request: Request, state: StateDep) -> BoundedEventStream:
    """The live stream for one page (``text/event-stream``)."""
    view = make_panel_renderer(state, request)
    return BoundedEventStream(
        panel_events(state.feed, view), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
