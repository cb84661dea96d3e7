"""Fixtures that drive a real Coordinator on the test's event loop with small in-process tasks."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fastworker.client.models import Priority
from fastworker.client.task import AsyncTaskFunction, SyncTaskFunction, TaskFunction, TaskOptions, TaskRegistry
from fastworker.controlplane.coordinator import Coordinator
from fastworker.controlplane.records import TaskRecord
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import task_pb2

#: Bound on every wait a test makes for the coordinator, in seconds.
WAIT_BOUND = 10.0


class Harness:
    """Builds tasks, specs and coordinators for one test, and cleans all of them up afterwards.

    Tasks are made directly as Sync/AsyncTaskFunction and registered in the harness's own registry,
    so nothing leaks into ``default_registry``.
    """

    def __init__(self) -> None:
        self.registry = TaskRegistry()
        self.coordinators: list[Coordinator] = []
        self.gates: list[threading.Event] = []

    def task(self, fn: Callable[..., Any], name: str | None = None, **options: Any) -> TaskFunction[Any, Any]:
        """Register fn as a task in the harness registry."""
        if "priority" in options:
            options["priority"] = Priority.parse(options["priority"])
        opts = TaskOptions(**options)
        task_name = name or fn.__name__
        tf: TaskFunction[Any, Any]
        if inspect.iscoroutinefunction(fn):
            tf = AsyncTaskFunction(fn, task_name, opts)
        else:
            tf = SyncTaskFunction(fn, task_name, opts)
        return self.registry.register(tf)

    def gate(self) -> threading.Event:
        """A threading.Event that teardown sets, so no blocked task thread outlives the test."""
        event = threading.Event()
        self.gates.append(event)
        return event

    def coordinator(self, **kwargs: Any) -> Coordinator:
        """A Coordinator on the running loop; closed in teardown."""
        settings: dict[str, Any] = {"local_concurrency": 2, "result_cache_size": 1000, "result_ttl": 3600.0}
        settings.update(kwargs)
        coordinator = Coordinator(asyncio.get_running_loop(), self.registry, **settings)
        self.coordinators.append(coordinator)
        return coordinator

    @staticmethod
    def spec(
        name: str, *args: Any, task_id: str | None = None, priority: int = 0, eta: float = 0.0, **kwargs: Any
    ) -> task_pb2.TaskSpec:
        """A TaskSpec for name called with args and kwargs."""
        return task_pb2.TaskSpec(
            task_id=task_id or str(uuid.uuid4()),
            name=name,
            arguments=encode_arguments(args, kwargs),
            priority=priority,  # type: ignore[arg-type]
            eta=eta,
        )

    @staticmethod
    async def wait(
        coordinator: Coordinator, task_ids: list[str], timeout: float
    ) -> tuple[list[TaskRecord], list[str], list[str]]:
        """One Coordinator.wait call, awaited: (finished, pending, missing)."""
        future: asyncio.Future[tuple[list[TaskRecord], list[str], list[str]]] = (
            asyncio.get_running_loop().create_future()
        )

        def callback(done: list[TaskRecord], pending: list[str], missing: list[str]) -> None:
            if not future.done():
                future.set_result((list(done), list(pending), list(missing)))

        coordinator.wait(task_ids, timeout, callback)
        async with asyncio.timeout(timeout + WAIT_BOUND):
            return await future

    async def final(self, coordinator: Coordinator, task_id: str, bound: float = WAIT_BOUND) -> TaskRecord:
        """Wait (through Coordinator.wait) until task_id is final and return its record."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"task {task_id} did not finish within {bound} s")
            finished, pending, missing = await self.wait(coordinator, [task_id], remaining)
            assert not missing, f"task {task_id} is unknown to the coordinator"
            if finished:
                return finished[0]

    def release_all(self) -> None:
        for gate in self.gates:
            gate.set()

    def close(self) -> None:
        self.release_all()
        for coordinator in self.coordinators:
            coordinator.close()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    """A Harness whose coordinators are closed (and blocked tasks released) after the test."""
    h = Harness()
    try:
        yield h
    finally:
        h.close()
        # Let completions that the slots posted before closing run on this loop, not a closed one.
        await asyncio.sleep(0.01)
