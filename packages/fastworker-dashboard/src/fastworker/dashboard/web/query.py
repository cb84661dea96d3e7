"""Task-list filters and pagination as query parameters: parsed and validated once, turned back into links."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from fastworker.client import Priority, TaskState

#: Page size when none is given, and the sizes offered in the page.
DEFAULT_LIMIT = 50
LIMIT_CHOICES = (25, 50, 100, 200)
#: The control plane's cap on one page.
MAX_LIMIT = 500


class BadQuery(ValueError):
    """A query parameter has a value the dashboard cannot use (answered with 400 / 422)."""


def _int(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be an integer, not {raw!r}") from None


@dataclass(frozen=True)
class TaskFilters:
    """What ``/tasks`` shows: filters (empty = any) and the page window."""

    states: tuple[TaskState, ...] = ()
    name: str = ""
    priority: Priority | None = None
    worker: str = ""
    search: str = ""
    offset: int = 0
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_query(cls, params: QueryParams) -> TaskFilters:
        """Parse ``state`` (repeatable, or comma-separated), ``name``, ``priority``, ``worker``, ``search``, ``offset``, ``limit``.

        Raises:
            BadQuery: an unknown state or priority, or a non-integer offset or limit.
        """
        states: list[TaskState] = []
        for raw in params.getlist("state"):
            for part in raw.split(","):
                part = part.strip().upper()
                if not part:
                    continue
                try:
                    state = TaskState(part)
                except ValueError:
                    known = ", ".join(s.value for s in TaskState)
                    raise BadQuery(f"unknown state {part!r}: expected one of {known}") from None
                if state not in states:
                    states.append(state)
        priority_raw = params.get("priority", "").strip()
        try:
            priority = Priority.parse(priority_raw) if priority_raw else None
        except ValueError as exc:
            raise BadQuery(str(exc)) from None
        offset = _int(params, "offset", 0)
        limit = _int(params, "limit", DEFAULT_LIMIT)
        if offset < 0:
            raise BadQuery("offset cannot be negative")
        if limit < 1:
            raise BadQuery("limit must be at least 1")
        return cls(
            states=tuple(states),
            name=params.get("name", "").strip(),
            priority=priority,
            worker=params.get("worker", "").strip(),
            search=params.get("search", "").strip(),
            offset=offset,
            limit=min(limit, MAX_LIMIT),
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Client.list_tasks``."""
        return {
            "states": self.states,
            "name": self.name,
            "priority": self.priority,
            "worker": self.worker,
            "search": self.search,
            "offset": self.offset,
            "limit": self.limit,
        }

    def pairs(self) -> list[tuple[str, str]]:
        """The non-default filters as query pairs (the page window included when not the default)."""
        out: list[tuple[str, str]] = [("state", s.value) for s in self.states]
        for key, value in (("name", self.name), ("worker", self.worker), ("search", self.search)):
            if value:
                out.append((key, value))
        if self.priority is not None:
            out.append(("priority", self.priority.value))
        if self.offset:
            out.append(("offset", str(self.offset)))
        if self.limit != DEFAULT_LIMIT:
            out.append(("limit", str(self.limit)))
        return out

    def query_string(self, **changes: Any) -> str:
        """This filter set (with ``changes`` applied) as an urlencoded query string, without ``?``."""
        return urlencode((replace(self, **changes) if changes else self).pairs())

    def with_state(self, state: TaskState) -> str:
        """The query string that shows only ``state`` (the first page, other filters kept)."""
        return self.query_string(states=(state,), offset=0)

    @property
    def active(self) -> bool:
        """True when any filter (not just the page window) is set."""
        return bool(self.states or self.name or self.priority or self.worker or self.search)


def page_links(filters: TaskFilters, total: int) -> Mapping[str, str | None]:
    """Query strings for the previous and next pages (None where there is no such page)."""
    previous = filters.query_string(offset=max(0, filters.offset - filters.limit)) if filters.offset > 0 else None
    following = filters.query_string(offset=filters.offset + filters.limit)
    return {"prev": previous, "next": following if filters.offset + filters.limit < total else None}


def choices(values: Sequence[str]) -> list[str]:
    """Sorted unique non-empty strings, for datalists."""
    return sorted({v for v in values if v})
