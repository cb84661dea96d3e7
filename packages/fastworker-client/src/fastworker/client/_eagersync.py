"""The blocking face of an in-process ``EagerClient``: ``add.delay_sync(...)`` in eager mode.

Shared by Django's eager mode (``fastworker.client.django``) and the pytest plugin's
``fastworker_eager`` fixture (``EagerClient.sync``, from fastworker-controlplane). A sync task runs
in the caller's thread with no event loop running (so that it can use an ORM that refuses to run
where one runs, on the caller's database connection); an async task runs on a fresh event loop in
this thread, as ``asyncio.run`` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Unpack, cast

from fastworker.client.handles import TaskBackend
from fastworker.client.models import CancelResult, TaskInfo
from fastworker.client.options import SubmitOptionArgs
from fastworker.client.task import TaskRegistry

if TYPE_CHECKING:
    from fastworker.client.workflows import SyncWorkflowHandle, Workflow, WorkflowHandle

__all__ = ["BlockingBackend", "EagerBackend", "EagerSyncBackend", "finish_without_loop"]

T = TypeVar("T")


class EagerBackend(TaskBackend, Protocol):
    """What the app needs of fastworker-controlplane's ``EagerClient`` (and what tests read from it)."""

    registry: TaskRegistry
    history: list[TaskInfo]

    async def delay_workflow(self, workflow: Workflow) -> WorkflowHandle:
        """Run a workflow's steps now; returns its handle (every step final)."""
        ...


def finish_without_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (an EagerClient call for a sync task) to its end, here, with no event loop.

    With no loop running in the thread, a sync task can use Django's ORM, which refuses to run
    where an event loop runs; the task also runs on the caller's database connection.

    Raises:
        RuntimeError: the coroutine suspended after all (it needs an event loop); it is closed.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError(
        "an eager call waited for an event loop while running a sync task in sync code; "
        "this is a bug in FastWorker's eager mode, please report it"
    )


class BlockingBackend:
    """A :class:`TaskBackend`'s methods made blocking: each call's coroutine is run to its end by ``_run``.

    Subclasses say how (in this thread with no loop, or on another thread's loop); ``name`` is the
    task's for a submission, ``""`` for a call about a task id.
    """

    def __init__(self, backend: TaskBackend) -> None:
        self.backend = backend

    def _run(self, name: str, coroutine: Coroutine[Any, Any, T]) -> T:
        raise NotImplementedError

    def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> str:
        """Submit; returns the task id."""
        return self._run(name, self.backend.send(name, args, kwargs, **options))

    def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> Any:
        """Submit and return the task's value (TaskFailed if it failed)."""
        return self._run(name, self.backend.send_and_wait(name, args, kwargs, timeout=timeout, **options))

    def status(self, task_id: str) -> TaskInfo:
        """The task's info."""
        return self._run("", self.backend.status(task_id))

    def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """The task's value, once final."""
        return self._run("", self.backend.result(task_id, timeout=timeout))

    def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """The task's info, once final."""
        return self._run("", self.backend.wait(task_id, timeout=timeout))

    def cancel(self, task_id: str) -> CancelResult:
        """Cancel the task (an eager task is final already: nothing, as a control plane would say)."""
        return self._run("", self.backend.cancel(task_id))


class EagerSyncBackend(BlockingBackend):
    """The blocking face of an EagerClient, for ``add.delay_sync(...)`` and ``delay_on_commit`` in eager mode.

    A sync task runs in the caller's thread with no event loop (see :func:`finish_without_loop`);
    an async task runs on a fresh event loop in this thread, as ``asyncio.run`` does.
    """

    def __init__(self, eager: EagerBackend) -> None:
        super().__init__(eager)
        self.eager = eager

    def _run(self, name: str, coroutine: Coroutine[Any, Any, T]) -> T:
        task = self.eager.registry.get(name) if name else None
        if task is not None and task.is_async:
            return asyncio.run(coroutine)
        return finish_without_loop(coroutine)  # an unknown name raises UnknownTask before any await

    def delay_workflow(self, workflow: Workflow) -> SyncWorkflowHandle:
        """Run a workflow's steps now, in this thread (``chain(...).delay_sync()``); the handle's methods block.

        With only sync steps, they run with no event loop (as ``add.delay_sync`` runs one); with an
        async step among them, the whole workflow runs on a fresh loop in this thread.
        """
        from fastworker.client.workflows import SyncWorkflowHandle, plan_workflow

        steps, _, _ = plan_workflow(workflow)  # (ValueError for an empty workflow, before anything runs)
        registry = self.eager.registry
        on_a_loop = any((task := registry.get(step.signature.name)) is not None and task.is_async for step in steps)
        coroutine = self.eager.delay_workflow(workflow)
        handle = asyncio.run(coroutine) if on_a_loop else finish_without_loop(coroutine)
        return SyncWorkflowHandle(handle, _FreshLoop())


class _FreshLoop:
    """Runs an eager workflow handle's calls (its steps are final: nothing waits) on a fresh loop in this thread."""

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coroutine)
