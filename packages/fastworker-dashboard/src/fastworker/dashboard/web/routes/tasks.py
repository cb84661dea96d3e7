"""``/tasks`` (filtered, paginated list) and ``/tasks/{id}`` (one task in full)."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from fastworker.dashboard.web.deps import FiltersDep, StateDep
from fastworker.dashboard.web.views import detail_context, page_context, tasks_context, tasks_form_context

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
    """One task: state, timings, arguments, result or error with traceback. Unknown ids give the 404 page."""
    detail = await state.client.task_detail(task_id)
    quoted = quote(task_id, safe="")
    context = {
        **page_context(
            state.config,
            request,
            page_name="tasks",
            next_url=f"/tasks/{quoted}",
            stream_url=f"/stream?view=task&id={quoted}",
            title=f"Task {detail.info.name}",
        ),
        **detail_context(detail),
    }
    return state.renderer.page(request, "task.html", context)
