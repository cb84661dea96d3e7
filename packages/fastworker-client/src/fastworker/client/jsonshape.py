"""One JSON shape per client object, shared by ``fastworker --json`` and the web dashboard's ``/api``.

Scripts read both; a task, a page of tasks, a task's detail, a workflow, the stats, queues,
workers, the flow-control limits and the outcome of an action look the same whichever they ask. Every function
returns plain JSON data (``json.dumps`` needs no ``default=``).

Values JSON lacks are written as text a script can use: bytes as base64, ``Decimal`` and ``UUID``
as their ``str``, dates and times as ISO 8601, ``timedelta`` as seconds, enums as their values,
tuples and sets as lists, non-finite floats as ``null``; anything else as its ``repr``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from fastworker.client.limits import TaskLimits
from fastworker.client.models import CancelResult, Progress, TaskInfo
from fastworker.client.workflows import WorkflowInfo

#: JSON data, as ``json.dumps`` takes it (every function here returns plain lists and dicts).
Json: TypeAlias = None | bool | int | float | str | Sequence["Json"] | Mapping[str, "Json"]
#: A JSON object.
JsonObject: TypeAlias = dict[str, Json]


class TaskPageLike(Protocol):
    """What :func:`page_json` reads: a ``list_tasks`` page (``TaskPage`` or a dashboard's view of one)."""

    @property
    def tasks(self) -> Sequence[TaskInfo]:
        """The tasks on this page, newest first."""

    @property
    def total(self) -> int:
        """How many tasks match the filters."""

    @property
    def offset(self) -> int:
        """Index of the first task shown."""

    @property
    def limit(self) -> int:
        """Most tasks on one page."""


class TaskDetailLike(Protocol):
    """What :func:`detail_json` reads: a ``task_detail`` (``TaskDetail`` or a dashboard's view of one)."""

    @property
    def info(self) -> TaskInfo:
        """The task's current info."""

    @property
    def args(self) -> Sequence[Any]:
        """Decoded positional arguments."""

    @property
    def kwargs(self) -> Mapping[str, Any]:
        """Decoded keyword arguments."""

    @property
    def arguments_error(self) -> str | None:
        """Why the arguments could not be decoded, if they could not."""

    @property
    def eta(self) -> float | None:
        """When a scheduled task is due (Unix seconds)."""

    @property
    def expires(self) -> float | None:
        """When an unstarted task is cancelled instead (Unix seconds)."""

    @property
    def wait_time(self) -> float | None:
        """Seconds between queueing and start, once started."""

    @property
    def run_time(self) -> float | None:
        """Seconds between start and finish, once finished."""


def jsonable(value: object) -> Json:
    """``value`` as JSON data, by the rules in this module's docstring (dataclasses become objects)."""
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return json_object(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return repr(value)


def json_object(value: Mapping[Any, object]) -> JsonObject:
    """A mapping as a JSON object; keys that are not strings become their JSON text (``1`` -> ``"1"``)."""
    return {_key(k): jsonable(v) for k, v in value.items()}


def _key(key: object) -> str:
    converted = jsonable(key)
    return converted if isinstance(converted, str) else json.dumps(converted)


def task_json(info: TaskInfo) -> JsonObject:
    """One task: the TaskInfo fields in order, ``id`` first (docs/reference.md), ``error`` as ``{type, message, traceback}``.

    ``progress`` has :func:`progress_json`'s shape; ``depends_on`` is a list of task ids and
    ``workflow_id`` null for a task outside a workflow.
    """
    return {
        f.name: progress_json(info.progress) if f.name == "progress" else jsonable(getattr(info, f.name))
        for f in dataclasses.fields(info)
    }


def progress_json(progress: Progress | None) -> JsonObject | None:
    """A task's progress: ``{"done", "total", "message"}`` (``total`` null when unknown), or null for none."""
    if progress is None:
        return None
    return {"done": progress.done, "total": progress.total, "message": progress.message}


def page_json(page: TaskPageLike) -> JsonObject:
    """A ``list_tasks`` page: ``{"tasks": [task, ...], "total", "offset", "limit"}``.

    A listed task has no ``result`` (nor ``result_error``) key: a listing carries no results
    (``null`` would read as a task that returned None); ``status`` or ``inspect`` show it.
    """
    return {
        "tasks": [_without_result(task_json(t)) for t in page.tasks],
        "total": page.total,
        "offset": page.offset,
        "limit": page.limit,
    }


def _without_result(data: JsonObject) -> JsonObject:
    data.pop("result", None)
    data.pop("result_error", None)
    return data


def detail_json(detail: TaskDetailLike) -> JsonObject:
    """A ``task_detail``: the task's fields, then ``args``, ``kwargs``, ``arguments_error``, ``eta``, ``expires``, ``wait_time``, ``run_time``."""
    data = task_json(detail.info)
    data.update(
        args=jsonable(list(detail.args)),
        kwargs=json_object(detail.kwargs),
        arguments_error=detail.arguments_error,
        eta=jsonable(detail.eta),
        expires=jsonable(detail.expires),
        wait_time=jsonable(detail.wait_time),
        run_time=jsonable(detail.run_time),
    )
    return data


def workflow_json(workflow: WorkflowInfo) -> JsonObject:
    """A workflow: ``{"id", "state", "created_at", "output_ids", "output_is_list", "steps", "forgotten"}``.

    ``steps`` lists its steps in step order, each in :func:`task_json`'s shape (with ``depends_on``);
    ``forgotten`` the ids of finished steps whose records left the result cache.
    """
    return {
        "id": workflow.id,
        "state": workflow.state.value,
        "created_at": jsonable(workflow.created_at),
        "output_ids": list(workflow.output_ids),
        "output_is_list": workflow.output_is_list,
        "steps": [task_json(step) for step in workflow.steps],
        "forgotten": list(workflow.forgotten),
    }


def workflow_cancel_json(workflow_id: str, cancelled: int) -> JsonObject:
    """A workflow cancel's outcome: ``{"id", "cancelled"}`` (how many waiting or running steps it cancelled)."""
    return {"id": workflow_id, "cancelled": cancelled}


def stats_json(stats: Mapping[str, object]) -> JsonObject:
    """``Client.stats()``: the counters and ``history``, as the client returns them."""
    return json_object(stats)


def queues_json(queues: Iterable[Mapping[str, object]]) -> list[JsonObject]:
    """``Client.queues()``: one object per named queue and priority level (see ``Client.queues``)."""
    return [json_object(q) for q in queues]


def workers_json(workers: Iterable[Mapping[str, object]]) -> list[JsonObject]:
    """``Client.workers()``: one object per connected subworker."""
    return [json_object(w) for w in workers]


def registered_tasks_json(tasks: Iterable[Mapping[str, object]]) -> list[JsonObject]:
    """``Client.tasks()``: one object per registered task name with its default options."""
    return [json_object(t) for t in tasks]


def task_limits_json(limits: TaskLimits) -> JsonObject:
    """One name's flow-control limits: the TaskLimits fields in order, ``name`` first.

    ``{"name", "rate_limit", "max_concurrency", "running", "waiting", "current_rate", "burst",
    "overridden"}``; a limit that is not set is null.
    """
    return {f.name: jsonable(getattr(limits, f.name)) for f in dataclasses.fields(limits)}


def limits_json(limits: Iterable[TaskLimits]) -> list[JsonObject]:
    """``Client.limits()``: one :func:`task_limits_json` object per limited task name, by name."""
    return [task_limits_json(entry) for entry in limits]


def cancel_json(info: TaskInfo, result: CancelResult) -> JsonObject:
    """A cancel's outcome: the task as it is after the cancel (:func:`task_json`, ``id`` first), then ``cancelled`` and ``previous_state``."""
    return {**task_json(info), "cancelled": result.cancelled, "previous_state": result.previous_state.value}


def purge_json(priority: str, purged: int) -> JsonObject:
    """A purge's outcome: ``{"priority", "purged"}`` (how many waiting tasks were cancelled)."""
    return {"priority": priority, "purged": purged}


def pause_json(priority: str, paused: bool) -> JsonObject:
    """A pause's or resume's outcome: ``{"priority", "paused"}`` (the level's state now)."""
    return {"priority": priority, "paused": paused}


def drain_json(worker_id: str, draining: bool) -> JsonObject:
    """A drain's outcome: ``{"worker_id", "draining"}`` (False: no such worker)."""
    return {"worker_id": worker_id, "draining": draining}
