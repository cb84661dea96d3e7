"""current_task(): the running task's id, name, attempt, retries left, worker and trace; and its log fields."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from fastworker.client.context import CURRENT, TaskContext, current_task
from fastworker.client.errors import NoCurrentTask
from fastworker.client.logsetup import (
    configure_logging,
    log_fields,
    logging_settings,
    set_process_log_fields,
)

CONTEXT = TaskContext("t-1", "reports.build", 2, 1, "w-1", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


@pytest.fixture(autouse=True)
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


def test_outside_a_task_current_task_raises_no_current_task() -> None:
    with pytest.raises(NoCurrentTask, match="outside a running task"):
        current_task()
    assert isinstance(NoCurrentTask("x"), RuntimeError)


def test_inside_a_run_current_task_is_the_bound_context_until_it_is_reset() -> None:
    token = CURRENT.set(CONTEXT)
    try:
        context = current_task()
        assert context is CONTEXT
        assert (context.id, context.name, context.attempt, context.retries_left, context.worker_id) == (
            "t-1",
            "reports.build",
            2,
            1,
            "w-1",
        )
        assert context.traceparent is not None and context.traceparent.startswith("00-")
    finally:
        CURRENT.reset(token)
    with pytest.raises(NoCurrentTask):
        current_task()


def test_the_context_is_frozen_and_traceparent_defaults_to_none() -> None:
    context = TaskContext("t", "n", 1, 0, "controlplane")
    assert context.traceparent is None
    with pytest.raises(AttributeError):
        context.attempt = 3  # type: ignore[misc]


def test_a_thread_the_task_starts_does_not_inherit_it_unless_run_in_a_copied_context() -> None:
    token = CURRENT.set(CONTEXT)
    seen: dict[str, object] = {}

    def read(key: str) -> None:
        try:
            seen[key] = current_task().id
        except NoCurrentTask:
            seen[key] = None

    try:
        plain = threading.Thread(target=read, args=("plain",))
        copied = threading.Thread(target=contextvars.copy_context().run, args=(read, "copied"))
        for thread in (plain, copied):
            thread.start()
            thread.join()
    finally:
        CURRENT.reset(token)
    assert seen == {"plain": None, "copied": "t-1"}


async def test_concurrent_async_runs_each_see_their_own_context() -> None:
    async def run(context: TaskContext) -> str:
        token = CURRENT.set(context)
        try:
            await asyncio.sleep(0.01)
            return current_task().id
        finally:
            CURRENT.reset(token)

    first, second = TaskContext("a", "n", 1, 0, "w"), TaskContext("b", "n", 1, 0, "w")
    assert [*await asyncio.gather(run(first), run(second))] == ["a", "b"]


def test_records_logged_while_a_task_runs_carry_its_fields_in_json() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    set_process_log_fields(worker_id="process-id")
    logger = logging.getLogger("tasks.reports")
    token = CURRENT.set(CONTEXT)
    try:
        logger.info("hello from %s", current_task().id)
        with log_fields(attempt=9):
            logger.info("log_fields wins over the task's")
        logger.info("extra wins over both", extra={"task_name": "other"})
    finally:
        CURRENT.reset(token)
    logger.info("after the run")
    first, second, third, after = (json.loads(line) for line in out.getvalue().splitlines())
    assert {k: first[k] for k in ("message", "task_id", "task_name", "worker_id", "attempt", "logger")} == {
        "message": "hello from t-1",
        "task_id": "t-1",
        "task_name": "reports.build",
        "worker_id": "w-1",  # the task's worker, over the process's field
        "attempt": 2,
        "logger": "tasks.reports",
    }
    assert second["attempt"] == 9 and second["task_id"] == "t-1"
    assert third["task_name"] == "other" and third["task_id"] == "t-1"
    assert "task_id" not in after and after["worker_id"] == "process-id"


def test_records_logged_while_a_task_runs_carry_its_fields_in_text() -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "text", stream=out)
    token = CURRENT.set(CONTEXT)
    try:
        logging.getLogger("tasks.reports").debug("hello from %s", current_task().id)
    finally:
        CURRENT.reset(token)
    (line,) = out.getvalue().splitlines()
    assert line.endswith("tasks.reports: hello from t-1 [task_id=t-1 task_name=reports.build worker_id=w-1 attempt=2]")


def test_logging_settings_are_what_configure_logging_set_with_the_process_fields() -> None:
    configure_logging("warning", "json", stream=io.StringIO())
    set_process_log_fields(worker_id="w-9")
    assert logging_settings() == ("WARNING", "json", {"worker_id": "w-9"})
