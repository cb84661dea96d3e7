"""A fake admin client with canned data for fastworker-top's unit tests, and Pilot helpers.

``FakeClient`` duck-types the async admin API of ``fastworker.client.Client`` (the app's
``AdminClient`` protocol): it serves stats, queues, workers and a task list from memory, records
every operator action, and can play an unreachable control plane.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests import tui_keys (no package here)

from textual.message import Message
from textual.notifications import Notify
from tui_keys import wait_until

from fastworker.client import (
    CancelResult,
    ClientError,
    ControlPlaneUnavailable,
    EventBatch,
    Priority,
    TaskError,
    TaskEvent,
    TaskInfo,
    TaskLimits,
    TaskNotFound,
    TaskState,
    WorkflowInfo,
)

NOW = time.time()
TRACEBACK = (
    'Traceback (most recent call last):\n  File "tasks.py", line 3, in boom\nValueError: boom [red]not markup[/]\n'
)


def make_task(
    task_id: str,
    name: str,
    state: TaskState,
    *,
    priority: Priority = Priority.NORMAL,
    age: float = 10.0,
    worker: str | None = "w1",
    error: TaskError | None = None,
    result: Any = None,
    queue: str = "default",
) -> TaskInfo:
    started = NOW - age + 0.5 if state not in (TaskState.PENDING, TaskState.SCHEDULED) else None
    finished = NOW - age + 1.5 if state.is_final and started else None
    return TaskInfo(
        id=task_id,
        name=name,
        state=state,
        priority=priority,
        attempts=1 if started else 0,
        worker=worker if started else None,
        queued_at=NOW - age,
        started_at=started,
        finished_at=finished,
        result=result,
        error=error,
        queue=queue,
    )


def default_tasks() -> list[TaskInfo]:
    return [
        make_task("aaaa1111-0000-4000-8000-000000000001", "fwtop.add", TaskState.SUCCESS, age=50, result=3),
        make_task(
            "bbbb2222-0000-4000-8000-000000000002",
            "fwtop.fail",
            TaskState.FAILURE,
            age=40,
            priority=Priority.HIGH,
            error=TaskError("ValueError", "boom", TRACEBACK),
        ),
        make_task("cccc3333-0000-4000-8000-000000000003", "fwtop.sleep", TaskState.RUNNING, age=30),
        make_task(
            "dddd4444-0000-4000-8000-000000000004", "[bold]x[/]", TaskState.PENDING, age=20, priority=Priority.LOW
        ),
        make_task("eeee5555-0000-4000-8000-000000000005", "fwtop.sleep", TaskState.PENDING, age=10),
    ]


@dataclass
class FakePage:
    tasks: list[TaskInfo]
    total: int
    offset: int = 0
    limit: int = 50


@dataclass
class FakeDetail:
    info: TaskInfo
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    arguments_error: str | None = None
    eta: float | None = None
    expires: float | None = None

    @property
    def wait_time(self) -> float | None:
        if self.info.queued_at is None or self.info.started_at is None:
            return None
        return self.info.started_at - self.info.queued_at

    @property
    def run_time(self) -> float | None:
        if self.info.started_at is None or self.info.finished_at is None:
            return None
        return self.info.finished_at - self.info.started_at


class FakeClient:
    """In-memory stand-in for the admin API; ``unreachable = True`` makes every call fail."""

    def __init__(self, tasks: Sequence[TaskInfo] | None = None) -> None:
        self.task_list: list[TaskInfo] = list(default_tasks() if tasks is None else tasks)
        self.unreachable = False
        self.paused: dict[str, bool] = {p.value: False for p in Priority}
        #: Named queue -> how many serve it (subworkers, plus 1 for the control plane's slots).
        self.served: dict[str, int] = {"default": 1}
        self.workers_data: list[dict[str, Any]] = [
            {
                "worker_id": "w1",
                "host": "box",
                "pid": 4242,
                "capacity": 4,
                "in_flight": 1,
                "processed": 12,
                "failed": 1,
                "rss_bytes": 50 * 1024 * 1024,
                "last_heartbeat": NOW,
                "draining": False,
                "task_names": ["fwtop.add"],
            },
            {
                "worker_id": "[red]w2[/]",
                "host": "box",
                "pid": 4243,
                "capacity": 2,
                "in_flight": 2,
                "processed": 0,
                "failed": 0,
                "rss_bytes": 0,
                "last_heartbeat": NOW,
                "draining": True,
                "task_names": [],
            },
        ]
        self.history = [
            {"at": NOW - 120 + i, "succeeded": i % 7, "failed": 1 if i % 30 == 0 else 0} for i in range(120)
        ]
        #: What limits() lists (none by default: the limits panel stays hidden).
        self.limit_list: list[TaskLimits] = []
        self.cancelled: list[str] = []
        self.retried: list[str] = []
        self.pause_calls: list[tuple[str, str]] = []
        self.list_calls: list[dict[str, Any]] = []
        self.detail_calls: list[str] = []
        self.closed = False
        self.sequence = 1
        self.pending_events: list[TaskEvent] = []
        #: Ids still listed but unknown to cancel/retry/detail (evicted between listing and action).
        self.evicted: set[str] = set()
        #: Workflow id -> its steps' ids in step order (the steps are in task_list).
        self.workflow_steps: dict[str, list[str]] = {}
        self.workflow_calls: list[str] = []

    def _check(self) -> None:
        if self.unreachable:
            raise ControlPlaneUnavailable("no control plane announced itself on tcp://fake:1 within 3 s")

    def _find(self, task_id: str) -> TaskInfo:
        if task_id in self.evicted:
            raise TaskNotFound(task_id)
        for task in self.task_list:
            if task.id == task_id:
                return task
        raise TaskNotFound(task_id)

    def _replace(self, task_id: str, **changes: Any) -> TaskInfo:
        for index, task in enumerate(self.task_list):
            if task.id == task_id:
                self.task_list[index] = dataclasses.replace(task, **changes)
                return self.task_list[index]
        raise TaskNotFound(task_id)

    def add_task(self, task: TaskInfo) -> None:
        """A new task arrives, with an event announcing it."""
        self.task_list.append(task)
        self.sequence += 1
        self.pending_events.append(TaskEvent(self.sequence, "task_state", time.time(), task))

    async def stats(self) -> dict[str, Any]:
        self._check()
        return {
            "submitted": 1234,
            "succeeded": 1200,
            "failed": 7,
            "cancelled": 2,
            "retried": 1,
            "queued": 2,
            "scheduled": 0,
            "running": 1,
            "workers": len(self.workers_data),
            "uptime": 3725.0,
            "throughput": 12.5,
            "history": self.history,
        }

    async def queues(self) -> list[dict[str, Any]]:
        """Like the control plane: each queue tasks wait in or something serves, "default" first, then by name."""
        self._check()
        depth: dict[tuple[str, str], int] = {}
        for task in self.task_list:
            if task.state is TaskState.PENDING:
                key = (task.queue, task.priority.value)
                depth[key] = depth.get(key, 0) + 1
        names = {queue for queue, _ in depth} | set(self.served)
        return [
            {
                "queue": name,
                "priority": p.value,
                "depth": depth.get((name, p.value), 0),
                "oldest_age": 20.0,
                "paused": self.paused[p.value],
                "servers": self.served.get(name, 0),
            }
            for name in sorted(names, key=lambda name: (name != "default", name))
            for p in Priority
        ]

    async def workers(self) -> list[dict[str, Any]]:
        self._check()
        return [dict(w) for w in self.workers_data]

    async def limits(self) -> list[TaskLimits]:
        self._check()
        return list(self.limit_list)

    async def tasks(self) -> list[dict[str, Any]]:
        self._check()
        return [{"name": n} for n in ("fwtop.add", "fwtop.sleep", "fwtop.fail", "[bold]x[/]")]

    async def events(
        self, after: int = 0, *, timeout: float = 5.0, task_ids: Sequence[str] = (), limit: int = 1000
    ) -> EventBatch:
        self._check()
        if not self.pending_events:
            await asyncio.sleep(min(timeout, 0.05))
        events = [e for e in self.pending_events if e.sequence > after][:limit]
        self.pending_events = [e for e in self.pending_events if e not in events]
        return EventBatch(events, self.sequence, False)

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
    ) -> FakePage:
        self._check()
        wanted = {TaskState(str(s)) for s in states}
        self.list_calls.append({"states": wanted, "name": name, "search": search, "limit": limit})
        matches = [
            t
            for t in self.task_list
            if (not wanted or t.state in wanted)
            and (not name or t.name == name)
            and (not search or t.id.startswith(search.lower()) or search.lower() in t.name.lower())
        ]
        matches.sort(key=lambda t: -(t.queued_at or 0))
        return FakePage(matches[offset : offset + limit], len(matches), offset, limit)

    async def task_detail(self, task_id: str) -> FakeDetail:
        self._check()
        self.detail_calls.append(task_id)
        return FakeDetail(self._find(task_id), args=[1, "[b]two[/b]"], kwargs={"flag": True})

    async def cancel(self, task_id: str) -> CancelResult:
        self._check()
        task = self._find(task_id)
        self.cancelled.append(task_id)
        if task.state.is_final:
            return CancelResult(False, task.state)
        self._replace(task_id, state=TaskState.CANCELLED, finished_at=time.time())
        return CancelResult(True, task.state)

    async def retry(self, task_id: str) -> TaskState:
        self._check()
        task = self._find(task_id)
        self.retried.append(task_id)
        if task.state not in (TaskState.FAILURE, TaskState.CANCELLED):
            raise ClientError(f"task {task_id} is {task.state.value}: only FAILURE or CANCELLED tasks can be retried")
        self._replace(task_id, state=TaskState.PENDING, error=None, started_at=None, finished_at=None)
        return TaskState.PENDING

    async def pause(self, priority: Priority | str) -> bool:
        self._check()
        level = Priority.parse(priority).value
        self.pause_calls.append(("pause", level))
        self.paused[level] = True
        return True

    async def resume(self, priority: Priority | str) -> bool:
        self._check()
        level = Priority.parse(priority).value
        self.pause_calls.append(("resume", level))
        self.paused[level] = False
        return False

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        self._check()
        self.workflow_calls.append(workflow_id)
        if workflow_id not in self.workflow_steps:
            raise TaskNotFound(workflow_id)
        steps = [self._find(task_id) for task_id in self.workflow_steps[workflow_id]]
        final = all(step.state.is_final for step in steps)
        state = TaskState.SUCCESS if final else TaskState.RUNNING
        return WorkflowInfo(workflow_id, state, steps, NOW - 60, output_ids=(steps[-1].id,))

    async def cancel_workflow(self, workflow_id: str) -> int:
        self._check()
        waiting = [t for t in self.workflow_steps.get(workflow_id, []) if not self._find(t).state.is_final]
        for task_id in waiting:
            self._replace(task_id, state=TaskState.CANCELLED, finished_at=time.time())
        return len(waiting)

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


class Notes:
    """Collects the app's notifications (run_test(message_hook=notes)) for assertions."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def __call__(self, message: Message) -> None:
        if isinstance(message, Notify):
            self.messages.append((message.notification.severity, message.notification.message))

    def texts(self, severity: str | None = None) -> list[str]:
        return [text for sev, text in self.messages if severity is None or sev == severity]


@pytest.fixture
def notes() -> Notes:
    return Notes()


@pytest.fixture
def wait() -> Callable[..., Any]:
    """``await wait(pilot, predicate, what, timeout=5)``: bounded polling while the app runs."""
    return wait_until


@pytest.fixture
def new_task() -> Callable[..., TaskInfo]:
    """``new_task(task_id, name, state, ...)``: a TaskInfo with plausible timestamps."""
    return make_task
