"""One log line per task run, on the side that ran it (Celery's ``Task add[id] succeeded in 0.003s``).

Logged on the ``fastworker.task`` logger, with the run's ``task_id``, ``task_name``, ``worker_id``
and ``attempt`` as record fields (so ``--log-format json`` carries them):

- ``task NAME[ID] succeeded in 0.003 s`` (DEBUG: at INFO, one line per trivial task would cost
  a busy daemon about half its throughput; ``--log-level DEBUG`` shows them);
- ``task NAME[ID] retry in ~2 s after 0.010 s: ConnectionError: upstream down`` (INFO): the
  attempt failed, or raised ``Retry``, and the task's policy allows another (``~``: the backoff,
  before its jitter; the control plane decides the exact time);
- ``task NAME[ID] failed in 0.010 s: ValueError: bad data`` (WARNING): no retry follows;
- ``task NAME[ID] cancelled after 0.500 s`` (INFO).

A daemon logging at INFO or WARNING pays one level check per successful run for this.
"""

from __future__ import annotations

import logging

from fastworker.client.context import ContextSource, resolve
from fastworker.worker.executor import Outcome
from fastworker.worker.policy import TaskPolicy

__all__ = ["LOGGER_NAME", "log_outcome", "logs"]

#: The logger every per-task line goes to.
LOGGER_NAME = "fastworker.task"
#: Longest error message a line quotes; the task's info keeps all of it.
MAX_MESSAGE = 500

logger = logging.getLogger(LOGGER_NAME)


def logs(outcome: Outcome) -> bool:
    """Whether :func:`log_outcome` writes a line for this outcome at the configured level."""
    return logger.isEnabledFor(logging.DEBUG if outcome.succeeded else logging.WARNING)


def log_outcome(source: ContextSource, outcome: Outcome, policy: TaskPolicy | None = None) -> None:
    """Log how one run of a task ended (``policy``: the task's, to tell a retry from a final failure)."""
    if not logs(outcome):
        return
    context = resolve(source)
    fields = {
        "task_id": context.id,
        "task_name": context.name,
        "worker_id": context.worker_id,
        "attempt": context.attempt,
    }
    took = max(0.0, outcome.finished_at - outcome.started_at)
    if outcome.succeeded:
        logger.debug("task %s[%s] succeeded in %.3f s", context.name, context.id, took, extra=fields)
        return
    error = outcome.error
    error_type = error.type if error is not None else "Error"
    message = error.message if error is not None else ""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    if error_type == "TaskCancelled":
        logger.info("task %s[%s] cancelled after %.3f s", context.name, context.id, took, extra=fields)
        return
    asked = outcome.retry_delay is not None
    if policy is not None and policy.allows_retry(
        context.attempt, error_type, asked, error.base_types if error is not None else ()
    ):
        delay = f"{outcome.retry_delay:g}" if outcome.retry_delay else f"~{policy.backoff_delay(context.attempt):g}"
        logger.info(
            "task %s[%s] retry in %s s after %.3f s: %s: %s",
            context.name,
            context.id,
            delay,
            took,
            error_type,
            message,
            extra=fields,
        )
        return
    logger.warning(
        "task %s[%s] failed in %.3f s: %s: %s", context.name, context.id, took, error_type, message, extra=fields
    )
