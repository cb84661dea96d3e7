"""Which tasks the task list shows: the state filters cycled by ``f`` and the search box.

The control plane does the filtering: the search text matches a task-id prefix or a part of the
task name (case-insensitive), so one ``list_tasks`` request answers every query.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastworker.client import TaskInfo, TaskState
from fastworker.dashboard.source import AdminClient

#: Most rows the task list shows.
DEFAULT_LIMIT = 200


@dataclass(frozen=True)
class StateFilter:
    """A named set of states; an empty set means every state."""

    label: str
    states: tuple[TaskState, ...] = ()


#: The filters ``f`` cycles through, in order.
STATE_FILTERS: tuple[StateFilter, ...] = (
    StateFilter("all"),
    StateFilter("active", (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RUNNING, TaskState.RETRYING)),
    StateFilter("running", (TaskState.RUNNING,)),
    StateFilter("waiting", (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRYING)),
    StateFilter("failed", (TaskState.FAILURE,)),
    StateFilter("succeeded", (TaskState.SUCCESS,)),
    StateFilter("cancelled", (TaskState.CANCELLED,)),
)


@dataclass(frozen=True)
class TaskQuery:
    """What the task list asks for: states (empty = all), the search text, and a row limit."""

    states: tuple[TaskState, ...] = ()
    text: str = ""
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class TaskListing:
    """The rows to show (newest first) and how many tasks matched in all."""

    tasks: list[TaskInfo]
    total: int


async def fetch_tasks(client: AdminClient, query: TaskQuery) -> TaskListing:
    """Read the tasks matching the query: by state, and by id prefix or part of the name.

    Raises:
        FastworkerError: a request failed (ControlPlaneUnavailable when nothing answered).
    """
    page = await client.list_tasks(states=list(query.states), search=query.text.strip(), limit=query.limit)
    return TaskListing(list(page.tasks), page.total)
