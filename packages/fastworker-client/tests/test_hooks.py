"""Task hooks (``fastworker.client.hooks``): registration, order, removal, raising hooks, and on_submit in the clients.

The executing side's hooks around real runs are tested with the executor
(packages/fastworker-worker/tests/test_hooks_executor.py) and end to end in
tests/integration/test_hooks.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import fastworker.client
from fastworker.client import (
    Client,
    ControlPlaneUnavailable,
    Priority,
    SyncClient,
    TaskContext,
    chain,
    hooks,
    signature,
)
from fastworker.client.hooks import REGISTERED, RunOutcome, Submission, call_after, call_before

CTX = TaskContext("t-1", "audit.task", 2, 1, "w-1")
#: No control plane listens here: a submission is built (and its on_submit hooks run), then sending fails.
NOWHERE = "tcp://127.0.0.1:9"


def running() -> bool:
    """Whether the executor would take its hooked path (read through a call: mypy would narrow the attribute)."""
    return REGISTERED.running


@pytest.fixture(autouse=True)
def no_leftover_hooks() -> Iterator[None]:
    """Each test starts and ends with no hook registered (a test that forgot one fails here, loudly)."""
    kinds = ("before", "after", "failure", "retry", "submit")
    assert all(getattr(REGISTERED, kind) == () for kind in kinds), "a hook was left registered"
    yield
    leftover = [hook for kind in kinds for hook in getattr(REGISTERED, kind)]
    for hook in leftover:
        hooks.remove(hook)
    assert not leftover, f"hooks left registered: {leftover}"
    assert not running()


def test_each_decorator_returns_the_function_unchanged_and_hooks_run_in_registration_order() -> None:
    calls: list[str] = []

    def first(ctx: TaskContext) -> None:
        calls.append(f"first {ctx.id}")

    def second(ctx: TaskContext) -> None:
        calls.append(f"second {ctx.id}")

    assert hooks.before_task(first) is first  # a plain call works as the decorator does
    decorated = hooks.before_task(second)
    assert decorated is second
    call_before(CTX)
    assert calls == ["first t-1", "second t-1"]
    assert hooks.remove(first) and hooks.remove(second)


def test_every_kind_registers_runs_and_is_removed_by_remove() -> None:
    seen: list[tuple[str, Any]] = []

    @hooks.before_task
    def before(ctx: TaskContext) -> None:
        seen.append(("before", ctx))

    @hooks.after_task
    def after(ctx: TaskContext, outcome: RunOutcome) -> None:
        seen.append(("after", outcome))

    @hooks.on_failure
    def failed(ctx: TaskContext, error: BaseException) -> None:
        seen.append(("failure", error))

    @hooks.on_retry
    def retrying(ctx: TaskContext, error: BaseException) -> None:
        seen.append(("retry", error))

    @hooks.on_submit
    def submitted(submission: Submission) -> None:
        seen.append(("submit", submission))

    assert running()
    error = ValueError("bad")
    failed_run = RunOutcome(False, None, error, 0.5)
    call_before(CTX)
    call_after(CTX, failed_run, True)  # will be retried: on_retry, then after_task
    call_after(CTX, failed_run, False)  # final: on_failure, then after_task
    ok = RunOutcome(True, 3, None, 0.1)
    call_after(CTX, ok, None)  # succeeded: after_task only
    assert seen == [
        ("before", CTX),
        ("retry", error),
        ("after", failed_run),
        ("failure", error),
        ("after", failed_run),
        ("after", ok),
    ]

    for hook in (before, after, failed, retrying, submitted):
        assert hooks.remove(hook) is True
        assert hooks.remove(hook) is False  # gone: removing again says so
    assert not running()
    seen.clear()
    call_before(CTX)
    call_after(CTX, failed_run, False)
    assert seen == []


def test_registering_a_function_twice_keeps_one_entry_and_remove_takes_it_from_every_kind() -> None:
    calls: list[str] = []

    def audit(ctx: TaskContext, error: BaseException) -> None:
        calls.append(type(error).__name__)

    hooks.on_failure(audit)
    hooks.on_failure(audit)  # a module imported twice registers nothing more
    hooks.on_retry(audit)
    call_after(CTX, RunOutcome(False, None, KeyError("k"), 0.0), False)
    assert calls == ["KeyError"]
    assert hooks.remove(audit)
    assert REGISTERED.failure == () and REGISTERED.retry == ()


def test_only_executing_side_hooks_turn_the_executors_hooked_path_on() -> None:
    def submitted(submission: Submission) -> None: ...

    def after(ctx: TaskContext, outcome: RunOutcome) -> None: ...

    hooks.on_submit(submitted)
    assert not REGISTERED.running  # a client-only hook costs the executor nothing
    hooks.after_task(after)
    assert running()
    hooks.remove(after)
    assert not running()
    hooks.remove(submitted)


def test_async_hooks_and_non_callables_are_refused_when_registered() -> None:
    async def async_hook(ctx: TaskContext) -> None: ...

    class AsyncCallable:
        async def __call__(self, ctx: TaskContext) -> None: ...

    with pytest.raises(TypeError, match=r"async_hook is async: hooks are plain functions"):
        hooks.before_task(async_hook)  # type: ignore[type-var]  # refused by mypy too
    with pytest.raises(TypeError, match="is async"):
        hooks.after_task(AsyncCallable())  # type: ignore[type-var]
    with pytest.raises(TypeError, match="is async"):
        hooks.on_retry(functools.partial(async_hook))  # type: ignore[type-var]
    with pytest.raises(TypeError, match="must be callable"):
        hooks.on_submit("not a function")  # type: ignore[type-var]
    assert REGISTERED.before == () and REGISTERED.after == () and REGISTERED.retry == ()


def test_a_raising_hook_is_logged_with_its_name_task_and_traceback_and_the_later_hooks_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(ctx: TaskContext) -> None:
        raise RuntimeError("audit table is gone")

    def exits(ctx: TaskContext, error: BaseException) -> None:
        raise SystemExit(3)  # not even this leaves a hook

    def after(ctx: TaskContext, outcome: RunOutcome) -> None:
        calls.append("after")

    def later(ctx: TaskContext) -> None:
        calls.append("later")

    hooks.before_task(broken)
    hooks.before_task(later)
    hooks.on_failure(exits)
    hooks.after_task(after)
    try:
        with caplog.at_level(logging.ERROR, logger="fastworker.hooks"):
            call_before(CTX)
            call_after(CTX, RunOutcome(False, None, ValueError("x"), 0.0), False)
    finally:
        for hook in (broken, later, exits, after):
            hooks.remove(hook)
    assert calls == ["later", "after"]
    records = [r for r in caplog.records if r.name == "fastworker.hooks"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR]
    first, second = records
    assert first.getMessage() == (
        f"before_task hook {__name__}.test_a_raising_hook_is_logged_with_its_name_task_and_traceback_and_the_later_"
        "hooks_still_run.<locals>.broken raised for task audit.task[t-1]"
    )
    assert first.exc_info is not None and isinstance(first.exc_info[1], RuntimeError)
    assert "audit table is gone" in caplog.text and "Traceback" in caplog.text
    assert second.getMessage().startswith("on_failure hook ") and ".exits raised for task audit.task[t-1]" in (
        second.getMessage()
    )


def test_a_hook_that_returns_a_coroutine_is_logged_and_the_coroutine_closed(caplog: pytest.LogCaptureFixture) -> None:
    async def work() -> None: ...

    def schedules_badly(ctx: TaskContext) -> Any:
        return work()  # looks like a plain function, returns a coroutine nobody would await

    hooks.before_task(schedules_badly)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail here
            with caplog.at_level(logging.ERROR, logger="fastworker.hooks"):
                call_before(CTX)
    finally:
        hooks.remove(schedules_badly)
    assert "returned an awaitable for task audit.task[t-1]; hooks must be plain functions" in caplog.text


def test_run_outcome_and_submission_are_immutable() -> None:
    outcome = RunOutcome(True, 3, None, 0.25)
    assert (outcome.succeeded, outcome.value, outcome.error, outcome.runtime) == (True, 3, None, 0.25)
    with pytest.raises(AttributeError):
        outcome.value = 4  # type: ignore[misc]


# ----------------------------------------------------------------------------------- on_submit


async def test_on_submit_sees_every_submission_path_of_the_async_client_before_anything_is_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Submission] = []

    def broken(submission: Submission) -> None:
        raise ValueError("audit down")

    @hooks.on_submit
    def record(submission: Submission) -> None:
        seen.append(submission)

    hooks.on_submit(broken)  # registered after record: record still sees everything, and sending goes ahead
    client = Client(NOWHERE, connect_timeout=0.2)
    try:
        # Each call builds its spec, runs the hooks, then fails to reach a control plane: the hook's
        # ValueError never surfaces, the submission went on to be sent.
        with pytest.raises(ControlPlaneUnavailable):
            await client.delay("audit.add", 1, y=2, priority="high", task_id="given-id")
        with pytest.raises(ControlPlaneUnavailable):
            await client.send("audit.add", (3,), {"y": 4}, queue="reports")
        with pytest.raises(ControlPlaneUnavailable):
            await client.delay_many([("audit.add", (5, 6)), ("audit.mul", (7, 8), {"z": 9})], countdown=60)
        with pytest.raises(ControlPlaneUnavailable):
            await client.delay_workflow(chain(signature("audit.add", (1, 1)), signature("audit.mul", (2,))))
    finally:
        await client.aclose()
        hooks.remove(record)
        hooks.remove(broken)

    assert [(s.name, tuple(s.args), dict(s.kwargs)) for s in seen] == [
        ("audit.add", (1,), {"y": 2}),
        ("audit.add", (3,), {"y": 4}),
        ("audit.add", (5, 6), {}),
        ("audit.mul", (7, 8), {"z": 9}),
        ("audit.add", (1, 1), {}),
        ("audit.mul", (2,), {}),
    ]
    assert seen[0].task_id == "given-id" and seen[0].options.priority is Priority.HIGH
    assert seen[1].options.queue == "reports"
    assert seen[2].options.countdown == 60 and seen[2].task_id != seen[3].task_id
    assert all(len(s.task_id) == 36 for s in seen[1:])  # fresh UUID4s, as sent
    workflow_ids = {seen[4].task_id, seen[5].task_id}
    assert len(workflow_ids) == 2 and all(s.options.task_id == s.task_id for s in seen[4:])
    assert caplog.text.count("on_submit hook ") == len(seen)
    assert "test_on_submit_sees_every_submission_path_of_the_async_client_before_anything_is_sent.<locals>.broken" in (
        caplog.text
    )
    assert "raised for task audit.add[given-id]" in caplog.text


def test_sync_client_runs_on_submit_on_its_loop_thread_with_the_callers_context_variables() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    seen: list[tuple[str, str]] = []

    @hooks.on_submit
    def record(submission: Submission) -> None:
        seen.append((submission.name, request_id.get()))

    client = SyncClient(NOWHERE, connect_timeout=0.2)
    try:
        request_id.set("req-42")  # what a web framework's middleware would set for the request
        with pytest.raises(ControlPlaneUnavailable):
            client.delay("audit.add", 1, 2)
    finally:
        client.close()
        hooks.remove(record)
    assert seen == [("audit.add", "req-42")]


async def test_an_unencodable_submission_runs_no_hook() -> None:
    seen: list[Submission] = []
    hooks.on_submit(seen.append)
    client = Client(NOWHERE, connect_timeout=0.2)
    try:
        with pytest.raises(fastworker.client.PayloadError):
            await client.delay("audit.add", object())
    finally:
        await client.aclose()
        hooks.remove(seen.append)
    assert seen == []


# ----------------------------------------------------------------------------------- the export


def test_hooks_is_exported_lazily_by_the_package() -> None:
    assert fastworker.client.hooks is hooks
    assert "hooks" in fastworker.client.__all__ and "hooks" in dir(fastworker.client)
    code = (
        "import sys, json\n"
        "import fastworker.client\n"
        "before = 'fastworker.client.hooks' in sys.modules\n"
        "from fastworker.client import hooks\n"
        "print(json.dumps([before, hooks.__name__, fastworker.client.hooks is hooks]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(done.stdout) == [False, "fastworker.client.hooks", True]


def test_hooks_run_on_the_thread_that_calls_them() -> None:
    """The executor calls the hooks where the task runs; nothing here hands them to another thread."""
    import threading

    threads: list[int] = []

    def before(ctx: TaskContext) -> None:
        threads.append(threading.get_ident())

    hooks.before_task(before)
    try:
        asyncio.run(asyncio.to_thread(call_before, CTX))
    finally:
        hooks.remove(before)
    assert len(threads) == 1 and threads[0] != threading.get_ident()
