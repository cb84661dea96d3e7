"""Filtered, paged task listings for operators (the admin API's ``tasks`` query).

The control plane keeps no index by state or name: a listing scans the live tasks and the result
cache once, which is bounded by ``--max-queue`` plus ``--result-cache-size`` and costs a few
milliseconds per 10,000 records. Only the requested page is sorted (``heapq.nlargest``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastworker.controlplane.records import ResultCache, TaskRecord
from fastworker.protocol.v1 import admin_pb2, task_pb2

#: Most tasks one page may hold.
MAX_PAGE = 500
#: Page size when the request names none.
DEFAULT_PAGE = 50


@dataclass(frozen=True)
class TaskFilter:
    """What a listing keeps; empty fields match everything."""

    states: frozenset[int] = frozenset()
    name: str = ""
    priority: int = task_pb2.PRIORITY_UNSPECIFIED
    worker: str = ""
    task_id_prefix: str = ""
    #: Matches an id prefix or a case-insensitive part of the name (a search box); stored lower-cased.
    text: str = ""

    @classmethod
    def from_request(cls, request: admin_pb2.TasksRequest) -> TaskFilter:
        """The filter a TasksRequest asks for."""
        return cls(
            states=frozenset(int(s) for s in request.states),
            name=request.name,
            priority=int(request.priority),
            worker=request.worker,
            task_id_prefix=request.task_id_prefix,
            text=request.text.lower(),
        )

    def matches(self, record: TaskRecord) -> bool:
        """True if the record passes every set field."""
        return (
            (not self.states or record.visible_state in self.states)
            and (not self.name or record.name == self.name)
            and (not self.priority or record.priority == self.priority)
            and (not self.worker or record.worker == self.worker)
            and (not self.task_id_prefix or record.task_id.startswith(self.task_id_prefix))
            and (not self.text or record.task_id.lower().startswith(self.text) or self.text in record.name.lower())
        )


def page(
    records: Iterable[TaskRecord], task_filter: TaskFilter, offset: int, limit: int
) -> tuple[list[TaskRecord], int]:
    """The matching records ``offset``..``offset+limit`` newest first (by queue time), and the match count."""
    limit = page_size(limit)
    matching = [r for r in records if task_filter.matches(r)]
    newest = heapq.nlargest(offset + limit, matching, key=lambda r: r.queued_at)
    return newest[offset : offset + limit], len(matching)


def page_size(asked: int) -> int:
    """The page size a request for ``asked`` gets: the default for 0, at most :data:`MAX_PAGE`."""
    return min(asked or DEFAULT_PAGE, MAX_PAGE)


def known_records(
    active: Iterable[TaskRecord], finished: ResultCache | Iterable[TaskRecord], ttl_cutoff: float
) -> Iterator[TaskRecord]:
    """Live tasks, then finished ones still within their TTL (the two sets are disjoint by construction).

    ``ttl_cutoff`` is ``now`` minus the global TTL; a result cache is asked for its unexpired
    records at that ``now`` instead, so that a task's own ``result_ttl`` counts in listings too.
    """
    yield from active
    if isinstance(finished, ResultCache):
        yield from finished.unexpired(ttl_cutoff + finished.ttl)
        return
    for record in finished:
        if record.finished_at >= ttl_cutoff:
            yield record
