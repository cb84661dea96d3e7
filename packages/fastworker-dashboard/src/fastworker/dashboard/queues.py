"""Named queues as the operator views show them: ``Client.queues()``'s flat list grouped per queue.

The control plane lists one entry per named queue and priority level. The web panel and
``fastworker-top`` both show the first queue ("default") with every level, so that every level's
paused state and actions stay in view, and the other queues with only the levels tasks wait in,
so that a dozen queues do not bury the panel in empty rows. Pausing and purging act on a level in
every queue, so their confirmations need the level's total across queues (:func:`level_depths`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastworker.protocol.queues import DEFAULT_QUEUE

__all__ = ["QueueGroup", "QueueLevel", "group_queues", "level_depths", "queue_name"]


@dataclass(frozen=True)
class QueueLevel:
    """One priority level of one named queue."""

    queue: str
    priority: str
    depth: int
    oldest_age: float
    #: Paused is per level (in every queue), repeated here so each row can show it.
    paused: bool


@dataclass(frozen=True)
class QueueGroup:
    """One named queue: who serves it and the levels shown for it."""

    name: str
    #: Subworkers serving it, plus one for the control plane's own slots; None when not reported.
    servers: int | None
    #: The levels shown: all of them for the first queue, else the ones tasks wait in.
    levels: tuple[QueueLevel, ...]
    #: Tasks waiting in it, at every level.
    depth: int
    #: Empty levels left out of ``levels``.
    hidden: int

    @property
    def unserved(self) -> bool:
        """Tasks wait here and nothing serves the queue: they wait until a worker serving it connects."""
        return self.servers == 0 and self.depth > 0

    @property
    def idle(self) -> bool:
        """Nothing waits and no level is shown (a served queue with an empty backlog)."""
        return not self.levels


def queue_name(entry: Mapping[str, Any]) -> str:
    """The entry's queue (``"default"`` for an entry from a control plane that predates named queues)."""
    return str(entry.get("queue") or DEFAULT_QUEUE)


def _int(value: Any) -> int:
    return int(value or 0)


def group_queues(queues: Iterable[Mapping[str, Any]], *, every_level: bool = False) -> list[QueueGroup]:
    """The entries grouped per named queue, in the order given ("default" first, as the control plane lists them).

    Args:
        queues: ``Client.queues()``.
        every_level: Show the empty levels of every queue too (not only the first queue's).
    """
    order: list[str] = []
    entries: dict[str, list[Mapping[str, Any]]] = {}
    for entry in queues:
        name = queue_name(entry)
        if name not in entries:
            order.append(name)
            entries[name] = []
        entries[name].append(entry)
    groups: list[QueueGroup] = []
    for index, name in enumerate(order):
        levels = [
            QueueLevel(
                queue=name,
                priority=str(e.get("priority", "")),
                depth=_int(e.get("depth")),
                oldest_age=float(e.get("oldest_age") or 0.0),
                paused=bool(e.get("paused", False)),
            )
            for e in entries[name]
        ]
        full = every_level or index == 0 or name == DEFAULT_QUEUE
        shown = tuple(level for level in levels if full or level.depth > 0)
        served = [e["servers"] for e in entries[name] if e.get("servers") is not None]
        groups.append(
            QueueGroup(
                name=name,
                servers=_int(served[0]) if served else None,
                levels=shown,
                depth=sum(level.depth for level in levels),
                hidden=len(levels) - len(shown),
            )
        )
    return groups


def level_depths(queues: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Tasks waiting per priority level across every queue (what purging that level cancels)."""
    totals: dict[str, int] = {}
    for entry in queues:
        level = str(entry.get("priority", ""))
        totals[level] = totals.get(level, 0) + _int(entry.get("depth"))
    return totals
