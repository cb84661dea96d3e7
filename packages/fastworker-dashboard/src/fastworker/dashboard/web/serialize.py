"""Turns client values (TaskInfo, pages, details, payloads of any codec type) into plain JSON data for the API."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any

from fastworker.client import TaskInfo
from fastworker.dashboard.source import TaskDetailView, TaskPageView


def jsonable(value: Any) -> Any:
    """``value`` as JSON-compatible data: enums become their values, dataclasses dicts, tuples lists.

    Types JSON lacks (bytes, Decimal, UUID, ...) become their ``repr`` so nothing is lost silently;
    datetimes become ISO strings and non-finite floats ``None``.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return repr(value)


def task_json(info: TaskInfo) -> dict[str, Any]:
    """One task as the API shows it (``id`` first, as the CLI's JSON)."""
    data: dict[str, Any] = jsonable(info)
    return data


def page_json(page: TaskPageView) -> dict[str, Any]:
    """A ``list_tasks`` page as the API shows it."""
    return {
        "tasks": [task_json(t) for t in page.tasks],
        "total": page.total,
        "offset": page.offset,
        "limit": page.limit,
    }


def detail_json(detail: TaskDetailView) -> dict[str, Any]:
    """A ``task_detail`` as the API shows it: the task's fields plus arguments and timings."""
    data = task_json(detail.info)
    data.update(
        args=jsonable(list(detail.args)),
        kwargs=jsonable(detail.kwargs),
        arguments_error=detail.arguments_error,
        eta=detail.eta,
        wait_time=detail.wait_time,
        run_time=detail.run_time,
    )
    return data
