"""Task hooks around the executor's runs: order, what each hook is given, the retry decision, and raising hooks.

``run_sync``, ``run_async`` and ``run_async_limited`` are what every runtime runs tasks through (the
control plane's slots, subworkers' child processes and thread pool, the eager client), so the hooks
called here are the hooks of every path; tests/integration/test_hooks.py runs them in real daemons.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fastworker.client import Retry, TaskContext, TaskRegistry, current_task, hooks
from fastworker.client.context import bound_task
from fastworker.client.errors import TimeLimitExceeded
from fastworker.client.hooks import REGISTERED, RunOutcome
from fastworker.client.task import AsyncTaskFunction, SyncTaskFunction, TaskFunction, TaskOptions
from fastworker.protocol.errors import PayloadError
from fastworker.protocol.payload import decode_value
from fastworker.protocol.v1.task_pb2 import TaskError
from fastworker.worker.executor import Outcome, run_async, run_async_limited, run_sync, tell_span, will_retry
from fastworker.worker.policy import NOT_RETRIABLE, options_policy

Event = tuple[Any, ...]


class Recorder:
    """Registers one hook of each executing-side kind that appends what it is given to ``events``."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.threads: set[int] = set()

    def before(self, ctx: TaskContext) -> None:
        self.threads.add(threading.get_ident())
        assert bound_task() in (ctx, None)  # the run's context is bound while its hooks run (if it has one)
        self.events.append(("before", ctx.id, ctx.attempt))

    def failure(self, ctx: TaskContext, error: BaseException) -> None:
        self.events.append(("failure", ctx.id, error))

    def retry(self, ctx: TaskContext, error: BaseException) -> None:
        self.events.append(("retry", ctx.id, error))

    def after(self, ctx: TaskContext, outcome: RunOutcome) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(("after", ctx.id, outcome))

    def register(self) -> None:
        hooks.before_task(self.before)
        hooks.on_failure(self.failure)
        hooks.on_retry(self.retry)
        hooks.after_task(self.after)

    def unregister(self) -> None:
        for hook in (self.before, self.failure, self.retry, self.after):
            hooks.remove(hook)

    def kinds(self) -> list[str]:
        return [event[0] for event in self.events]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    recording.register()
    yield recording
    recording.unregister()
    assert not REGISTERED.running


def make(fn: Any, name: str = "hooked.task", **options: Any) -> TaskFunction[Any, Any]:
    """A task outside the default registry."""
    cls = AsyncTaskFunction if asyncio.iscoroutinefunction(fn) else SyncTaskFunction
    return TaskRegistry().register(cls(fn, name, TaskOptions(**options)))


def context(attempt: int = 1, retries_left: int = 0, task_id: str = "t-1") -> TaskContext:
    return TaskContext(task_id, "hooked.task", attempt, retries_left, "w-1")


def value_of(outcome: Outcome) -> Any:
    assert outcome.succeeded and outcome.result is not None, outcome.error
    return decode_value(outcome.result)


# ---------------------------------------------------------------------------------------- order


def test_a_sync_run_calls_before_then_the_task_then_after_with_its_value(recorder: Recorder) -> None:
    def add(x: int, y: int) -> int:
        recorder.events.append(("task", current_task().id))
        return x + y

    outcome = run_sync(make(add), (1,), {"y": 2}, context=context())

    assert value_of(outcome) == 3
    assert recorder.kinds() == ["before", "task", "after"]
    after = recorder.events[-1][2]
    assert after.succeeded and after.value == 3 and after.error is None
    assert after.runtime == pytest.approx(outcome.finished_at - outcome.started_at)


async def test_an_async_run_calls_before_then_the_task_then_after_on_the_loop(recorder: Recorder) -> None:
    async def greet(who: str) -> str:
        await asyncio.sleep(0)
        recorder.events.append(("task", current_task().id))
        return f"hello {who}"

    outcome = await run_async(make(greet), ("ada",), {}, context=context())

    assert value_of(outcome) == "hello ada"
    assert recorder.kinds() == ["before", "task", "after"]
    assert recorder.events[-1][2] == RunOutcome(True, "hello ada", None, recorder.events[-1][2].runtime)
    assert recorder.threads == {threading.get_ident()}  # the loop's thread, where the task ran


async def test_sync_hooks_run_on_the_thread_that_runs_the_task(recorder: Recorder) -> None:
    ran_on: list[int] = []

    def work() -> None:
        ran_on.append(threading.get_ident())

    await asyncio.to_thread(run_sync, make(work), (), {}, context=context())

    assert recorder.threads == set(ran_on) and ran_on[0] != threading.get_ident()


