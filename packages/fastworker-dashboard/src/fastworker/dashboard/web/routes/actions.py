"""HTML form actions (cancel, retry, cancel a workflow, purge, pause/resume, drain, limits): authorize, act, then 303 back with a flash message.

Every form carries the per-app CSRF token and the page to return to; the checks live in
``security.authorize_form_action`` (read-only, same origin, token, secret).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse

from fastworker.client import ClientError, Priority, TaskNotFound
from fastworker.dashboard.web.deps import StateDep
from fastworker.dashboard.web.flash import Flash, set_flash
from fastworker.dashboard.web.forms import read_form
from fastworker.dashboard.web.limits import BadLimits, LimitsChange, describe
from fastworker.dashboard.web.query import BadQuery
from fastworker.dashboard.web.security import authorize_form_action, safe_next

router = APIRouter()


def _priority(value: str) -> Priority:
    try:
        return Priority.parse(value)
    except ValueError as exc:
        raise BadQuery(str(exc)) from None


async def _act(
    request: Request,
    state: StateDep,
    default_next: str,
    action: Callable[[], Awaitable[Flash]],
    *,
    changes: str | None = None,
) -> RedirectResponse:
    """Run one authorized action and redirect back with its outcome; refusals by the control plane become error flashes.

    ``changes`` names the task whose cached detail the action makes stale (None: every task's).
    """
    form = await read_form(request)
    authorize_form_action(state.config, state.throttle, request, form)
    try:
        flash = await action()
    except TaskNotFound as exc:
        flash = Flash(f"task {exc.task_id} is not known to the control plane", "error")
    except ClientError as exc:
        flash = Flash(str(exc), "error")
    finally:
        state.feed.forget_task(changes)  # the page we return to shows what the action did
    response = RedirectResponse(safe_next(form.get("next"), default_next), status_code=303)
    set_flash(response, flash)
    return response


@router.post("/tasks/{task_id}/cancel")
async def cancel_task(request: Request, state: StateDep, task_id: str) -> RedirectResponse:
    """Cancel one task."""

    async def action() -> Flash:
        result = await state.client.cancel(task_id)
        if result.cancelled:
            return Flash(f"cancelled {task_id} (was {result.previous_state.value})")
        return Flash(f"not cancelled: {task_id} had already ended in {result.previous_state.value}", "info")

    return await _act(request, state, f"/tasks/{quote(task_id, safe='')}", action, changes=task_id)


@router.post("/tasks/{task_id}/retry")
async def retry_task(request: Request, state: StateDep, task_id: str) -> RedirectResponse:
    """Re-queue a failed or cancelled task under the same id."""

    async def action() -> Flash:
        new_state = await state.client.retry(task_id)
        return Flash(f"retried {task_id}: {new_state.value}")

    return await _act(request, state, f"/tasks/{quote(task_id, safe='')}", action, changes=task_id)


@router.post("/workflows/{workflow_id}/cancel")
async def cancel_workflow(request: Request, state: StateDep, workflow_id: str) -> RedirectResponse:
    """Cancel a workflow's waiting and running steps."""

    async def action() -> Flash:
        try:
            count = await state.client.cancel_workflow(workflow_id)
        except TaskNotFound:
            return Flash(f"workflow {workflow_id} is not known to the control plane", "error")
        if count:
            return Flash(f"cancelled {count} step{'s' if count != 1 else ''} of workflow {workflow_id}")
        return Flash(f"nothing cancelled: every step of workflow {workflow_id} had already ended", "info")

    return await _act(request, state, f"/workflows/{quote(workflow_id, safe='')}", action)


@router.post("/queues/{priority}/purge")
async def purge_queue(request: Request, state: StateDep, priority: str) -> RedirectResponse:
    """Cancel every task waiting at one priority level, in every named queue."""

    async def action() -> Flash:
        level = _priority(priority)
        count = await state.client.purge(level)
        return Flash(f"purged {count} {level.value} task{'s' if count != 1 else ''} from every queue")

    return await _act(request, state, "/", action)


@router.post("/queues/{priority}/pause")
async def pause_queue(request: Request, state: StateDep, priority: str) -> RedirectResponse:
    """Stop dispatching one priority level in every named queue (its tasks keep waiting)."""

    async def action() -> Flash:
        level = _priority(priority)
        paused = await state.client.pause(level)
        text = f"{level.value} level {'paused' if paused else 'still running'} in every queue"
        return Flash(text, "success" if paused else "error")

    return await _act(request, state, "/", action)


@router.post("/queues/{priority}/resume")
async def resume_queue(request: Request, state: StateDep, priority: str) -> RedirectResponse:
    """Dispatch one priority level again, in every named queue."""

    async def action() -> Flash:
        level = _priority(priority)
        paused = await state.client.resume(level)
        text = f"{level.value} level {'still paused' if paused else 'resumed'} in every queue"
        return Flash(text, "error" if paused else "success")

    return await _act(request, state, "/", action)


@router.post("/workers/{worker_id}/drain")
async def drain_worker(request: Request, state: StateDep, worker_id: str) -> RedirectResponse:
    """Ask one worker to finish its running tasks and take no new ones."""

    async def action() -> Flash:
        if await state.client.drain_worker(worker_id):
            return Flash(f"draining worker {worker_id}")
        return Flash(f"no worker {worker_id} is connected", "error")

    return await _act(request, state, "/workers", action)


@router.post("/limits")
async def set_limits(request: Request, state: StateDep) -> RedirectResponse:
    """Change one task name's flow-control limits (the form's ``name``, ``rate_limit``, ``max_concurrency``, ``clear``)."""

    async def action() -> Flash:
        form = await read_form(request)  # already read (and cached) by the checks
        name = form.get("name", "").strip()
        if not name:
            return Flash("limits not changed: name a task", "error")
        try:
            change = LimitsChange.from_form(form)
        except BadLimits as exc:
            return Flash(f"limits of {name} not changed: {exc}", "error")
        return Flash(describe(await change.apply(state.client, name)))

    return await _act(request, state, "/", action)
