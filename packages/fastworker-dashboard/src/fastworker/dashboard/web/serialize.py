"""The ``/api`` JSON: the client's shapes (``fastworker.client.jsonshape``, shared with ``fastworker --json``) plus the dashboard's own.

One shape per object, so that a script reads a task the same from the CLI and from the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fastworker.client.jsonshape import (
    JsonObject,
    cancel_json,
    detail_json,
    drain_json,
    jsonable,
    limits_json,
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

__all__ = [
    "cancel_json",
    "detail_json",
    "drain_json",
    "jsonable",
    "limits_json",
    "overview_json",
    "page_json",
    "pause_json",
    "purge_json",
    "queues_json",
    "registered_tasks_json",
    "stats_json",
    "task_json",
    "task_limits_json",
    "workers_json",
    "workflow_cancel_json",
    "workflow_json",
]


def overview_json(
    stats: Mapping[str, object], queues: Iterable[Mapping[str, object]], workers: Iterable[Mapping[str, object]]
) -> JsonObject:
    """``/api/overview``: stats, queues and workers in one object (the overview page's data)."""
    return {"stats": stats_json(stats), "queues": queues_json(queues), "workers": workers_json(workers)}
