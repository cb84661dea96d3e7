"""``/``: the overview page (counters, throughput sparkline, queues, workers, recent tasks)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from fastworker.dashboard.web.deps import StateDep
from fastworker.dashboard.web.views import overview_context, page_context

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, state: StateDep) -> HTMLResponse:
    """The overview, server-rendered; the live stream keeps its panels current."""
    context = {
        **page_context(
            state.config,
            request,
            page_name="overview",
            next_url="/",
            stream_url="/stream?view=overview",
            title="Overview",
        ),
        **await overview_context(state.client),
        "full_workers": False,
    }
    return state.renderer.page(request, "overview.html", context)
