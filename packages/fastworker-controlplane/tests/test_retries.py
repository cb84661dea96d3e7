"""Failed attempts are retried per the task's policy: RETRYING with backoff, Retry(delay=...), retry_on."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from fastworker.client import Retry, TaskFailed, TaskState
from fastworker.controlplane.eager import EagerClient
from fastworker.controlplane.records import CANCELLED, FAILURE, RETRYING, SUCCESS


async def test_a_task_that_keeps_failing_runs_one_plus_retries_times_then_fails(harness: Any) -> None:
    calls = itertools.count(1)

    def flaky() -> None:
        next(calls)
        raise ValueError("still broken")

    harness.task(flaky, retries=2, retry_backoff=0.01)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("flaky"))

    final = await harness.final(coordinator, record.task_id)

    assert final.state == FAILURE
    assert final.attempts == 3
    assert final.error.type == "ValueError"
    assert next(calls) == 4  # ran exactly three times
    assert coordinator.counters.retried == 2


async def test_a_task_that_succeeds_on_a_later_attempt_ends_success_with_its_attempts_counted(harness: Any) -> None:
    calls = itertools.count(1)

    def second_time_lucky() -> str:
        if next(calls) == 1:
            raise ConnectionError("flaky network")
        return "ok"

    harness.task(second_time_lucky, retries=3, retry_backoff=0.01)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("second_time_lucky"))

    final = await harness.final(coordinator, record.task_id)

    assert final.state == SUCCESS
    assert final.attempts == 2


async def test_between_attempts_the_task_is_retrying_with_its_due_time_and_last_error(harness: Any) -> None:
    def broken() -> None:
        raise RuntimeError("nope")

    harness.task(broken, retries=1, retry_backoff=30.0)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("broken"))

    async with asyncio.timeout(5):
        while record.state != RETRYING:
            await asyncio.sleep(0.005)

    # The first delay is retry_backoff with +-20% jitter
    assert 0.8 * 30 - 1 <= record.eta - coordinator.clock() <= 1.2 * 30
    assert record.error.type == "RuntimeError"
    assert len(coordinator.schedule) == 1

    # Cancelling a retrying task ends it at once, and it never runs again
    assert coordinator.cancel(record.task_id) == (True, RETRYING)
    assert record.state == CANCELLED
    assert len(coordinator.schedule) == 0


async def test_a_retry_exception_asks_for_another_attempt_after_its_own_delay(harness: Any) -> None:
    calls = itertools.count(1)

    def polite() -> str:
        if next(calls) == 1:
            raise Retry(delay=0.05)
        return "done"

    harness.task(polite, retries=1, retry_backoff=60.0)  # the task's delay wins over the backoff
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("polite"))

    final = await harness.final(coordinator, record.task_id, bound=5)

    assert final.state == SUCCESS
    assert final.attempts == 2


@pytest.mark.parametrize("eager", [False, True])
async def test_a_retry_asked_for_with_none_left_says_so_in_the_final_error(harness: Any, eager: bool) -> None:
    # Celery allows 3 retries by default, FastWorker none: "retry requested in 0.1 s" read as if one were coming.
    def busy() -> None:
        raise Retry(delay=0.1)

    harness.task(busy, name="busy")  # retries=0, the default
    if eager:
        with pytest.raises(TaskFailed) as failed:
            await EagerClient(registry=harness.registry).submit("busy")
        error = failed.value.info.error
        assert error is not None
        message, attempts = error.message, failed.value.info.attempts
    else:
        coordinator = harness.coordinator()
        record, _ = coordinator.submit(harness.spec("busy"))
        final = await harness.final(coordinator, record.task_id, bound=5)
        assert final.state == FAILURE and final.error is not None
        message, attempts = final.error.message, final.attempts
    assert message == "retry requested in 0.1 s, but no retry is left (retries=0)"
    assert attempts == 1


async def test_only_listed_exception_types_are_retried_when_retry_on_is_given(harness: Any) -> None:
    def wrong_kind() -> None:
        raise KeyError("not retriable")

    harness.task(wrong_kind, retries=3, retry_backoff=0.01, retry_on=(ConnectionError,))
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("wrong_kind"))

    final = await harness.final(coordinator, record.task_id)

    assert final.state == FAILURE
    assert final.attempts == 1


@pytest.mark.parametrize("eager", [False, True], ids=["control plane", "eager"])
async def test_retry_on_a_class_retries_its_subclasses_as_except_would(harness: Any, eager: bool) -> None:
    # Given a task that retries on ConnectionError and fails with a ConnectionResetError, then succeeds
    failures = [ConnectionResetError("reset by peer")]

    def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    harness.task(flaky, retries=2, retry_backoff=0.01, retry_on=(ConnectionError,))

    # When it runs
    if eager:
        client = EagerClient(registry=harness.registry)
        info = await client.wait(await client.delay("flaky"))
        succeeded, attempts = info.state == TaskState.SUCCESS, info.attempts
    else:
        coordinator = harness.coordinator()
        record, _ = coordinator.submit(harness.spec("flaky"))
        final = await harness.final(coordinator, record.task_id)
        succeeded, attempts = final.state == SUCCESS, final.attempts

    # Then the subclass was retried, as `except ConnectionError` would have caught it
    assert succeeded and attempts == 2


async def test_a_submission_can_override_the_registered_retries(harness: Any) -> None:
    def broken() -> None:
        raise RuntimeError("nope")

    harness.task(broken, retries=5, retry_backoff=0.01)
    coordinator = harness.coordinator()
    spec = harness.spec("broken")
    spec.retries = 0
    record, _ = coordinator.submit(spec)

    final = await harness.final(coordinator, record.task_id)

    assert final.attempts == 1 and final.state == FAILURE


async def test_wrong_arguments_are_never_retried_as_a_payload_problem_but_as_a_type_error(harness: Any) -> None:
    harness.task(lambda x: x, name="one_arg", retries=1, retry_backoff=0.01)
    coordinator = harness.coordinator()
    record, _ = coordinator.submit(harness.spec("one_arg"))  # missing x: a TypeError, retried once

    final = await harness.final(coordinator, record.task_id)

    assert final.state == FAILURE
    assert final.error.type == "TypeError"
    assert final.attempts == 2
