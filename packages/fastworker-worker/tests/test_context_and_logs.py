"""Every way a worker runs a task binds its context (current_task) and its log fields, and logs one line per run.

Also what a ``Retry`` reports: the task's own error when raised while handling one, and the
backoff when it names no delay.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastworker.client.context import TaskContext, current_task
from fastworker.client.errors import NoCurrentTask, Retry
from fastworker.client.logsetup import configure_logging, set_process_log_fields
from fastworker.client.task import default_registry, task
from fastworker.protocol.payload import decode_value, encode_arguments
from fastworker.worker.executor import Outcome, failure, run_async, run_async_limited, run_sync
from fastworker.worker.loader import load_task_modules
from fastworker.worker.policy import TaskPolicy
from fastworker.worker.pool import ProcessPool
from fastworker.worker.tasklog import LOGGER_NAME, log_outcome
from fastworker.worker.threads import ThreadPool

TASKS_DIR = str(Path(__file__).parent)
TASK_MODULE = "pool_tasks_for_tests"
CONTEXT = TaskContext("t-1", "pool.whoami", 2, 1, "w-1", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


@pytest.fixture(autouse=True)
def isolated_default_registry() -> Iterator[None]:
    """Undo the registrations of this module's own tasks (``ctx.*``) in the process-wide default registry."""
    yield
    for name in default_registry.names():
        if name.startswith("ctx."):
            default_registry.unregister(name)


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    set_process_log_fields(worker_id=None)


def value(outcome: Outcome) -> Any:
    assert outcome.succeeded, outcome.error
    assert outcome.result is not None
    return decode_value(outcome.result)


def whoami() -> list[Any]:
    context = current_task()
    return [context.id, context.name, context.attempt, context.retries_left, context.worker_id, context.traceparent]


EXPECTED = ["t-1", "pool.whoami", 2, 1, "w-1", CONTEXT.traceparent]

# ---------------------------------------------------------------------------------- the executor


def test_run_sync_binds_the_context_for_the_run_only() -> None:
    tf = task(name="ctx.sync_whoami")(whoami)
    assert value(run_sync(tf, (), {}, context=CONTEXT)) == EXPECTED
    with pytest.raises(NoCurrentTask):
        current_task()
    outcome = run_sync(tf, (), {})  # no context given: the task cannot read one
    assert outcome.error is not None and outcome.error.type == "NoCurrentTask"


async def test_run_async_and_run_async_limited_bind_the_context() -> None:
    @task(name="ctx.async_whoami")
    async def async_whoami() -> list[Any]:
        await asyncio.sleep(0)
        return whoami()

    assert value(await run_async(async_whoami, (), {}, context=CONTEXT)) == EXPECTED
    assert value(await run_async_limited(async_whoami, (), {}, hard=5.0, context=CONTEXT)) == EXPECTED
    with pytest.raises(NoCurrentTask):
        current_task()


def test_a_retry_raised_while_handling_an_error_reports_that_error_and_asks_for_a_retry() -> None:
    @task(name="ctx.retry_from_context")
    def implicit() -> None:
        try:
            raise ConnectionError("upstream down")
        except ConnectionError:
            raise Retry()  # noqa: B904  # the error being handled is its implicit context

    @task(name="ctx.retry_from_cause")
    def explicit() -> None:
        raise Retry(delay=2.5) from KeyError("not cached")

    outcome = run_sync(implicit, (), {})
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message, outcome.retry_delay) == ("ConnectionError", "upstream down", 0.0)
    assert "ConnectionError: upstream down" in outcome.error.traceback
    assert "Retry: retry requested" in outcome.error.traceback  # the traceback shows both
    outcome = run_sync(explicit, (), {})
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message, outcome.retry_delay) == ("KeyError", "'not cached'", 2.5)


def test_a_bare_retry_or_one_from_none_reports_retry() -> None:
    @task(name="ctx.bare_retry")
    def bare() -> None:
        raise Retry(delay=0.2, message="not ready yet")

    @task(name="ctx.retry_from_none")
    def suppressed() -> None:
        try:
            raise ValueError("hidden")
        except ValueError:
            raise Retry() from None

    outcome = run_sync(bare, (), {})
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message, outcome.retry_delay) == ("Retry", "not ready yet", 0.2)
    outcome = run_sync(suppressed, (), {})
    assert outcome.error is not None and outcome.error.type == "Retry" and outcome.retry_delay == 0.0


def test_a_retry_without_a_delay_waits_the_backoff_doubled_per_retry() -> None:
    policy = TaskPolicy(retries=3, backoff=2.0, backoff_max=5.0)
    for attempts, nominal in ((1, 2.0), (2, 4.0), (3, 5.0)):
        assert policy.backoff_delay(attempts) == nominal
        for _ in range(20):
            delay = policy.retry_delay(attempts, 0.0)  # Retry() reports 0.0: no delay of its own
            assert 0.8 * nominal <= delay <= min(1.2 * nominal, 5.0)
    assert policy.retry_delay(1, 0.3) == 0.3  # one it asked for is kept as it is
    assert [policy.retries_left(attempt) for attempt in (1, 2, 3, 4, 5)] == [3, 2, 1, 0, 0]


# ------------------------------------------------------------------------------- the per-run line


