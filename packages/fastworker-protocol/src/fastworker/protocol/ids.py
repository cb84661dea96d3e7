"""What a task id or a worker id may be: one rule for the side that picks one and the control plane that accepts it."""

from __future__ import annotations

import os
from collections import deque

__all__ = [
    "LOCAL_WORKER_ID",
    "MAX_SHOWN",
    "MAX_TASK_ID_LENGTH",
    "new_task_id",
    "shown",
    "shown_id",
    "task_id_problem",
    "worker_id_problem",
]

#: Worker id the control plane reports for the tasks it runs itself; no subworker may take it, so
#: its runs are never mistaken for the control plane's (``fastworker list --worker controlplane``).
LOCAL_WORKER_ID = "controlplane"
#: Longest task id accepted, in characters.
MAX_TASK_ID_LENGTH = 200
#: Most characters of a value from a request that an error message quotes (a peer's 100,000-character
#: name is not echoed back whole).
MAX_SHOWN = 100


#: Ids drawn at once by :func:`new_task_id`.
IDS_PER_DRAW = 256
#: Drawn ids not handed out yet (``popleft`` and ``extend`` are atomic: threads never get the same one).
_drawn: deque[str] = deque()
# A forked child must not hand out the ids its parent will: it draws its own.
os.register_at_fork(after_in_child=_drawn.clear)


def new_task_id() -> str:
    """A fresh random id, in the form ``str(uuid.uuid4())`` gives (version 4, from ``os.urandom``).

    Drawn :data:`IDS_PER_DRAW` at a time: about a quarter of ``uuid.uuid4()``'s cost, which was a
    tenth of a client's CPU per submitted task.
    """
    while True:
        try:
            return _drawn.popleft()
        except IndexError:
            _drawn.extend(_draw(IDS_PER_DRAW))


def _draw(count: int) -> list[str]:
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes((byte & 0x0F) | 0x40 for byte in raw[6::16])  # version 4
    raw[8::16] = bytes((byte & 0x3F) | 0x80 for byte in raw[8::16])  # the RFC 4122 variant
    text = raw.hex()
    return [
        f"{text[i : i + 8]}-{text[i + 8 : i + 12]}-{text[i + 12 : i + 16]}-{text[i + 16 : i + 20]}-{text[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


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
    """Why ``worker_id`` cannot name a subworker, or None (see :func:`_id_problem`; :data:`LOCAL_WORKER_ID` is reserved)."""
    if worker_id == LOCAL_WORKER_ID:
        return f"worker_id {LOCAL_WORKER_ID!r} is reserved: it labels the tasks the control plane runs itself"
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
