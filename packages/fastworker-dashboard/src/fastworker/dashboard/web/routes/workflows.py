"""``/workflows/{id}``: one workflow's steps as an indented list with their states, each linking to its task page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from fastworker.client import TaskNotFound
from fastworker.dashboard.web.deps import StateDep
from fastworker.dashboard.web.errors import WorkflowNotFound
from fastworker.dashboard.web.formatting import short_id
from fastworker.dashboard.web.views import object_page_context, workflow_context

router = APIRouter()


@router.get("/workflows/{workflow_id}", response_class=HTMLResponse)
async def workflow_page(request: Request, state: StateDep, workflow_id: str) -> HTMLResponse:
    """A workflow: its state, how many steps are in each state, and every step under what it waits for (404 when unknown)."""
    try:
        workflow = await state.feed.read_workflow(workflow_id)
    except TaskNotFound:
        raise WorkflowNotFound(workflow_id) from None
    context = {
        **object_page_context(state.config, request, "workflow", workflow_id, f"Workflow {short_id(workflow_id)}"),
        **workflow_context(workflow),
    }
    return state.renderer.page(request, "workflow.html", context)
