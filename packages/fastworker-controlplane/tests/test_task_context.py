"""On the control plane's own slots (and under the eager client) a task reads its context, logs with its fields,
and each run ends with one log line; Retry follows the backoff and ends with the task's own error."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fastworker.client.context import current_task
from fastworker.client.errors import Retry, TaskFailed
from fastworker.client.logsetup import configure_logging, set_process_log_fields
from fastworker.client.task import SyncTaskFunction, TaskOptions, TaskRegistry
from fastworker.controlplane.eager import EagerClient
from fastworker.controlplane.records import FAILURE, RETRYING, SUCCESS
from fastworker.protocol.payload import decode_value


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger set up as a daemon's ``--log-format json --log-level DEBUG`` (success lines are DEBUG), into a buffer."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("DEBUG", "json", stream=out)
    yield out
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    set_process_log_fields(worker_id=None)


async def run_lines(json_log: io.StringIO, count: int) -> list[dict[str, Any]]:
    """The log's JSON lines once it holds ``count`` ``fastworker.task`` lines (bounded).

    A slot writes a run's line after handing its outcome on, so the task can be final before it.
    """
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
        if sum(line["logger"] == "fastworker.task" for line in lines) >= count:
            return lines
        assert asyncio.get_running_loop().time() < deadline, f"fewer than {count} run lines: {lines}"
        await asyncio.sleep(0.01)


def fields_of(context: Any) -> list[Any]:
    return [context.id, context.name, context.attempt, context.retries_left, context.worker_id, context.traceparent]


async def test_a_local_sync_task_reads_its_context_on_each_attempt(harness: Any) -> None:
    seen: list[list[Any]] = []

    def introspect() -> str:
        seen.append(fields_of(current_task()))
        if len(seen) == 1:
            raise ConnectionError("first attempt fails")
        return current_task().id

    harness.task(introspect, retries=2, retry_backoff=0.01)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("introspect"))
    final = await harness.final(coordinator, record.task_id)
    assert final.state == SUCCESS and decode_value(final.result) == record.task_id
    assert seen == [
        [record.task_id, "introspect", 1, 2, "controlplane", None],
        [record.task_id, "introspect", 2, 1, "controlplane", None],
    ]
    assert final.error is None  # the first attempt's error is gone with the success


async def test_a_local_async_task_reads_its_context_and_the_submitting_trace(harness: Any) -> None:
    async def introspect_async() -> list[Any]:
        await asyncio.sleep(0)
        return fields_of(current_task())

    harness.task(introspect_async, retries=1)
    coordinator = harness.coordinator()
    spec = harness.spec("introspect_async")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    spec.headers["traceparent"] = traceparent
    record, _ = coordinator.submit(spec)
    final = await harness.final(coordinator, record.task_id)
    assert final.state == SUCCESS, final.error
    assert decode_value(final.result) == [record.task_id, "introspect_async", 1, 1, "controlplane", traceparent]


async def test_what_a_local_task_logs_carries_its_fields_and_each_run_ends_with_a_line(
    harness: Any, json_log: io.StringIO
) -> None:
    def chatty() -> None:
        logging.getLogger("tasks.chatty").info("hello from %s", current_task().id)

    async def chatty_async() -> None:
        logging.getLogger("tasks.chatty").info("async hello from %s", current_task().id)

    harness.task(chatty)
    harness.task(chatty_async)
    coordinator = harness.coordinator()
    sync_record, _ = coordinator.submit(harness.spec("chatty"))
    async_record, _ = coordinator.submit(harness.spec("chatty_async"))
    for record in (sync_record, async_record):
        assert (await harness.final(coordinator, record.task_id)).state == SUCCESS
    lines = await run_lines(json_log, 2)
    for record, text in ((sync_record, "hello"), (async_record, "async hello")):
        mine = [line for line in lines if line.get("task_id") == record.task_id]
        said = [line for line in mine if line["logger"] == "tasks.chatty"]
        assert [line["message"] for line in said] == [f"{text} from {record.task_id}"]
        assert said[0]["task_name"] == record.name and said[0]["worker_id"] == "controlplane"
        assert said[0]["attempt"] == 1
        (ended,) = [line for line in mine if line["logger"] == "fastworker.task"]
        assert ended["level"] == "DEBUG"
        assert ended["message"].startswith(f"task {record.name}[{record.task_id}] succeeded in ")


async def test_a_retry_without_a_delay_waits_the_backoff(harness: Any) -> None:
    calls = itertools.count(1)

    def patient() -> str:
        if next(calls) == 1:
            raise Retry()
        return "done"

    harness.task(patient, retries=1, retry_backoff=30.0)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("patient"))
    async with asyncio.timeout(5):
        while record.state != RETRYING:
            await asyncio.sleep(0.005)
    assert 0.8 * 30 - 1 <= record.eta - coordinator.clock() <= 1.2 * 30  # the backoff, jittered: not at once
    assert record.error.type == "Retry"


async def test_after_the_last_retry_the_error_is_the_tasks_own(harness: Any) -> None:
    def unreachable() -> None:
        try:
            raise ConnectionError("upstream down")
        except ConnectionError as exc:
            raise Retry(delay=0.01) from exc

    harness.task(unreachable, retries=2)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("unreachable"))
    final = await harness.final(coordinator, record.task_id)
    assert final.state == FAILURE and final.attempts == 3
    assert (final.error.type, final.error.message) == ("ConnectionError", "upstream down")
    assert "Retry" in final.error.traceback  # the traceback still shows how it was asked for


# ------------------------------------------------------------------------------------- eager


async def test_the_eager_client_gives_the_context_and_the_final_error_as_a_control_plane_would(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = TaskRegistry()
    seen: list[list[Any]] = []

    def flaky() -> str:
        seen.append(fields_of(current_task()))
        if len(seen) < 2:
            try:
                raise TimeoutError("slow upstream")
            except TimeoutError:
                raise Retry()  # noqa: B904  # the error being handled is its implicit context
        return "ok"

    def doomed() -> None:
        try:
            raise KeyError("gone")
        except KeyError as exc:
            raise Retry() from exc

    registry.register(SyncTaskFunction(flaky, "eager.flaky", TaskOptions(retries=2)))
    registry.register(SyncTaskFunction(doomed, "eager.doomed", TaskOptions(retries=1)))
    with caplog.at_level(logging.DEBUG, logger="fastworker.task"):
        async with EagerClient(registry) as client:
            task_id = await client.delay("eager.flaky")
            info = await client.status(task_id)
            assert (info.state.value, info.result, info.error, info.attempts) == ("SUCCESS", "ok", None, 2)
            assert seen == [
                [task_id, "eager.flaky", 1, 2, "eager", None],
                [task_id, "eager.flaky", 2, 1, "eager", None],
            ]
            with pytest.raises(TaskFailed) as failed:
                await client.submit("eager.doomed")
    error = failed.value.info.error
    assert error is not None and (error.type, error.message) == ("KeyError", "'gone'")
    messages = [record.getMessage() for record in caplog.records if record.name == "fastworker.task"]
    assert messages[0].startswith(f"task eager.flaky[{task_id}] retry in ~1 s after ")
    assert messages[0].endswith(": TimeoutError: slow upstream")
    assert messages[1].startswith(f"task eager.flaky[{task_id}] succeeded in ")
    assert "failed in" in messages[-1] and messages[-1].endswith("KeyError: 'gone'")


async def test_each_run_line_of_a_local_task_names_the_attempt_that_ran(harness: Any, json_log: io.StringIO) -> None:
    runs = itertools.count(1)

    def once_more() -> str:
        if next(runs) == 1:
            raise Retry()
        return "ok"

    harness.task(once_more, retries=1, retry_backoff=0.01)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("once_more"))
    assert (await harness.final(coordinator, record.task_id)).state == SUCCESS
    lines = await run_lines(json_log, 2)
    ended = [(line["attempt"], line["level"]) for line in lines if line["logger"] == "fastworker.task"]
    # Read when the run ended, not once the loop had already counted the next attempt.
    assert ended == [(1, "INFO"), (2, "DEBUG")]
