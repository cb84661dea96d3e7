"""The one rule for a task's effective options (``fastworker.worker.policy``)."""

from __future__ import annotations

import time

import pytest

from fastworker.client.task import Priority, TaskOptions, task
from fastworker.protocol.v1 import task_pb2
from fastworker.worker.executor import MAX_ERROR_BASE_TYPES, MAX_ERROR_TYPE, base_type_names, bound_error, run_sync
from fastworker.worker.policy import (
    DEFAULT_POLICY,
    MAX_UNIX_SECONDS,
    TaskPolicy,
    definition_policy,
    effective_policy,
    options_policy,
    spec_problem,
)

DEFINED = TaskPolicy(retries=3, backoff=1.0, backoff_max=8.0, timeout=30.0, soft_timeout=20.0, priority=2)


def test_the_submission_wins_where_it_says_something_and_the_definition_elsewhere() -> None:
    spec = task_pb2.TaskSpec(name="t", retries=0, timeout=5.0, priority=task_pb2.PRIORITY_CRITICAL)
    policy = effective_policy(spec, DEFINED)
    assert (policy.retries, policy.timeout, policy.soft_timeout) == (0, 5.0, 20.0)
    assert policy.priority == task_pb2.PRIORITY_CRITICAL
    assert (policy.backoff, policy.backoff_max) == (1.0, 8.0)


def test_a_spec_that_says_nothing_gets_the_definition_itself() -> None:
    assert effective_policy(task_pb2.TaskSpec(name="t"), DEFINED) is DEFINED


def test_a_resolved_spec_is_enforced_as_sent_even_where_it_says_no_limit() -> None:
    # Given a worker whose own definition has limits, and a spec the control plane resolved to none
    spec = task_pb2.TaskSpec(name="t")
    DEFAULT_POLICY.write_limits(spec)
    policy = effective_policy(spec, DEFINED)
    assert (policy.timeout, policy.soft_timeout, policy.retries) == (0.0, 0.0, 0)


def test_a_definition_and_the_decorator_options_give_the_same_policy() -> None:
    options = TaskOptions(priority=Priority.HIGH, retries=2, retry_backoff=0.5, timeout=9.0, retry_on=(KeyError,))
    definition = task_pb2.TaskDefinition(
        name="t",
        priority=Priority.HIGH.to_wire(),
        retries=2,
        retry_backoff=0.5,
        retry_backoff_max=600.0,
        timeout=9.0,
        retry_on=["KeyError"],
    )
    assert options_policy(options) == definition_policy(definition)
    assert definition_policy(None) is DEFAULT_POLICY


@pytest.mark.parametrize(
    ("attempts", "error_type", "asked", "allowed"),
    [
        (1, "KeyError", False, True),
        (1, "ValueError", False, False),  # not in retry_on
        (1, "ValueError", True, True),  # Retry bypasses retry_on
        (3, "KeyError", False, False),  # 1 + 2 retries used up
        (3, "KeyError", True, False),  # Retry does not bypass the count
        (1, "PayloadError", True, False),  # never retriable
        (1, "TaskCancelled", False, False),
    ],
)
def test_which_failures_are_retried(attempts: int, error_type: str, asked: bool, allowed: bool) -> None:
    policy = TaskPolicy(retries=2, retry_on=frozenset({"KeyError"}))
    assert policy.allows_retry(attempts, error_type, asked) is allowed


def test_backoff_doubles_with_jitter_up_to_its_cap_and_an_asked_delay_wins() -> None:
    policy = TaskPolicy(retries=10, backoff=1.0, backoff_max=5.0)
    assert 0.8 <= policy.retry_delay(1) <= 1.2
    assert 1.6 <= policy.retry_delay(2) <= 2.4
    assert policy.retry_delay(9) <= 5.0
    assert policy.retry_delay(1, asked_delay=7.0) == 7.0


@pytest.mark.parametrize("asked", [float("nan"), float("inf"), float("-inf"), -5.0])
def test_an_asked_delay_that_is_no_number_of_seconds_gets_the_backoff(asked: float) -> None:
    policy = TaskPolicy(retries=10, backoff=1.0, backoff_max=5.0)
    assert 0.8 <= policy.retry_delay(1, asked_delay=asked) <= 1.2  # a NaN due time stalled every schedule


def test_an_asked_delay_past_the_year_9999_ends_there() -> None:
    delay = TaskPolicy(retries=1).retry_delay(1, asked_delay=1e300)
    assert 0 < time.time() + delay <= MAX_UNIX_SECONDS + 1


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("timeout", -5.0, "timeout must be a finite number"),
        ("timeout", float("nan"), "timeout must be a finite number"),
        ("timeout", float("inf"), "timeout must be a finite number"),
        ("soft_timeout", float("nan"), "soft_timeout must be a finite number"),
        ("eta", float("inf"), "eta must be Unix seconds"),
        ("eta", 1e300, "eta must be Unix seconds"),
        ("expires", float("-inf"), "expires must be Unix seconds"),
        ("retries", -1, "retries must be 0 or more"),
    ],
)
def test_a_submission_with_a_time_limit_or_time_no_run_could_honour_is_named(
    field: str, value: float, named: str
) -> None:
    spec = task_pb2.TaskSpec(task_id="t", name="n")
    setattr(spec, field, value)
    problem = spec_problem(spec)
    assert problem is not None and problem.startswith(named), problem


def test_ordinary_submissions_have_no_problem() -> None:
    assert spec_problem(task_pb2.TaskSpec(task_id="t", name="n")) is None
    assert spec_problem(task_pb2.TaskSpec(task_id="t", name="n", timeout=30, soft_timeout=20, retries=0)) is None
    assert spec_problem(task_pb2.TaskSpec(task_id="t", name="n", eta=1_900_000_000.5, expires=1_900_000_100)) is None


def test_retry_on_names_a_type_or_any_of_its_bases_as_except_would() -> None:
    policy = TaskPolicy(retries=2, retry_on=frozenset({"ConnectionError"}))
    assert policy.allows_retry(1, "ConnectionResetError", False, base_type_names(ConnectionResetError))
    assert policy.allows_retry(1, "ConnectionError", False)
    assert not policy.allows_retry(1, "TimeoutError", False, base_type_names(TimeoutError))  # an OSError, not that one
    assert not policy.allows_retry(1, "ConnectionResetError", False)  # an older worker sends no bases
    assert TaskPolicy(retries=1).retry_on_matches("Anything", ())


def test_a_raised_exception_s_failure_carries_its_bases_nearest_first_and_bounded() -> None:
    def reset() -> None:
        raise ConnectionResetError("reset")

    outcome = run_sync(task(reset, name="test_policy_reset_bases"), (), {})
    assert outcome.error is not None
    assert list(outcome.error.base_types) == ["ConnectionError", "OSError", "Exception", "BaseException"]

    error = task_pb2.TaskError(type="Odd", base_types=["x" * 500] * 100)
    bound_error(error)
    assert len(error.base_types) == MAX_ERROR_BASE_TYPES and all(
        len(name) == MAX_ERROR_TYPE for name in error.base_types
    )


def test_backoff_at_its_cap_is_spread_below_the_cap_not_piled_on_it() -> None:
    policy = TaskPolicy(retries=9, backoff=0.2, backoff_max=0.4)
    delays = [policy.retry_delay(4) for _ in range(400)]
    assert all(0.32 <= delay <= 0.4 for delay in delays)
    # Clamped after the jitter, about half landed exactly on the cap; spread below it, about 1 in 80 lands
    # within 1 ms of it (0.001 / 0.08).
    assert sum(delay > 0.399 for delay in delays) < 40
