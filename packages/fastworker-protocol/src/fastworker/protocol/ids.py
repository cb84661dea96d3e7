"""What a task id may be: one rule for the client that picks one and the control plane that accepts it."""

from __future__ import annotations

__all__ = ["MAX_TASK_ID_LENGTH", "task_id_problem"]

#: Longest task id accepted, in characters.
MAX_TASK_ID_LENGTH = 200


def task_id_problem(task_id: str) -> str | None:
    """Why ``task_id`` cannot name a task, or None.

    1 to 200 printable characters, no ``/``, and not ``.`` or ``..``: an id is shown in logs and
    terminals, and is a path segment of the dashboard's URLs (``/tasks/ID``), which a browser
    would resolve away.
    """
    if not task_id or len(task_id) > MAX_TASK_ID_LENGTH:
        return f"task_id must be 1 to {MAX_TASK_ID_LENGTH} characters"
    if not task_id.isprintable() or "/" in task_id or task_id in (".", ".."):
        return f"task_id must be printable characters without '/', and not '.' or '..' (got {task_id!r})"
    return None
