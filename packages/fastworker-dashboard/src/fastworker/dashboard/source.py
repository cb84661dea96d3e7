"""The admin-API surface both frontends need, as Protocols: ``fastworker.client.Client`` fits them, and so do test fakes.

The web dashboard and ``fastworker-top`` read and act only through this; neither depends on how the
client talks to the control plane, and their tests pass canned data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from fastworker.client import (
    CancelResult,
    EventBatch,
    FastworkerError,
    Priority,
    TaskInfo,
    TaskLimits,
    TaskState,
    WorkflowInfo,
)
from fastworker.client.jsonshape import TaskDetailLike, TaskPageLike
from fastworker.client.limits import UNSET, Unset

#: One page of ``list_tasks`` and one ``task_detail``, as the dashboard reads them: the shapes the
#: client's JSON module already defines (``TaskPage``/``TaskDetail`` and test fakes fit them).
TaskPageView = TaskPageLike
TaskDetailView = TaskDetailLike


class AdminClient(Protocol):
    """The reads and actions the dashboard performs on a control plane (a subset of ``Client``)."""

    async def stats(self) -> dict[str, Any]:
        """Counters, throughput and the per-second history."""

    async def queues(self) -> list[dict[str, Any]]:
        """Depth, oldest age, paused flag and servers per named queue and priority level ("default" first)."""

    async def workers(self) -> list[dict[str, Any]]:
        """The connected subworkers."""

    async def tasks(self) -> list[dict[str, Any]]:
        """The registered task names with their options."""

    async def events(
        self, after: int = 0, *, timeout: float = 5.0, task_ids: Sequence[str] = (), limit: int = 1000
    ) -> EventBatch:
        """Long-poll the event stream after a sequence number."""

    async def list_tasks(
        self,
        *,
        states: Iterable[TaskState | str] = (),
        name: str = "",
        priority: Priority | str | None = None,
        worker: str = "",
        search: str = "",
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPageView:
        """A filtered page of live and recently finished tasks, newest first."""

    async def task_detail(self, task_id: str) -> TaskDetailView:
        """One task with its arguments and timings (a result too large to fit with them left out)."""

    async def status(self, task_id: str) -> TaskInfo:
        """One task's state, with its result."""

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task."""

    async def retry(self, task_id: str) -> TaskState:
        """Re-queue a FAILURE or CANCELLED task."""

    async def purge(self, priority: Priority | str) -> int:
        """Cancel every waiting task of one level, in every queue; returns how many."""

    async def pause(self, priority: Priority | str) -> bool:
        """Stop dispatching one level, in every queue; True when it is now paused."""

    async def resume(self, priority: Priority | str) -> bool:
        """Dispatch one level again, in every queue; False when it is now running."""

    async def drain_worker(self, worker_id: str, *, timeout: float = 30.0) -> bool:
        """Ask a worker to finish its tasks and take no more; False if there is no such worker."""

    async def limits(self) -> list[TaskLimits]:
        """The task names with flow-control limits, what the limits hold back and the current rate."""

    async def set_limits(
        self,
        name: str,
        *,
        rate_limit: str | None | Unset = UNSET,
        max_concurrency: int | None | Unset = UNSET,
        clear: bool = False,
    ) -> TaskLimits:
        """Change a name's limits at run time (None: no limit; UNSET: keep); returns them as they now hold."""

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        """A workflow's state and its steps' (TaskNotFound when the control plane does not know it)."""

    async def cancel_workflow(self, workflow_id: str) -> int:
        """Cancel a workflow's waiting and running steps; returns how many were cancelled."""

    async def aclose(self) -> None:
        """Close the connection."""


async def read_limits(client: AdminClient) -> tuple[list[TaskLimits], str | None]:
    """The limited task names, or none and why they could not be read.

    The limits are a side panel: a control plane that cannot answer them (an older version, or a
    failing request) must not take the counters, queues and workers down with it.
    """
    try:
        return await client.limits(), None
    except FastworkerError as exc:
        return [], str(exc) or type(exc).__name__
