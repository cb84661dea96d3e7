"""``/api/...``: the same data as the pages as JSON, plus the actions (honouring read-only and ``X-FastWorker-Secret``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from fastworker.client import Priority, TaskNotFound, UnknownTask
from fastworker.dashboard.web.deps import ClientDep, ConfigDep, FiltersDep, StateDep, ThrottleDep
from fastworker.dashboard.web.errors import WorkflowNotFound
from fastworker.dashboard.web.forms import MAX_FORM_BYTES
from fastworker.dashboard.web.limits import BadLimits, LimitsChange
from fastworker.dashboard.web.query import BadQuery
from fastworker.dashboard.web.security import authorize_api_action
from fastworker.dashboard.web.serialize import (
    cancel_json,
    detail_json,
    drain_json,
    limits_json,
    overview_json,
    page_json,
    pause_json,
    purge_json,
    queues_json,
    registered_tasks_json,
    stats_json,
    task_json,
    task_limits_json,
    workers_json,
    workflow_cancel_json,
    workflow_json,
)

router = APIRouter(prefix="/api")


def _priority(value: str) -> Priority:
    try:
        return Priority.parse(value)
    except ValueError as exc:
        raise BadQuery(str(exc)) from None


@router.get("/overview")
async def api_overview(client: ClientDep) -> dict[str, Any]:
    """Stats, queues and workers in one answer."""
    stats, queues, workers = await asyncio.gather(client.stats(), client.queues(), client.workers())
    return overview_json(stats, queues, workers)


@router.get("/stats")
async def api_stats(client: ClientDep) -> dict[str, Any]:
    """The control plane's counters, throughput and per-second history."""
    return stats_json(await client.stats())


@router.get("/queues")
async def api_queues(client: ClientDep) -> list[dict[str, Any]]:
    """Depth, oldest age, paused flag and servers per named queue and priority level (as ``Client.queues()``)."""
    return queues_json(await client.queues())


@router.get("/workers")
async def api_workers(client: ClientDep) -> list[dict[str, Any]]:
    """The connected subworkers."""
    return workers_json(await client.workers())


@router.get("/registered-tasks")
async def api_registered_tasks(client: ClientDep) -> list[dict[str, Any]]:
    """The registered task names with their default options."""
    return registered_tasks_json(await client.tasks())


@router.get("/tasks")
async def api_tasks(client: ClientDep, filters: FiltersDep) -> dict[str, Any]:
    """Tasks matching the filters (same query parameters as ``/tasks``), newest first."""
    return page_json(await client.list_tasks(**filters.client_kwargs()))


@router.get("/tasks/{task_id}")
async def api_task(client: ClientDep, task_id: str) -> dict[str, Any]:
    """One task with its arguments and timings (404 when unknown)."""
    return detail_json(await client.task_detail(task_id))


@router.post("/tasks/{task_id}/cancel")
async def api_cancel(
    request: Request, client: ClientDep, config: ConfigDep, throttle: ThrottleDep, dashboard: StateDep, task_id: str
) -> dict[str, Any]:
    """Cancel a task: the task as it is after the cancel, with ``cancelled`` and ``previous_state`` (``cancel_json``)."""
    authorize_api_action(config, throttle, request)
    result = await client.cancel(task_id)
    dashboard.feed.forget_task(task_id)
    return cancel_json(await client.status(task_id), result)


@router.post("/tasks/{task_id}/retry")
async def api_retry(
    request: Request, client: ClientDep, config: ConfigDep, throttle: ThrottleDep, dashboard: StateDep, task_id: str
) -> dict[str, Any]:
    """Re-queue a FAILURE or CANCELLED task: the task as it is now, as ``fastworker retry --json`` prints it (409 for other states)."""
    authorize_api_action(config, throttle, request)
    await client.retry(task_id)
    dashboard.feed.forget_task(task_id)
    return task_json(await client.status(task_id))


