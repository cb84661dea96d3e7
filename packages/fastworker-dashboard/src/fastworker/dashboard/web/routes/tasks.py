"""``/tasks`` (filtered, paginated list), ``/tasks/{id}`` (one task, large values as previews) and its full-value downloads."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from fastworker.client import FastworkerError, TaskState
from fastworker.client.models import result_of
from fastworker.dashboard.source import TaskDetailView
from fastworker.dashboard.web.deps import DashboardState, FiltersDep, StateDep
from fastworker.dashboard.web.errors import error_response
from fastworker.dashboard.web.preview import DOWNLOAD_CAP, render_capped
from fastworker.dashboard.web.views import (
    detail_context,
    object_page_context,
    page_context,
    tasks_context,
    tasks_form_context,
)
from fastworker.protocol.ids import shown_id

router = APIRouter()


@router.get("/tasks", response_class=HTMLResponse)
async def task_list(request: Request, state: StateDep, filters: FiltersDep) -> HTMLResponse:
    """Tasks matching the query's filters, newest first, one page at a time."""
    client = state.client
    page, registered, workers = await asyncio.gather(
        client.list_tasks(**filters.client_kwargs()), client.tasks(), client.workers()
    )
    query = filters.query_string()
    here = "/tasks" + (f"?{query}" if query else "")
    context = {
        **page_context(
            state.config,
            request,
            page_name="tasks",
            next_url=here,
            stream_url="/stream?view=tasks" + (f"&{query}" if query else ""),
            title="Tasks",
        ),
        **tasks_context(filters, page),
        **tasks_form_context(filters, registered, workers),
    }
    return state.renderer.page(request, "tasks.html", context)


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, state: StateDep, task_id: str) -> HTMLResponse:
    """One task: state, timings, arguments, result or error with traceback. Unknown ids give the 404 page.

    Loads of one task share reads (see ``LiveFeed.page_task_detail``); large values are shown as previews.
    """
    detail = await state.feed.page_task_detail(task_id)
    context = {
        **object_page_context(state.config, request, "task", task_id, f"Task {detail.info.name}"),
        **detail_context(detail, await _queues_if_waiting(state, detail)),
    }
    return state.renderer.page(request, "task.html", context)


async def _queues_if_waiting(state: DashboardState, detail: TaskDetailView) -> list[dict[str, Any]] | None:
    """The queues, read only for a waiting task (to say whether anything serves its queue); None if unreadable."""
    if detail.info.state is not TaskState.PENDING:
        return None
    try:
        return await state.client.queues()
    except FastworkerError:
        return None  # the detail shows without the marker; the live stream adds it when it can


async def _download(state: DashboardState, task_id: str, what: str, value: Any) -> Response:
    """``value`` as an indented JSON attachment, or 413 when it is larger than the download cap."""
    async with state.downloads:
        text = render_capped(value, DOWNLOAD_CAP)
        if text is None:
            return PlainTextResponse(
                f"the {what} of task {task_id} is larger than the download cap ({DOWNLOAD_CAP // (1024 * 1024)} MiB)\n",
                status_code=413,
            )
        body = text.encode()
    safe_id = "".join(c for c in task_id if c.isalnum() or c in "-_")[:64] or "task"
    return Response(
        body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="task-{safe_id}-{what}.json"'},
    )


@router.get("/tasks/{task_id}/args")
async def task_arguments(state: StateDep, task_id: str) -> Response:
    """The task's args and kwargs in full (``{"args": [...], "kwargs": {...}}``), up to the download cap."""
    detail = await state.feed.read_task_detail(task_id)
    return await _download(state, task_id, "arguments", {"args": list(detail.args), "kwargs": dict(detail.kwargs)})


@router.get("/tasks/{task_id}/result")
async def task_result(request: Request, state: StateDep, task_id: str) -> Response:
    """The task's result in full, up to the download cap (read alone: a detail may leave a large one out).

    Only a task in SUCCESS has one: any other state is a 409 naming it, so a failed or waiting task is never
    downloaded as the ``null`` a task that returned None gives.
    """
    info = await state.feed.read_status(task_id)
    if info.state is not TaskState.SUCCESS:
        return error_response(
            request,
            409,
            "No result",
            f"Task {shown_id(task_id)} is {info.state.value}: only a task in SUCCESS has a result to download.",
        )
    return await _download(state, task_id, "result", result_of(info))
