"""A fake admin client, duck-typed like fastworker.client.Client, for the web dashboard's unit tests (imported via conftest)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from fastworker.client import (
    CancelResult,
    ClientError,
    ControlPlaneUnavailable,
    EventBatch,
    Priority,
    TaskDetail,
    TaskError,
    TaskInfo,
    TaskLimits,
    TaskNotFound,
    TaskPage,
    TaskState,
    UnknownTask,
    WorkflowInfo,
)
from fastworker.client.limits import Rate, Unset

NOW = 1_700_000_000.0


def make_task(task_id: str, name: str = "app.add", state: TaskState = TaskState.SUCCESS, **changes: Any) -> TaskInfo:
    info = TaskInfo(
        id=task_id,
        name=name,
        state=state,
        priority=Priority.NORMAL,
        attempts=1,
        worker="w1",
        queued_at=NOW,
        started_at=NOW + 0.5,
        finished_at=NOW + 1.25 if state.is_final else None,
        result=3 if state is TaskState.SUCCESS else None,
    )
    return replace(info, **changes)


class FakeAdminClient:
    """Canned control-plane data with working actions; ``calls`` counts every method call."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.unavailable = False
        self.closed = False
        self.tasks_by_id: dict[str, TaskInfo] = {}
        self.arguments: dict[str, tuple[list[Any], dict[str, Any]]] = {}
        #: A task's ``eta`` and ``expires`` as its detail gives them, by id (None: it has none).
        self.deadlines: dict[str, tuple[float | None, float | None]] = {}
        #: The "default" queue's levels by priority (served by the control plane's own slots).
        self.queue_state = {
            p.value: {
                "queue": "default",
                "priority": p.value,
                "depth": 0,
                "oldest_age": 0.0,
                "paused": False,
                "servers": 1,
            }
            for p in Priority
        }
        #: Other named queues' entries, listed after "default" (their paused flags follow queue_state's).
        self.other_queues: list[dict[str, Any]] = []
        self.worker_list: list[dict[str, Any]] = [
            {
                "worker_id": "w1",
                "host": "box",
                "pid": 4242,
                "capacity": 4,
                "in_flight": 1,
                "processed": 10,
                "failed": 2,
                "rss_bytes": 50 * 1024 * 1024,
                "last_heartbeat": time.time() - 0.5,
                "draining": False,
                "task_names": ["app.add"],
                "queues": ["default", "reports"],
            }
        ]
        self.stats_data: dict[str, Any] = {
            "submitted": 12,
            "succeeded": 9,
            "failed": 2,
            "cancelled": 1,
            "retried": 0,
            "queued": 0,
            "scheduled": 0,
            "running": 0,
            "workers": 1,
            "cache_size": 12,
            "cache_hits": 3,
            "cache_misses": 1,
            "uptime": 3725.0,
            "throughput": 1.5,
            "rejected_frames": 0,
            "executed_locally": 0,
            "history": [{"at": NOW + i, "succeeded": i % 3, "failed": 1 if i == 5 else 0} for i in range(120)],
        }
        #: The limited names as limits() lists them; app.add and app.slow are the defined task names.
        self.limit_state: dict[str, TaskLimits] = {
            "app.slow": TaskLimits("app.slow", "10/s", 2, running=2, waiting=3, current_rate=9.0, burst=1)
        }
        self.defined_limits = {"app.add": TaskLimits("app.add", None, None), "app.slow": self.limit_state["app.slow"]}
        self.limit_calls: list[tuple[str, dict[str, Any]]] = []
        #: Workflow id -> its steps' ids in step order (the steps themselves are in tasks_by_id).
        self.workflow_steps: dict[str, list[str]] = {}
        self.sequence = 0
        self._event = asyncio.Event()
        self.events_in_flight = 0
        self.max_events_in_flight = 0

    # ---------------------------------------------------------------------------- test helpers

    def add(
        self,
        info: TaskInfo,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        eta: float | None = None,
        expires: float | None = None,
    ) -> TaskInfo:
        """Add or replace a task and publish a task_state event."""
        self.tasks_by_id[info.id] = info
        self.arguments[info.id] = (list(args), dict(kwargs or {}))
        self.deadlines[info.id] = (eta, expires)
        self.sequence += 1
        self._event.set()
        return info

    def add_workflow(self, workflow_id: str, steps: Sequence[TaskInfo]) -> list[TaskInfo]:
        """Add a workflow's steps (marked with its id) in step order."""
        self.workflow_steps[workflow_id] = [step.id for step in steps]
        return [self.add(replace(step, workflow_id=workflow_id)) for step in steps]

    def _check(self, method: str) -> None:
        self.calls[method] += 1
        if self.unavailable:
            raise ControlPlaneUnavailable("no control plane answered (fake)")

    # ---------------------------------------------------------------------------------- reads

    async def stats(self) -> dict[str, Any]:
        self._check("stats")
        return dict(self.stats_data)

    async def queues(self) -> list[dict[str, Any]]:
        self._check("queues")
        others = [{**q, "paused": self.queue_state[q["priority"]]["paused"]} for q in self.other_queues]
        return [dict(q) for q in self.queue_state.values()] + others

    async def workers(self) -> list[dict[str, Any]]:
        self._check("workers")
        return [dict(w) for w in self.worker_list]

    async def tasks(self) -> list[dict[str, Any]]:
        self._check("tasks")
        return [{"name": "app.add", "priority": "normal", "retries": 0}]

    async def events(
        self, after: int = 0, *, timeout: float = 5.0, task_ids: Sequence[str] = (), limit: int = 1000
    ) -> EventBatch:
        self._check("events")
        self.events_in_flight += 1
        self.max_events_in_flight = max(self.max_events_in_flight, self.events_in_flight)
        try:
            if self.sequence <= after and timeout > 0:
                self._event.clear()
                try:
                    async with asyncio.timeout(timeout):
                        await self._event.wait()
                except TimeoutError:
                    pass
            fresh = self.sequence > after
            events = [] if not fresh else [_task_event(self.sequence)]
            return EventBatch(events=events, last_sequence=self.sequence, gap=False)
        finally:
            self.events_in_flight -= 1

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
    ) -> TaskPage:
        self._check("list_tasks")
        wanted = {TaskState(str(s).upper()) for s in states}
        level = Priority.parse(priority) if priority else None
        matches = [
            t
            for t in sorted(self.tasks_by_id.values(), key=lambda t: t.queued_at or 0, reverse=True)
            if (not wanted or t.state in wanted)
            and (not name or t.name == name)
            and (level is None or t.priority is level)
            and (not worker or t.worker == worker)
            and t.id.startswith(search)
        ]
        return TaskPage(tasks=matches[offset : offset + limit], total=len(matches), offset=offset, limit=limit)

    async def status(self, task_id: str) -> TaskInfo:
        self._check("status")
        return self._get(task_id)

    async def task_detail(self, task_id: str) -> TaskDetail:
        self._check("task_detail")
        if task_id not in self.tasks_by_id:
            raise TaskNotFound(task_id)
        args, kwargs = self.arguments.get(task_id, ([], {}))
        eta, expires = self.deadlines.get(task_id, (None, None))
        return TaskDetail(info=self.tasks_by_id[task_id], args=args, kwargs=kwargs, eta=eta, expires=expires)

    # ------------------------------------------------------------------------------- actions

    def _get(self, task_id: str) -> TaskInfo:
        if task_id not in self.tasks_by_id:
            raise TaskNotFound(task_id)
        return self.tasks_by_id[task_id]

    async def cancel(self, task_id: str) -> CancelResult:
        self._check("cancel")
        info = self._get(task_id)
        if info.state.is_final:
            return CancelResult(cancelled=False, previous_state=info.state)
        self.add(replace(info, state=TaskState.CANCELLED, finished_at=time.time()))
        return CancelResult(cancelled=True, previous_state=info.state)

    async def retry(self, task_id: str) -> TaskState:
        self._check("retry")
        info = self._get(task_id)
        if info.state not in (TaskState.FAILURE, TaskState.CANCELLED):
            raise ClientError(f"task {task_id} is {info.state.value}: only FAILURE or CANCELLED tasks can be retried")
        self.add(replace(info, state=TaskState.PENDING, error=None, started_at=None, finished_at=None))
        return TaskState.PENDING

    async def purge(self, priority: Priority | str) -> int:
        self._check("purge")
        level = Priority.parse(priority).value
        count = 0
        for queue in [self.queue_state[level], *(q for q in self.other_queues if q["priority"] == level)]:
            count, queue["depth"] = count + queue["depth"], 0
        return int(count)

    async def pause(self, priority: Priority | str) -> bool:
        self._check("pause")
        self.queue_state[Priority.parse(priority).value]["paused"] = True
        return True

    async def resume(self, priority: Priority | str) -> bool:
        self._check("resume")
        self.queue_state[Priority.parse(priority).value]["paused"] = False
        return False

    async def drain_worker(self, worker_id: str, *, timeout: float = 30.0) -> bool:
        self._check("drain_worker")
        for worker in self.worker_list:
            if worker["worker_id"] == worker_id:
                worker["draining"] = True
                return True
        return False

    async def limits(self) -> list[TaskLimits]:
        self._check("limits")
        return [self.limit_state[name] for name in sorted(self.limit_state)]

    async def set_limits(
        self,
        name: str,
        *,
        rate_limit: str | None | Unset = Unset.UNSET,
        max_concurrency: int | None | Unset = Unset.UNSET,
        clear: bool = False,
    ) -> TaskLimits:
        """Like the control plane: clear goes back to the definition, then the given limits override it."""
        self._check("set_limits")
        self.limit_calls.append((name, {"rate_limit": rate_limit, "max_concurrency": max_concurrency, "clear": clear}))
        if name not in self.defined_limits:
            raise UnknownTask(f"unknown task {name!r}")
        current = self.defined_limits[name] if clear else self.limit_state.get(name, self.defined_limits[name])
        if isinstance(rate_limit, Unset) and isinstance(max_concurrency, Unset):
            now = current
        else:
            rate = current.rate_limit if isinstance(rate_limit, Unset) else rate_limit
            bound = current.max_concurrency if isinstance(max_concurrency, Unset) else max_concurrency
            burst = Rate.parse(rate).burst if rate else 0
            now = replace(current, rate_limit=rate, max_concurrency=bound, burst=burst, overridden=True)
        if now.rate_limit or now.max_concurrency:
            self.limit_state[name] = now
        else:
            self.limit_state.pop(name, None)
        return now

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        self._check("workflow")
        if workflow_id not in self.workflow_steps:
            raise TaskNotFound(workflow_id)
        steps = [self.tasks_by_id[task_id] for task_id in self.workflow_steps[workflow_id]]
        return WorkflowInfo(workflow_id, _workflow_state(steps), steps, NOW, output_ids=(steps[-1].id,))

    async def cancel_workflow(self, workflow_id: str) -> int:
        self._check("cancel_workflow")
        if workflow_id not in self.workflow_steps:
            raise TaskNotFound(workflow_id)
        cancelled = 0
        for task_id in reversed(self.workflow_steps[workflow_id]):
            info = self.tasks_by_id[task_id]
            if not info.state.is_final:
                self.add(replace(info, state=TaskState.CANCELLED, finished_at=time.time()))
                cancelled += 1
        return cancelled

    async def aclose(self) -> None:
        self.closed = True


