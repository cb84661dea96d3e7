"""What a task id or a worker id may be: one rule for the side that picks one and the control plane that accepts it."""

from __future__ import annotations

__all__ = ["MAX_TASK_ID_LENGTH", "task_id_problem", "worker_id_problem"]

#: Longest task id accepted, in characters.
MAX_TASK_ID_LENGTH = 200


def task_id_problem(task_id: str) -> str | None:
    """Why ``task_id`` cannot name a task, or None (see :func:`_id_problem`)."""
    return _id_problem(task_id, "task_id")


def worker_id_problem(worker_id: str) -> str | None:
    """Why ``worker_id`` cannot name a subworker, or None (see :func:`_id_problem`)."""
    return _id_problem(worker_id, "worker_id")


def _id_problem(value: str, what: str) -> str | None:
    """Why ``value`` cannot be an id, or None.

    1 to 200 printable characters, no ``/``, and not ``.`` or ``..``: an id is shown in logs and
    terminals (a newline or an escape sequence would forge lines there), and is a path segment of
    the dashboard's URLs (``/tasks/ID``, ``/workers/ID/drain``), which a browser would resolve away.
    """
    if not value or len(value) > MAX_TASK_ID_LENGTH:
        return f"{what} must be 1 to {MAX_TASK_ID_LENGTH} characters"
    if not value.isprintable() or "/" in value or value in (".", ".."):
        return f"{what} must be printable characters without '/', and not '.' or '..' (got {value!r})"
    return None