@pytest.mark.parametrize("is_async", [False, True])
async def test_what_before_task_sets_in_a_context_variable_the_task_sees_and_after_task_cleans_up(
    is_async: bool,
) -> None:
    """The DB-session pattern: before_task opens one, the task uses it, after_task closes it."""
    session: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("session", default=None)

    def open_session(ctx: TaskContext) -> None:
        session.set([f"session of {ctx.id}"])

    def close_session(ctx: TaskContext, outcome: RunOutcome) -> None:
        opened = session.get()
        assert opened is not None
        opened.append("closed")
        session.set(None)

    def uses() -> str:
        opened = session.get()
        assert opened is not None
        return opened[0]

    async def uses_async() -> str:
        return uses()

    hooks.before_task(open_session)
    hooks.after_task(close_session)
    try:
        if is_async:
            outcome = await run_async(make(uses_async), (), {}, context=context())
        else:
            outcome = run_sync(make(uses), (), {}, context=context())
    finally:
        hooks.remove(open_session)
        hooks.remove(close_session)
    assert value_of(outcome) == "session of t-1"
    assert session.get() is None


def test_a_context_maker_is_called_once_and_a_run_without_a_context_gets_an_anonymous_one(recorder: Recorder) -> None:
    made: list[int] = []

    def maker() -> TaskContext:
        made.append(1)
        return context(task_id="made")

    def whoami() -> str:
        return current_task().id

    assert value_of(run_sync(make(whoami), (), {}, context=maker)) == "made"
    assert made == [1]  # the hooks and the task share one context

    def plain() -> int:
        return 1

    run_sync(make(plain, name="no.context"), (), {})
    assert recorder.events[-2] == ("before", "", 1)  # no id, no retries left: never "will be retried"
    assert recorder.kinds() == ["before", "after", "before", "after"]


# ------------------------------------------------------------------------------ failures and retries


def test_a_final_failure_calls_on_failure_with_the_exception_then_after(recorder: Recorder) -> None:
    error = ValueError("bad data")

    def parse() -> None:
        raise error

    outcome = run_sync(make(parse), (), {}, context=context(retries_left=0))

    assert not outcome.succeeded and outcome.error is not None and outcome.error.type == "ValueError"
    assert recorder.kinds() == ["before", "failure", "after"]
    assert recorder.events[1][2] is error
    after = recorder.events[2][2]
    assert (after.succeeded, after.value, after.error) == (False, None, error)


async def test_a_failure_with_retries_left_calls_on_retry_then_after(recorder: Recorder) -> None:
    async def fetch() -> None:
        raise ConnectionError("upstream down")

    outcome = await run_async(make(fetch), (), {}, context=context(retries_left=2))

    assert outcome.error is not None and outcome.error.type == "ConnectionError"
    assert recorder.kinds() == ["before", "retry", "after"]
    assert isinstance(recorder.events[1][2], ConnectionError)


def test_an_error_retry_on_does_not_name_is_final_even_with_retries_left(recorder: Recorder) -> None:
    def fetch(kind: str) -> None:
        raise (ConnectionError if kind == "conn" else KeyError)(kind)

    tf = make(fetch, retries=3, retry_on=(ConnectionError,))
    run_sync(tf, ("conn",), {}, context=context(retries_left=3))
    run_sync(tf, ("key",), {}, context=context(retries_left=3))

    assert recorder.kinds() == ["before", "retry", "after", "before", "failure", "after"]


def test_retry_with_a_retry_left_calls_on_retry_and_on_the_last_attempt_on_failure_with_its_reason(
    recorder: Recorder,
) -> None:
    def charge() -> None:
        try:
            raise ConnectionError("provider down")
        except ConnectionError as exc:
            raise Retry(delay=5) from exc

    tf = make(charge, retries=1, retry_on=(KeyError,))  # Retry bypasses retry_on
    run_sync(tf, (), {}, context=context(attempt=1, retries_left=1))
    outcome = run_sync(tf, (), {}, context=context(attempt=2, retries_left=0))

    assert recorder.kinds() == ["before", "retry", "after", "before", "failure", "after"]
    retried, failed = recorder.events[1][2], recorder.events[4][2]
    # The exception the task's info reports: its own error, not the Retry wrapper.
    assert isinstance(retried, ConnectionError) and isinstance(failed, ConnectionError)
    assert outcome.error is not None and outcome.error.type == "ConnectionError"