def _workflow_state(steps: Sequence[TaskInfo]) -> TaskState:
    """PENDING until a step starts, RUNNING until every one is final, then FAILURE, CANCELLED or SUCCESS."""
    states = {step.state for step in steps}
    if all(state.is_final for state in states):
        for final in (TaskState.FAILURE, TaskState.CANCELLED):
            if final in states:
                return final
        return TaskState.SUCCESS
    if states <= {TaskState.PENDING, TaskState.SCHEDULED}:
        return TaskState.PENDING
    return TaskState.RUNNING


def _task_event(sequence: int) -> Any:
    from fastworker.client import TaskEvent

    return TaskEvent(sequence=sequence, kind="task_state", at=time.time())


def queue_levels(queue: str, servers: int, **depths: int) -> list[dict[str, Any]]:
    """One named queue's four entries as ``Client.queues()`` lists them, with the given depth per level."""
    return [
        {
            "queue": queue,
            "priority": p.value,
            "depth": depths.get(p.value, 0),
            "oldest_age": 7.5 if depths.get(p.value) else 0.0,
            "paused": False,
            "servers": servers,
        }
        for p in Priority
    ]


def failing_task() -> TaskInfo:
    return make_task(
        "f" * 8 + "-0000-4000-8000-000000000001",
        name="app.fail",
        state=TaskState.FAILURE,
        error=TaskError(
            "RuntimeError", "boom", 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: boom'
        ),
    )


#: What a same-origin browser form post sends along.
SAME_ORIGIN = {"origin": "http://testserver"}


def csrf_token(client: Any) -> str:
    """The per-instance form token of the app behind a client made by the ``make_client`` fixture."""
    return str(client.app.state.dashboard.config.csrf_token)


def log_in(client: Any) -> Any:
    """Give a client of the ``make_client`` fixture the session cookie a successful /login sets; returns it."""
    from fastworker.dashboard.web.security import SESSION_COOKIE

    config = client.app.state.dashboard.config
    client.cookies.set(SESSION_COOKIE, config.sessions.open(config.session_key()))
    return client
