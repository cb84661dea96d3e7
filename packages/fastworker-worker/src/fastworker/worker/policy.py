"""A task's effective policy (retries, backoff, retry_on, time limits, priority, queue, limits): one rule for every path.

The rule, documented in docs/retries-and-time-limits.md ("Which definition wins"):

1. What the submission says, where it says it (``retries``, ``timeout``, ``soft_timeout``,
   ``priority``, ``queue``; ``expires`` and ``unique_key`` are the submission's alone; ``rate_limit`` and
   ``max_concurrency`` hold per task name, so a submission cannot give them, and an operator's
   run-time ``set_limits`` beats the definition's).
2. Otherwise the task's definition as the control plane resolves it: its own registry's when it
   loaded the task, else the definition of the earliest-registered connected subworker that runs it.
3. Otherwise the built-in defaults (no retries, no time limits, normal priority, the
   ``"default"`` queue, results kept for the control plane's ``--result-ttl``).

The control plane resolves the policy and sends the resolved limits with every dispatch
(``TaskSpec.policy_resolved``); a subworker enforces what it is sent and falls back to its own
definition only for a spec that was not resolved. The eager client applies the same rule with its
one definition. So where a task ran (a local slot, a subworker, after a journal replay, eagerly)
never changes how often it is retried or how long it may run.

Lives in the worker package, the lowest layer shared by everything that runs tasks.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

from fastworker.client.options import LATEST_UNIX_SECONDS
from fastworker.client.task import TaskOptions
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.protocol.v1 import task_pb2

#: Default cap of the retry delay in seconds.
DEFAULT_RETRY_BACKOFF_MAX = 600.0
#: Errors another attempt cannot fix: never retried.
NOT_RETRIABLE = frozenset({"UnknownTask", "PayloadError", "TaskCancelled"})
#: How long a uniqueness key holds when the task's definition gives no ``unique_ttl``, in seconds.
DEFAULT_UNIQUE_TTL = 3600.0
#: Relative jitter applied to backoff delays, so that a burst of failures does not return at once.
BACKOFF_JITTER = 0.2


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    """The effective options of one task run.

    Attributes:
        retries: Re-runs allowed after the first attempt.
        backoff: First retry delay in seconds, doubled per retry.
        backoff_max: Upper bound of a retry delay in seconds.
        retry_on: Error type names that qualify for a retry; empty means any error.
        timeout: Hard time limit in seconds; 0 means none.
        soft_timeout: Soft time limit in seconds; 0 means none.
        priority: The wire priority level the task is queued at when the submission names none.
        unique: A submission with the same arguments as a live one is answered with that one's id.
        unique_ttl: Longest a uniqueness key holds, in seconds.
        rate_limit: Fleet-wide start rate of the name (``"50/s"``); empty: none.
        max_concurrency: Most tasks of the name running at once; 0: no limit.
        queue: The named queue the task waits in.
        result_ttl: Seconds its final result is kept; 0: the control plane's ``--result-ttl``.
    """

    retries: int = 0
    backoff: float = 0.0
    backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX
    retry_on: frozenset[str] = frozenset()
    timeout: float = 0.0
    soft_timeout: float = 0.0
    priority: int = task_pb2.PRIORITY_NORMAL
    unique: bool = False
    unique_ttl: float = DEFAULT_UNIQUE_TTL
    rate_limit: str = ""
    max_concurrency: int = 0
    queue: str = DEFAULT_QUEUE
    result_ttl: float = 0.0

    def allows_retry(self, attempts: int, error_type: str, asked: bool, base_types: Iterable[str] = ()) -> bool:
        """True if a failed run (the ``attempts``-th) gets another one.

        ``asked``: the task raised ``Retry`` itself, which bypasses ``retry_on`` but not the count.
        ``base_types``: the error's base class names (``TaskError.base_types``), see :meth:`retry_on_matches`.
        """
        if error_type in NOT_RETRIABLE or attempts >= 1 + self.retries:
            return False
        return asked or self.retry_on_matches(error_type, base_types)

    def retry_on_matches(self, error_type: str, base_types: Iterable[str] = ()) -> bool:
        """True if ``retry_on`` lets this error retry: it is empty, or names the type or one of its bases (as ``except``)."""
        retry_on = self.retry_on
        return not retry_on or error_type in retry_on or not retry_on.isdisjoint(base_types)

    def final_retry_error(self, error: task_pb2.TaskError) -> None:
        """Say, in a ``Retry`` that ended a task, that no retry was left (it read as if one were coming)."""
        if error.type == "Retry":
            error.message = f"{error.message or 'retry requested'}, but no retry is left (retries={self.retries})"

    def retry_delay(self, attempts: int, asked_delay: float | None = None) -> float:
        """Seconds until the next run: the delay the task asked for, else the jittered backoff.

        ``Retry()`` without a delay (``asked_delay`` 0) waits the backoff, as a failure does; so does
        a delay that is no number of seconds (NaN, infinite or negative: ``Retry`` refuses them, a
        hand-made outcome may not), and a delay past the year 9999 is cut to end there.
        """
        if asked_delay and math.isfinite(asked_delay) and asked_delay > 0:
            return min(asked_delay, max(0.0, MAX_UNIX_SECONDS - time.time()))
        delay = self.backoff_delay(attempts)
        # Never past the cap, and spread below it: clamped after the jitter, half the retries of a
        # burst at the cap came back in the same millisecond.
        return random.uniform(delay * (1 - BACKOFF_JITTER), min(delay * (1 + BACKOFF_JITTER), self.backoff_max))

    def backoff_delay(self, attempts: int) -> float:
        """The backoff after the ``attempts``-th run, before jitter: ``backoff`` doubled per retry, capped."""
        return min(self.backoff * 2.0 ** max(0, attempts - 1), self.backoff_max)

    def retries_left(self, attempt: int) -> int:
        """Retries still allowed after the ``attempt``-th run (the count ``allows_retry`` applies)."""
        return max(0, 1 + self.retries - attempt)

    @property
    def run_limits(self) -> tuple[int, float, float]:
        """(retries, timeout, soft_timeout): what the executing side enforces, and all ``write_limits`` writes."""
        return self.retries, self.timeout, self.soft_timeout

    def write_limits(self, spec: task_pb2.TaskSpec) -> None:
        """Put the resolved retries and time limits into a spec about to be dispatched."""
        spec.timeout = self.timeout
        spec.soft_timeout = self.soft_timeout
        spec.retries = self.retries
        spec.policy_resolved = True


#: The policy of a task nobody defines (a name the executing side does not know).
DEFAULT_POLICY = TaskPolicy()


def definition_policy(definition: task_pb2.TaskDefinition | None) -> TaskPolicy:
    """The policy a task definition gives (rule 2), or the defaults without one (rule 3)."""
    if definition is None:
        return DEFAULT_POLICY
    return TaskPolicy(
        retries=definition.retries,
        backoff=definition.retry_backoff,
        backoff_max=definition.retry_backoff_max or DEFAULT_RETRY_BACKOFF_MAX,
        retry_on=frozenset(definition.retry_on),
        timeout=definition.timeout,
        soft_timeout=definition.soft_timeout,
        priority=definition.priority or task_pb2.PRIORITY_NORMAL,
        unique=definition.unique,
        unique_ttl=definition.unique_ttl or DEFAULT_UNIQUE_TTL,
        rate_limit=definition.rate_limit,
        max_concurrency=definition.max_concurrency,
        queue=definition.queue or DEFAULT_QUEUE,
        result_ttl=definition.result_ttl,
    )


@functools.lru_cache(maxsize=4096)
def options_policy(options: TaskOptions) -> TaskPolicy:
    """The policy a ``@task`` definition in this process gives (rule 2); callers keep it per name (options never change)."""
    return TaskPolicy(
        retries=options.retries,
        backoff=options.retry_backoff,
        backoff_max=options.retry_backoff_max,
        retry_on=frozenset(options.retry_on_names),
        timeout=options.timeout or 0.0,
        soft_timeout=options.soft_timeout or 0.0,
        priority=options.priority.to_wire(),
        unique=options.unique,
        unique_ttl=options.unique_ttl or DEFAULT_UNIQUE_TTL,
        rate_limit=options.rate_limit or "",
        max_concurrency=options.max_concurrency or 0,
        queue=options.queue or DEFAULT_QUEUE,
        result_ttl=options.result_ttl or 0.0,
    )


#: Latest ``eta``/``expires`` a submission may give: the end of year 9999, in Unix seconds.
MAX_UNIX_SECONDS = LATEST_UNIX_SECONDS


def spec_problem(spec: task_pb2.TaskSpec) -> str | None:
    """What is wrong with a submission's own limits and times, or None (the control plane refuses it then).

    The client checks these before sending; a hand-made frame does not, and a negative or NaN time
    limit would leave a subworker's slot waiting on a run that never starts.
    """
    timeout, soft_timeout, eta, expires = spec.timeout, spec.soft_timeout, spec.eta, spec.expires
    if not (timeout or soft_timeout or eta or expires or spec.HasField("retries")):
        return None  # the common case, decided in a few reads
    for name, seconds in (("timeout", timeout), ("soft_timeout", soft_timeout)):
        if not math.isfinite(seconds) or seconds < 0:
            return f"{name} must be a finite number of seconds, 0 or more (0: none), got {seconds!r}"
    for name, when in (("eta", eta), ("expires", expires)):
        if not math.isfinite(when) or when < 0 or when > MAX_UNIX_SECONDS:
            return f"{name} must be Unix seconds between 0 and {MAX_UNIX_SECONDS:.0f} (0: none), got {when!r}"
    if spec.HasField("retries") and spec.retries < 0:
        return f"retries must be 0 or more, got {spec.retries}"
    return None


def effective_policy(spec: task_pb2.TaskSpec, defined: TaskPolicy) -> TaskPolicy:
    """The policy of one submission: its own values where it gives them (rule 1), else ``defined``.

    A spec the control plane already resolved carries every limit as given, 0 meaning none.
    """
    resolved = spec.policy_resolved
    if not (resolved or spec.timeout or spec.soft_timeout or spec.priority or spec.queue or spec.HasField("retries")):
        return defined  # the common case, decided in a few reads
    retries = spec.retries if spec.HasField("retries") else defined.retries
    timeout = spec.timeout if (resolved or spec.timeout) else defined.timeout
    soft_timeout = spec.soft_timeout if (resolved or spec.soft_timeout) else defined.soft_timeout
    priority = spec.priority or defined.priority
    queue = spec.queue or defined.queue
    if (retries, timeout, soft_timeout, priority, queue) == (
        defined.retries,
        defined.timeout,
        defined.soft_timeout,
        defined.priority,
        defined.queue,
    ):
        return defined
    return TaskPolicy(
        retries=retries,
        backoff=defined.backoff,
        backoff_max=defined.backoff_max,
        retry_on=defined.retry_on,
        timeout=timeout,
        soft_timeout=soft_timeout,
        priority=priority,
        unique=defined.unique,
        unique_ttl=defined.unique_ttl,
        rate_limit=defined.rate_limit,
        max_concurrency=defined.max_concurrency,
        queue=queue,
        result_ttl=defined.result_ttl,
    )
