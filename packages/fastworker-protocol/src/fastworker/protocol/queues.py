"""Named queues: the one rule for what a queue name may be, shared by clients, workers and the control plane.

A task waits in one named queue (``TaskSpec.queue``; empty on the wire means the task's default,
and a task without one is in :data:`DEFAULT_QUEUE`). Workers and the control plane's own slots
serve a list of queues. Names are short and printable so that they fit a metric label, a CLI
column and a log line unquoted.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_QUEUE", "MAX_QUEUE_NAME", "MAX_QUEUES", "QueueNameError", "check_queue_name", "parse_queues"]

#: The queue of a task that names none, and what a worker serves unless told otherwise.
DEFAULT_QUEUE = "default"
#: Longest queue name, in characters.
MAX_QUEUE_NAME = 64
#: Most queues one worker (or the control plane's slots) may serve.
MAX_QUEUES = 64

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+-]*")


class QueueNameError(ValueError):
    """A queue name (or list of them) that is not allowed; the message names it."""


def check_queue_name(name: object) -> str:
    """``name`` if it is a valid queue name: 1 to 64 of letters, digits and ``_ . : @ + -``, not starting with a punctuation mark.

    Raises:
        QueueNameError: it is not a string, or not such a name.
    """
    if not isinstance(name, str):
        raise QueueNameError(f"a queue name must be a str, not {type(name).__qualname__}")
    if len(name) > MAX_QUEUE_NAME or _NAME.fullmatch(name) is None:
        raise QueueNameError(
            f"bad queue name {name!r}: use 1 to {MAX_QUEUE_NAME} letters, digits and _ . : @ + - "
            "(starting with a letter, digit or _)"
        )
    return name


def parse_queues(text: str) -> tuple[str, ...]:
    """The queues a list separated by commas or spaces names (``"reports,default"``), in order, without repeats.

    Raises:
        QueueNameError: the list is empty, too long, or names a bad queue.
    """
    names: list[str] = []
    for part in re.split(r"\s*,\s*|\s+", text.strip()):
        name = check_queue_name(part.strip())
        if name not in names:
            names.append(name)
    if len(names) > MAX_QUEUES:
        raise QueueNameError(f"at most {MAX_QUEUES} queues, got {len(names)}")
    return tuple(names)
