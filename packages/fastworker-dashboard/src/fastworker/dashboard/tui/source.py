"""The slice of the client's admin API that fastworker-top reads and drives, as a Protocol.

The real ``fastworker.client.Client`` satisfies it; tests pass a duck-typed fake with canned data,
so the app never depends on how the client talks to the control plane.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from fastworker.client import CancelResult, EventBatch, Priority, TaskInfo, TaskState


class TaskPageLike(Protocol):
    """One page of ``list_tasks``: the tasks shown and how many matched in all."""

    @property
    def tasks(self) -> list[TaskInfo]:
        """The tasks on this page, newest first."""
        ...

    @property
    def total(self) -> int:
        """Matches in all, beyond this page too."""
        ...


class TaskDetailLike(Protocol):
    """Everything about one task, arguments included (``task_detail``)."""

    @property
    def info(self) -> TaskInfo:
        """State, result, error and timestamps."""
        ...

    @property
    def args(self) -> list[Any]:
        """Positional arguments as submitted."""
        ...

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments as submitted."""
        ...

    @property
    def arguments_error(self) -> str | None:
        """Why the arguments could not be decoded here, if they could not."""
        ...

    @property
    def eta(self) -> float | None:
        """When a scheduled task is due (Unix seconds), if it is scheduled."""
        ...

    @property
    def wait_time(self) -> float | None:
        """Seconds between queueing and starting, once started."""
        ...

    @property
    def run_time(self) -> float | None:
        """Seconds between starting and finishing, once finished."""
        ...


class TopClient(Protocol):
    """What fastworker-top needs from a client: reads, the event stream, and operator actions."""

    async def stats(self) -> dict[str, Any]:
        """Counters, throughput and the per-second history."""
        ...

    async def queues(self) -> list[dict[str, Any]]:
        """Depth, oldest age and paused flag per priority level."""
        ...

    async def workers(self) -> list[dict[str, Any]]:
        """The connected subworkers."""
        ...

    async def tasks(self) -> list[dict[str, Any]]:
        """The registered task names with their options."""
        ...

    async def events(
        self, after: int = 0, *, timeout: float = 5.0, task_ids: Sequence[str] = (), limit: int = 1000
    ) -> EventBatch:
        """Events after a sequence number (long poll)."""
        ...

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
    ) -> TaskPageLike:
        """A filtered page of tasks, newest first."""
        ...

    async def task_detail(self, task_id: str) -> TaskDetailLike:
        """One task with its arguments."""
        ...

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task."""
        ...

    async def retry(self, task_id: str) -> TaskState:
        """Re-queue a failed or cancelled task."""
        ...

    async def pause(self, priority: Priority | str) -> bool:
        """Stop dispatching one level."""
        ...

    async def resume(self, priority: Priority | str) -> bool:
        """Dispatch one level again."""
        ...

    async def aclose(self) -> None:
        """Release the connection."""
        ...
