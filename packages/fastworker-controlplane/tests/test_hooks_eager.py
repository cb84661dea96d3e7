"""Task hooks under the EagerClient: on_submit, then the executing side's hooks, agreeing with what the client did.

The EagerClient runs each attempt through the executor and decides retries with the control plane's
rule (``TaskPolicy.allows_retry``), so its runs show that ``on_retry`` is followed by another attempt
and ``on_failure`` by none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fastworker.client import Retry, TaskContext, TaskRegistry, TaskState, hooks, set_default_client
from fastworker.client.hooks import REGISTERED, RunOutcome, Submission
from fastworker.client.task import AsyncTaskFunction, SyncTaskFunction, TaskFunction, TaskOptions
from fastworker.controlplane.eager import EagerClient


class Audit:
    """One hook of every kind, each appending ``(kind, task id, attempt or detail)`` to ``trail``."""

    def __init__(self) -> None:
        self.trail: list[tuple[str, str, Any]] = []

    def submit(self, submission: Submission) -> None:
        self.trail.append(("submit", submission.task_id, submission.name))

    def before(self, ctx: TaskContext) -> None:
        self.trail.append(("before", ctx.id, ctx.attempt))

    def retry(self, ctx: TaskContext, error: BaseException) -> None:
        self.trail.append(("retry", ctx.id, type(error).__name__))

    def failure(self, ctx: TaskContext, error: BaseException) -> None:
        self.trail.append(("failure", ctx.id, type(error).__name__))

    def after(self, ctx: TaskContext, outcome: RunOutcome) -> None:
        self.trail.append(("after", ctx.id, outcome.succeeded))

    def of(self, task_id: str) -> list[tuple[str, Any]]:
        return [(kind, detail) for kind, tid, detail in self.trail if tid == task_id]


@pytest.fixture
def audit() -> Iterator[Audit]:
    recording = Audit()
    hooks.on_submit(recording.submit)
    hooks.before_task(recording.before)
    hooks.on_retry(recording.retry)
    hooks.on_failure(recording.failure)
    hooks.after_task(recording.after)
    yield recording
    for hook in (recording.submit, recording.before, recording.retry, recording.failure, recording.after):
        assert hooks.remove(hook)
    assert not REGISTERED.running and REGISTERED.submit == ()


@pytest.fixture(autouse=True)
def no_default_client() -> Iterator[None]:
    previous = set_default_client(None)
    yield
    set_default_client(previous)


def registry(*tasks: tuple[Any, str, dict[str, Any]]) -> TaskRegistry:
    reg = TaskRegistry()
    for fn, name, options in tasks:
        cls = AsyncTaskFunction if asyncio.iscoroutinefunction(fn) else SyncTaskFunction
        tf: TaskFunction[Any, Any] = cls(fn, name, TaskOptions(**options))
        reg.register(tf)
    return reg


async def test_eager_runs_call_on_submit_then_the_run_hooks_and_retries_agree_with_the_client(audit: Audit) -> None:
    attempts: dict[str, int] = {}

    def flaky(key: str) -> str:
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] < 3:
            raise ConnectionError("upstream down")
        return "ok"

    async def always_busy() -> None:
        raise Retry(message="busy")

    client = EagerClient(
        registry(
            (flaky, "eager.flaky", {"retries": 3, "retry_backoff": 0.0}),
            (always_busy, "eager.busy", {"retries": 1, "retry_backoff": 0.0}),
        )
    )
    flaky_id = await client.delay("eager.flaky", "a")
    busy_id = await client.delay("eager.busy")

    flaky_info, busy_info = await client.status(flaky_id), await client.status(busy_id)
    assert (flaky_info.state, flaky_info.attempts) == (TaskState.SUCCESS, 3)
    assert audit.of(flaky_id) == [
        ("submit", "eager.flaky"),
        ("before", 1),
        ("retry", "ConnectionError"),
        ("after", False),
        ("before", 2),
        ("retry", "ConnectionError"),
        ("after", False),
        ("before", 3),
        ("after", True),
    ]
    assert (busy_info.state, busy_info.attempts) == (TaskState.FAILURE, 2)
    assert audit.of(busy_id) == [
        ("submit", "eager.busy"),
        ("before", 1),
        ("retry", "Retry"),
        ("after", False),
        ("before", 2),
        ("failure", "Retry"),
        ("after", False),
    ]


async def test_raising_hooks_under_the_eager_client_leave_the_task_successful(
    audit: Audit, caplog: pytest.LogCaptureFixture
) -> None:
    def add(x: int, y: int) -> int:
        return x + y

    def broken_submit(submission: Submission) -> None:
        raise RuntimeError("submit audit down")

    def broken_before(ctx: TaskContext) -> None:
        raise RuntimeError("before audit down")

    def broken_after(ctx: TaskContext, outcome: RunOutcome) -> None:
        raise RuntimeError("after audit down")

    hooks.on_submit(broken_submit)
    hooks.before_task(broken_before)
    hooks.after_task(broken_after)
    try:
        client = EagerClient(registry((add, "eager.add", {})))
        with caplog.at_level(logging.ERROR, logger="fastworker.hooks"):
            handle_id = await client.delay("eager.add", 2, 3)
    finally:
        for hook in (broken_submit, broken_before, broken_after):
            hooks.remove(hook)

    info = await client.status(handle_id)
    assert (info.state, info.result, info.error) == (TaskState.SUCCESS, 5, None)
    assert audit.of(handle_id) == [("submit", "eager.add"), ("before", 1), ("after", True)]
    failed = [r.getMessage() for r in caplog.records if r.name == "fastworker.hooks"]
    assert [message.split(" hook ")[0] for message in failed] == ["on_submit", "before_task", "after_task"]
    assert all(message.endswith(f"raised for task eager.add[{handle_id}]") for message in failed)
