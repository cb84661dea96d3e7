"""``/workers``: every connected subworker with its load, memory, heartbeat and a Drain button."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from fastworker.dashboard.web.deps import StateDep
from fastworker.dashboard.web.views import page_context, workers_context

router = APIRouter()


@router.get("/workers", response_class=HTMLResponse)
async def workers_page(request: Request, state: StateDep) -> HTMLResponse:
    """The workers table, server-rendered; the live stream keeps it current."""
    context = {
        **page_context(
            state.config,
            request,
            page_name="workers",
            next_url="/workers",
            stream_url="/stream?view=workers",
            title="Workers",
        ),
        **await workers_context(state.client),
        "full_workers": True,
    }
    return state.renderer.page(request, "workers.html", context)