def run_line(outcome: Outcome, policy: TaskPolicy | None, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        log_outcome(CONTEXT, outcome, policy)
    (record,) = caplog.records
    assert (record.task_id, record.task_name, record.worker_id, record.attempt) == ("t-1", "pool.whoami", "w-1", 2)  # type: ignore[attr-defined]
    return record


def test_one_line_per_run_says_how_it_ended(caplog: pytest.LogCaptureFixture) -> None:
    succeeded = Outcome(True, None, None, 100.0, 100.003)
    record = run_line(succeeded, None, caplog)
    assert (record.levelno, record.getMessage()) == (logging.DEBUG, "task pool.whoami[t-1] succeeded in 0.003 s")

    failed = failure("ValueError", "bad data", started_at=100.0)
    failed.finished_at = 100.25
    record = run_line(failed, TaskPolicy(retries=1), caplog)  # attempt 2 of 2: no retry left
    assert (record.levelno, record.getMessage()) == (
        logging.WARNING,
        "task pool.whoami[t-1] failed in 0.250 s: ValueError: bad data",
    )
    record = run_line(failed, TaskPolicy(retries=3, backoff=1.5), caplog)  # backoff doubled once
    assert (record.levelno, record.getMessage()) == (
        logging.INFO,
        "task pool.whoami[t-1] retry in ~3 s after 0.250 s: ValueError: bad data",
    )
    record = run_line(failed, TaskPolicy(retries=3, retry_on=frozenset({"KeyError"})), caplog)
    assert record.getMessage().startswith("task pool.whoami[t-1] failed in")  # not in retry_on

    asked = failure("Retry", "not ready yet", started_at=100.0)
    asked.finished_at, asked.retry_delay = 100.0, 0.2
    record = run_line(asked, TaskPolicy(retries=3, retry_on=frozenset({"KeyError"})), caplog)
    assert record.getMessage() == "task pool.whoami[t-1] retry in 0.2 s after 0.000 s: Retry: not ready yet"

    cancelled = failure("TaskCancelled", "cancelled while running", started_at=100.0)
    cancelled.finished_at = 101.0
    record = run_line(cancelled, TaskPolicy(retries=3), caplog)
    assert record.getMessage() == "task pool.whoami[t-1] cancelled after 1.000 s"


def test_at_warning_only_final_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        log_outcome(CONTEXT, Outcome(True, None, None, 1.0, 2.0))
        log_outcome(CONTEXT, failure("ValueError", "x"), TaskPolicy(retries=5))
        log_outcome(CONTEXT, failure("ValueError", "y"), TaskPolicy())
    assert [record.getMessage()[-13:] for record in caplog.records] == ["ValueError: y"]


# ------------------------------------------------------------------------------------ the pools


@pytest.fixture
async def process_pool(restore_root_logging: None) -> AsyncIterator[ProcessPool]:
    """A one-child pool started after the daemon's logging was set up (INFO, JSON), as a worker starts one."""
    configure_logging("INFO", "json")
    set_process_log_fields(worker_id="w-process")
    pool = ProcessPool(1, [TASK_MODULE], sys_path=[TASKS_DIR])
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_child_process_run_sees_its_context(process_pool: ProcessPool) -> None:
    outcome = await process_pool.run("t-1", "pool.whoami", encode_arguments((), {}), context=CONTEXT)
    assert value(outcome) == EXPECTED
    outcome = await process_pool.run("t-2", "pool.whoami", encode_arguments((), {}))  # none given
    assert value(outcome) == ["t-2", "pool.whoami", 1, 0, "", None]


async def test_a_child_logs_at_the_daemons_level_and_format_with_the_task_fields(
    restore_root_logging: None, capfd: pytest.CaptureFixture[str]
) -> None:
    # Started in the test's body: a child writes to the stderr it inherits at spawn, which capfd holds now.
    configure_logging("INFO", "json")
    set_process_log_fields(worker_id="w-process")
    pool = ProcessPool(1, [TASK_MODULE], sys_path=[TASKS_DIR])
    await pool.start()
    try:
        outcome = await pool.run("t-1", "pool.log", encode_arguments(("hi",), {}), context=CONTEXT)
    finally:
        await pool.close()
    assert outcome.succeeded, outcome.error
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    logged = [line for line in lines if line["logger"] == "pool_tasks_for_tests"]
    assert len(logged) == 1, lines  # INFO passes the daemon's level, DEBUG does not
    (line,) = logged
    assert line["message"] == "info hi from t-1" and line["level"] == "INFO"
    assert {k: line[k] for k in ("task_id", "task_name", "worker_id", "attempt")} == {
        "task_id": "t-1",
        "task_name": "pool.log",  # the id and name of the run; the rest from the context the runtime gave
        "worker_id": "w-1",
        "attempt": 2,
    }


async def test_a_child_of_a_process_that_set_up_no_logging_keeps_pythons_defaults(
    capfd: pytest.CaptureFixture[str],
) -> None:
    pool = ProcessPool(1, [TASK_MODULE], sys_path=[TASKS_DIR])
    await pool.start()
    try:
        outcome = await pool.run("t-3", "pool.log", encode_arguments(("quiet",), {}), context=CONTEXT)
    finally:
        await pool.close()
    assert outcome.succeeded, outcome.error
    assert "quiet" not in capfd.readouterr().err  # INFO is below the default WARNING


async def test_a_thread_pool_run_sees_its_context_and_logs_with_its_fields(
    restore_root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    monkeypatch.syspath_prepend(TASKS_DIR)  # imported into this process, as --pool threads does
    pool = ThreadPool(1, load_task_modules([TASK_MODULE]))
    await pool.start()
    try:
        outcome = await pool.run("t-1", "pool.whoami", encode_arguments((), {}), context=CONTEXT)
        assert value(outcome) == EXPECTED
        outcome = await pool.run("t-1", "pool.log", encode_arguments(("there",), {}), context=CONTEXT)
        assert outcome.succeeded, outcome.error
    finally:
        await pool.close()
    # A thread runs with the context as given (the runtime builds it from the spec it runs).
    (line,) = [line for line in out.getvalue().splitlines() if "pool_tasks_for_tests" in line]
    assert line.endswith("info there from t-1 [task_id=t-1 task_name=pool.whoami worker_id=w-1 attempt=2]")
