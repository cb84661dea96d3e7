"""What each page shows: its live panels and the template context built from control-plane data.

Pages and the live stream share these builders, so a pushed fragment is byte-for-byte what a
reload would render.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request

from fastworker.client import Priority, TaskInfo, TaskLimits, TaskState, WorkflowInfo
from fastworker.client.workflowtree import state_counts, workflow_tree
from fastworker.dashboard.queues import group_queues, level_depths
from fastworker.dashboard.source import AdminClient, TaskDetailView, TaskPageView, read_limits
from fastworker.dashboard.version import __version__
from fastworker.dashboard.web.config import DashboardConfig
from fastworker.dashboard.web.query import LIMIT_CHOICES, TaskFilters, choices, page_links
from fastworker.dashboard.web.security import is_logged_in
from fastworker.dashboard.web.sparkline import build_sparkline
from fastworker.protocol.queues import DEFAULT_QUEUE

#: Tasks in the overview's recent list.
RECENT_LIMIT = 12

#: Panel element id -> the partial template that renders its content, per page.
OVERVIEW_PANELS = {
    "panel-counters": "partials/counters.html",
    "panel-throughput": "partials/throughput.html",
    "panel-queues": "partials/queues.html",
    "panel-limits": "partials/limits.html",
    "panel-workers": "partials/workers_table.html",
    "panel-recent": "partials/recent.html",
}
TASKS_PANELS = {"panel-tasks": "partials/tasks_table.html"}
TASK_PANELS = {"panel-task": "partials/task_detail.html"}
WORKFLOW_PANELS = {"panel-workflow": "partials/workflow_detail.html"}
WORKERS_PANELS = {"panel-workers": "partials/workers_table.html"}
#: Every page has the connection status banner.
STATUS_PANEL = ("panel-status", "partials/status.html")


@dataclass(frozen=True)
class Ui:
    """Per-request facts every template needs: what may be done, and where actions return to."""

    csrf: str
    read_only: bool
    secret_required: bool
    logged_in: bool
    next_url: str
    control_plane: str
    version: str = __version__

    @property
    def actions(self) -> bool:
        """True when action buttons are rendered (not read-only)."""
        return not self.read_only


def make_ui(config: DashboardConfig, request: Request, next_url: str) -> Ui:
    """The Ui for one request; ``next_url`` is the page actions redirect back to."""
    return Ui(
        csrf=config.csrf_token,
        read_only=config.read_only,
        secret_required=config.secret_required,
        logged_in=is_logged_in(config, request),
        next_url=next_url,
        control_plane=config.control_plane,
    )


def page_context(
    config: DashboardConfig, request: Request, *, page_name: str, next_url: str, stream_url: str, title: str
) -> dict[str, Any]:
    """What the page layout needs: the Ui, which nav entry is current, the live stream's URL and the title."""
    return {
        "ui": make_ui(config, request, next_url),
        "page_name": page_name,
        "stream_url": stream_url,
        "title": title,
    }


def object_page_context(
    config: DashboardConfig, request: Request, kind: str, object_id: str, title: str
) -> dict[str, Any]:
    """The layout of one task's or workflow's page (``kind``: ``"task"`` or ``"workflow"``), live on its own stream view."""
    quoted = quote(object_id, safe="")
    return page_context(
        config,
        request,
        page_name="tasks",
        next_url=f"/{kind}s/{quoted}",
        stream_url=f"/stream?view={kind}&id={quoted}",
        title=title,
    )