def test_a_bare_retry_is_the_error_the_hooks_get(recorder: Recorder) -> None:
    def busy() -> None:
        raise Retry(message="busy")

    run_sync(make(busy), (), {}, context=context(retries_left=0))

    assert recorder.kinds() == ["before", "failure", "after"]
    assert isinstance(recorder.events[1][2], Retry)


def test_a_result_that_cannot_be_encoded_is_a_final_failure_with_a_payload_error(recorder: Recorder) -> None:
    def unencodable() -> object:
        return object()

    outcome = run_sync(make(unencodable), (), {}, context=context(retries_left=3))

    assert outcome.error is not None and outcome.error.type == "PayloadError"
    assert recorder.kinds() == ["before", "failure", "after"]  # never retried, as the control plane decides
    assert isinstance(recorder.events[1][2], PayloadError)


async def test_an_async_task_past_its_time_limit_ends_like_a_failure_for_the_hooks(recorder: Recorder) -> None:
    async def slow() -> None:
        await asyncio.sleep(30)

    without = await run_async_limited(make(slow), (), {}, hard=0.05, context=context(retries_left=1))
    assert without.error is not None and without.error.type == "TimeLimitExceeded"
    assert recorder.kinds() == ["before", "retry", "after"]
    error = recorder.events[1][2]
    assert isinstance(error, TimeLimitExceeded) and str(error) == without.error.message
    recorder.events.clear()

    outcome = await run_async_limited(make(slow), (), {}, soft=0.05, hard=1, context=context(retries_left=0))
    assert outcome.error is not None and outcome.error.type == "SoftTimeLimitExceeded"
    assert recorder.kinds() == ["before", "failure", "after"]


async def test_a_cancelled_async_run_gets_after_task_only_and_stays_cancelled(recorder: Recorder) -> None:
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.sleep(30)

    job = asyncio.create_task(run_async(make(waits), (), {}, context=context(retries_left=2)))
    await started.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job

    assert recorder.kinds() == ["before", "after"]  # a cancel is neither a failure nor a retry
    after = recorder.events[1][2]
    assert not after.succeeded and isinstance(after.error, asyncio.CancelledError)


def test_an_interrupt_from_outside_gets_after_task_only_and_propagates(recorder: Recorder) -> None:
    class Interrupted(BaseException):
        """What a runtime raises in a task's thread to stop it (TaskCancelled, TaskInterrupted)."""

    def stopped() -> None:
        raise Interrupted()

    with pytest.raises(Interrupted):
        run_sync(make(stopped), (), {}, context=context(retries_left=2))

    assert recorder.kinds() == ["before", "after"]
    assert isinstance(recorder.events[1][2].error, Interrupted)


@pytest.mark.parametrize(
    ("retries", "retry_on", "attempt"),
    list(itertools.product([0, 1, 3], [(), ("ConnectionError",), ("KeyError", "Retry")], [1, 2, 4])),
)
def test_will_retry_agrees_with_the_control_planes_rule_for_every_case(
    retries: int, retry_on: tuple[str, ...], attempt: int
) -> None:
    """The executing side's decision is ``TaskPolicy.allows_retry`` (what the coordinator and eager client apply)."""

    def fn() -> None: ...

    tf = make(fn, retries=retries, retry_on=retry_on)
    policy = options_policy(tf.options)
    ctx = TaskContext("t", tf.name, attempt, policy.retries_left(attempt), "w")
    for error_type in ("ConnectionError", "KeyError", "Retry", "ValueError", *NOT_RETRIABLE):
        for asked in (False, True):
            outcome = Outcome(False, None, TaskError(type=error_type), 0.0, 0.0, retry_delay=1.0 if asked else None)
            assert will_retry(tf, ctx, outcome) == policy.allows_retry(attempt, error_type, asked), (
                error_type,
                asked,
            )


