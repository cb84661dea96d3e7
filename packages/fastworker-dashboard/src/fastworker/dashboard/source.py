"""The admin-API surface both frontends need, as Protocols: ``fastworker.client.Client`` fits them, and so do test fakes.

The web dashboard and ``fastworker-top`` read and act only through this; neither depends on how the
client talks to the control plane, and their tests pass canned data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from fastworker.client import CancelResult, EventBatch, Priority, TaskInfo, TaskState


class TaskPageView(Protocol):
    """One page of ``list_tasks``: the tasks shown and how many match in all."""

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
        """Most tasks on one page (the control plane may cap it)."""


class TaskDetailView(Protocol):
    """``task_detail``: a task's info plus its decoded arguments and timings."""

    @property
    def info(self) -> TaskInfo:
        """The task's current info."""

    @property
    def args(self) -> Sequence[Any]:
        """Decoded positional arguments."""

    @property
    def kwargs(self) -> dict[str, Any]:
        """Decoded keyword arguments."""

    @property
    def arguments_error(self) -> str | None:
        """Why the arguments could not be decoded, if they could not."""

    @property
    def eta(self) -> float | None:
        """When a scheduled task is due (Unix seconds)."""

    @property
    def wait_time(self) -> float | None:
        """Seconds between queueing and start, once started."""

    @property
    def run_time(self) -> float | None:
        """Seconds between start and finish, once finished."""


class AdminClient(Protocol):
    """The reads and actions the dashboard performs on a control plane (a subset of ``Client``)."""

    async def stats(self) -> dict[str, Any]:
        """Counters, throughput and the per-second history."""

    async def queues(self) -> list[dict[str, Any]]:
        """Depth, oldest age and paused flag per priority level."""

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
        """One task with its arguments and timings."""

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task."""

    async def retry(self, task_id: str) -> TaskState:
        """Re-queue a FAILURE or CANCELLED task."""

    async def purge(self, priority: Priority | str) -> int:
        """Cancel every waiting task of one level; returns how many."""

    async def pause(self, priority: Priority | str) -> bool:
        """Stop dispatching one level; True when it is now paused."""

    async def resume(self, priority: Priority | str) -> bool:
        """Dispatch one level again; False when it is now running."""

    async def drain_worker(self, worker_id: str, *, timeout: float = 30.0) -> bool:
        """Ask a worker to finish its tasks and take no more; False if there is no such worker."""

    async def aclose(self) -> None:
        """Close the connection."""
