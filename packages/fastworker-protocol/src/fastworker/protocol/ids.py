"""What a task id or a worker id may be: one rule for the side that picks one and the control plane that accepts it."""

from __future__ import annotations

__all__ = ["MAX_SHOWN", "MAX_TASK_ID_LENGTH", "shown", "shown_id", "task_id_problem", "worker_id_problem"]

#: Longest task id accepted, in characters.
MAX_TASK_ID_LENGTH = 200
#: Most characters of a value from a request that an error message quotes (a peer's 100,000-character
#: name is not echoed back whole).
MAX_SHOWN = 100


def shown(value: str) -> str:
    """A value from a request as an error message quotes it: its ``repr``, cut to :data:`MAX_SHOWN` characters."""
    if len(value) <= MAX_SHOWN:
        return repr(value)
    return f"{value[:MAX_SHOWN]!r}... ({len(value)} characters)"


def shown_id(task_id: str) -> str:
    """An id as an error message shows it: as it is when it is a plain one (a UUID), else :func:`shown`."""
    if task_id and len(task_id) <= MAX_SHOWN and task_id.isprintable() and " " not in task_id:
        return task_id
    return shown(task_id)


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