def stats_context(
    stats: Mapping[str, Any],
    queues: Sequence[Mapping[str, Any]],
    workers: Sequence[Mapping[str, Any]],
    limits: Iterable[TaskLimits] = (),
    limits_error: str | None = None,
) -> dict[str, Any]:
    """Counters, sparkline, queues, workers and the limited task names (or why they are missing) as the templates read them.

    The queue panel groups the levels per named queue; it shows the groups' headings only when
    there is more than the "default" queue, or a queue nobody serves, so that a single-queue
    deployment sees the same four rows as before named queues.
    """
    hits = int(stats.get("cache_hits", 0) or 0)
    misses = int(stats.get("cache_misses", 0) or 0)
    lookups = hits + misses
    groups = group_queues(queues)
    return {
        "stats": stats,
        "queues": list(queues),
        "queue_groups": groups,
        "queue_headings": len(groups) > 1 or any(g.name != DEFAULT_QUEUE or g.servers == 0 for g in groups),
        "level_depths": level_depths(queues),
        "workers": sorted(workers, key=lambda w: str(w.get("worker_id", ""))),
        "limits": sorted(limits, key=lambda entry: entry.name),
        "limits_error": limits_error,
        "hit_rate": (100.0 * hits / lookups) if lookups else None,
        "spark": build_sparkline(stats.get("history")),
        "now": time.time(),
    }


async def overview_context(client: AdminClient) -> dict[str, Any]:
    """Everything ``/`` shows, read fresh from the control plane (with the task names the limits form suggests)."""
    stats, queues, workers, recent, (limits, limits_error), registered = await asyncio.gather(
        client.stats(),
        client.queues(),
        client.workers(),
        client.list_tasks(limit=RECENT_LIMIT),
        read_limits(client),
        client.tasks(),
    )
    names = choices([*(str(t.get("name", "")) for t in registered), *(entry.name for entry in limits)])
    return {
        **stats_context(stats, queues, workers, limits, limits_error),
        "recent": list(recent.tasks),
        "limit_names": names,
    }


def tasks_context(filters: TaskFilters, page: TaskPageView) -> dict[str, Any]:
    """The ``/tasks`` table: its rows, the filters that made it and the pagination links."""
    return {
        "filters": filters,
        "page": page,
        "tasks": list(page.tasks),
        "links": page_links(filters, page.total),
        "first": page.offset + 1 if page.tasks else 0,
        "last": page.offset + len(page.tasks),
        "now": time.time(),
    }


def tasks_form_context(
    filters: TaskFilters, registered: Sequence[Mapping[str, Any]], workers: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The filter form's options: states, priorities, page sizes, and name / worker suggestions."""
    return {
        "all_states": list(TaskState),
        "all_priorities": list(Priority),
        "limit_choices": sorted({*LIMIT_CHOICES, filters.limit}),
        "task_names": choices([str(t.get("name", "")) for t in registered]),
        "worker_ids": choices([str(w.get("worker_id", "")) for w in workers]),
    }


def detail_context(detail: TaskDetailView, queues: Iterable[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The ``/tasks/{id}`` panel; with ``queues``, a waiting task whose queue nobody serves says so."""
    return {
        "detail": detail,
        "task": detail.info,
        "queue_unserved": queues is not None and queue_unserved(detail.info, queues),
        "now": time.time(),
    }


def queue_unserved(info: TaskInfo, queues: Iterable[Mapping[str, Any]]) -> bool:
    """True when ``info`` waits to start in a queue that ``queues`` says nothing serves."""
    if info.state is not TaskState.PENDING:
        return False
    return any(g.name == info.queue and g.servers == 0 for g in group_queues(queues))


def workflow_context(workflow: WorkflowInfo) -> dict[str, Any]:
    """The ``/workflows/{id}`` panel: the workflow, its steps as an indented list, and how many are in each state."""
    return {
        "workflow": workflow,
        "rows": workflow_tree(workflow.steps),
        "counts": state_counts(workflow.steps),
        "now": time.time(),
    }


async def workers_context(client: AdminClient) -> dict[str, Any]:
    """The ``/workers`` table, read fresh from the control plane."""
    workers = await client.workers()
    return {"workers": sorted(workers, key=lambda w: str(w.get("worker_id", ""))), "now": time.time()}