# ------------------------------------------------------------------------------------ raising hooks


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("fails", [False, True])
async def test_raising_hooks_are_logged_and_change_nothing_about_the_run(
    caplog: pytest.LogCaptureFixture, recorder: Recorder, is_async: bool, fails: bool
) -> None:
    def add(x: int, y: int) -> int:
        if fails:
            raise ValueError("task failed on its own")
        return x + y

    async def add_async(x: int, y: int) -> int:
        return add(x, y)

    tf = make(add_async if is_async else add)

    async def run() -> Outcome:
        if is_async:
            return await run_async(tf, (1, 2), {}, context=context(retries_left=1))
        return run_sync(tf, (1, 2), {}, context=context(retries_left=1))

    recorder.unregister()
    unhooked = await run()  # the same run with no hook at all

    def broken_before(ctx: TaskContext) -> None:
        raise RuntimeError("before broke")

    def broken_error(ctx: TaskContext, error: BaseException) -> None:
        raise RuntimeError("error hook broke")

    def broken_after(ctx: TaskContext, outcome: RunOutcome) -> None:
        raise SystemExit(1)

    # Each broken hook sits before a recording one of its kind: those still run.
    hooks.before_task(broken_before)
    hooks.on_retry(broken_error)
    hooks.on_failure(broken_error)
    hooks.after_task(broken_after)
    recorder.register()
    try:
        with caplog.at_level(logging.ERROR, logger="fastworker.hooks"):
            hooked = await run()
    finally:
        for broken in (broken_before, broken_error, broken_after):
            hooks.remove(broken)

    assert (hooked.succeeded, hooked.result, hooked.retry_delay) == (
        unhooked.succeeded,
        unhooked.result,
        unhooked.retry_delay,
    )
    assert (hooked.error and (hooked.error.type, hooked.error.message)) == (
        unhooked.error and (unhooked.error.type, unhooked.error.message)
    )
    assert recorder.kinds() == (["before", "retry", "after"] if fails else ["before", "after"])
    messages = [r.getMessage() for r in caplog.records if r.name == "fastworker.hooks"]
    prefix = f"{__name__}.test_raising_hooks_are_logged_and_change_nothing_about_the_run.<locals>"
    expected = [f"before_task hook {prefix}.broken_before raised for task hooked.task[t-1]"]
    if fails:
        expected.append(f"on_retry hook {prefix}.broken_error raised for task hooked.task[t-1]")
    expected.append(f"after_task hook {prefix}.broken_after raised for task hooked.task[t-1]")
    assert messages == expected
    assert all(r.levelno == logging.ERROR and r.exc_info for r in caplog.records if r.name == "fastworker.hooks")


def test_with_no_hook_registered_the_executor_takes_its_unhooked_path() -> None:
    assert not REGISTERED.running

    def add(x: int, y: int) -> int:
        return x + y

    assert value_of(run_sync(make(add), (1, 2), {})) == 3


class SpanRecorder:
    """Stands in for the ``process`` span: keeps what the run's end told it."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def ended(self, outcome: str, error_type: str = "", message: str = "") -> None:
        self.outcomes.append(outcome)


@pytest.mark.parametrize(
    ("retries_left", "retry_on", "error_type", "expected"),
    [
        (1, (), "ValueError", "retry"),  # a failure that runs again: the span said "failure" for every attempt
        (0, (), "ValueError", "failure"),  # the last attempt
        (1, ("KeyError",), "ValueError", "failure"),  # not one retry_on retries
        (1, (), "PayloadError", "failure"),  # never retried
        (1, (), "TaskCancelled", "cancelled"),
    ],
)
def test_the_span_of_a_failed_run_says_retry_when_the_task_runs_again(
    retries_left: int, retry_on: tuple[str, ...], error_type: str, expected: str
) -> None:
    def fn() -> None: ...

    tf = make(fn, retries=3, retry_on=retry_on)
    span = SpanRecorder()
    outcome = Outcome(False, None, TaskError(type=error_type), 0.0, 0.0)

    tell_span(span, outcome, task=tf, ctx=lambda: TaskContext("t", tf.name, 1, retries_left, "w"))  # type: ignore[arg-type]

    assert span.outcomes == [expected]


@pytest.mark.parametrize(("retries_left", "expected"), [(1, "retry"), (0, "failure")])
def test_the_span_of_a_run_that_raised_retry_says_failure_when_no_retry_is_left(
    retries_left: int, expected: str
) -> None:
    # A Retry on the last attempt (or with retries=0) ends the task FAILURE: its span says so too
    def fn() -> None: ...

    tf = make(fn, retries=3)
    span = SpanRecorder()
    outcome = Outcome(False, None, TaskError(type="ConnectionError"), 0.0, 0.0, retry_delay=0.0)

    tell_span(span, outcome, task=tf, ctx=lambda: TaskContext("t", tf.name, 1, retries_left, "w"))  # type: ignore[arg-type]

    assert span.outcomes == [expected]


def test_the_span_of_a_success_and_of_a_retry_asked_for_need_no_task() -> None:
    span = SpanRecorder()
    tell_span(span, Outcome(True, None, None, 0.0, 0.0))  # type: ignore[arg-type]
    tell_span(span, Outcome(False, None, TaskError(type="Retry"), 0.0, 0.0, retry_delay=1.0))  # type: ignore[arg-type]
    assert span.outcomes == ["success", "retry"]