@router.get("/workflows/{workflow_id}")
async def api_workflow(client: ClientDep, workflow_id: str) -> dict[str, Any]:
    """A workflow with its steps in step order (``fastworker workflow --json``'s shape; 404 when unknown)."""
    try:
        return workflow_json(await client.workflow(workflow_id))
    except TaskNotFound:
        raise WorkflowNotFound(workflow_id) from None


@router.post("/workflows/{workflow_id}/cancel")
async def api_cancel_workflow(
    request: Request,
    client: ClientDep,
    config: ConfigDep,
    throttle: ThrottleDep,
    dashboard: StateDep,
    workflow_id: str,
) -> dict[str, Any]:
    """Cancel a workflow's waiting and running steps: ``{"id", "cancelled"}`` (404 when unknown)."""
    authorize_api_action(config, throttle, request)
    try:
        cancelled = await client.cancel_workflow(workflow_id)
    except TaskNotFound:
        raise WorkflowNotFound(workflow_id) from None
    dashboard.feed.forget_task(None)
    return workflow_cancel_json(workflow_id, cancelled)


@router.post("/queues/{priority}/purge")
async def api_purge(
    request: Request, client: ClientDep, config: ConfigDep, throttle: ThrottleDep, dashboard: StateDep, priority: str
) -> dict[str, Any]:
    """Cancel every waiting task of one level, in every queue: ``{"purged": count}``."""
    authorize_api_action(config, throttle, request)
    level = _priority(priority)
    purged = await client.purge(level)
    dashboard.feed.forget_task(None)
    return purge_json(level.value, purged)


@router.post("/queues/{priority}/pause")
async def api_pause(
    request: Request, client: ClientDep, config: ConfigDep, throttle: ThrottleDep, priority: str
) -> dict[str, Any]:
    """Stop dispatching one level, in every queue: ``{"paused": true}``."""
    authorize_api_action(config, throttle, request)
    level = _priority(priority)
    return pause_json(level.value, await client.pause(level))


@router.post("/queues/{priority}/resume")
async def api_resume(
    request: Request, client: ClientDep, config: ConfigDep, throttle: ThrottleDep, priority: str
) -> dict[str, Any]:
    """Dispatch one level again, in every queue: ``{"paused": false}``."""
    authorize_api_action(config, throttle, request)
    level = _priority(priority)
    return pause_json(level.value, await client.resume(level))


@router.post("/workers/{worker_id}/drain")
async def api_drain(
    request: Request, client: ClientDep, config: ConfigDep, throttle: ThrottleDep, worker_id: str
) -> dict[str, Any]:
    """Ask a worker to drain: ``{"draining": bool}`` (404 when no such worker)."""
    authorize_api_action(config, throttle, request)
    if not await client.drain_worker(worker_id):
        raise HTTPException(status_code=404, detail=f"no worker {worker_id} is connected")
    return drain_json(worker_id, True)


@router.get("/limits")
async def api_limits(client: ClientDep) -> list[dict[str, Any]]:
    """The task names with flow-control limits (``fastworker limits --json``'s shape)."""
    return limits_json(await client.limits())


@router.post("/limits/{name:path}")
async def api_set_limits(
    request: Request, client: ClientDep, config: ConfigDep, throttle: ThrottleDep, name: str
) -> dict[str, Any]:
    """Change one name's limits from ``{"rate_limit", "max_concurrency", "clear"}`` (absent: keep; null: no limit).

    Answers the limits as they now hold (``fastworker limit --json``'s shape); 404 when nobody defines the name.
    """
    authorize_api_action(config, throttle, request)
    change = LimitsChange.from_json(await _json_body(request))
    try:
        now = await change.apply(client, name)
    except UnknownTask as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return task_limits_json(now)


async def _json_body(request: Request) -> object:
    """A small JSON request body (an empty one is ``{}``).

    Raises:
        BadLimits: too large, not sent as ``application/json``, or not JSON.
    """
    body = await request.body()
    if not body:
        return {}
    if len(body) > MAX_FORM_BYTES:
        raise BadLimits("request body too large")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadLimits(
            f"expected a JSON body (Content-Type: application/json), not {content_type or 'no content type'}"
        )
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadLimits(f"the body is not JSON: {exc}") from None
