"""Task listings for operators: filters, newest-first paging, totals, TTL cut-off."""

from __future__ import annotations

from fastworker.controlplane import browse
from fastworker.controlplane.browse import MAX_PAGE, TaskFilter
from fastworker.controlplane.records import FAILURE, PENDING, RUNNING, SUCCESS, TaskRecord
from fastworker.protocol.v1 import admin_pb2, task_pb2

HIGH = task_pb2.PRIORITY_HIGH
NORMAL = task_pb2.PRIORITY_NORMAL


def record(
    task_id: str, *, queued_at: float, state: int = PENDING, name: str = "t", priority: int = NORMAL, worker: str = ""
) -> TaskRecord:
    rec = TaskRecord(task_pb2.TaskSpec(task_id=task_id, name=name), priority, queued_at)
    rec.state = state
    rec.worker = worker
    return rec


RECORDS = [
    record("a1", queued_at=1, name="add"),
    record("a2", queued_at=2, name="add", state=RUNNING, worker="w1"),
    record("b3", queued_at=3, name="mul", state=SUCCESS, worker="w2"),
    record("b4", queued_at=4, name="mul", state=FAILURE, priority=HIGH, worker="w1"),
    record("c5", queued_at=5, name="add", state=SUCCESS, worker="controlplane"),
]


def ids(records: list[TaskRecord]) -> list[str]:
    return [r.task_id for r in records]


def test_an_empty_filter_lists_everything_newest_first_with_the_total() -> None:
    found, total = browse.page(RECORDS, TaskFilter(), 0, 10)
    assert ids(found) == ["c5", "b4", "b3", "a2", "a1"] and total == 5


def test_each_filter_field_narrows_and_they_combine() -> None:
    assert ids(browse.page(RECORDS, TaskFilter(name="mul"), 0, 10)[0]) == ["b4", "b3"]
    assert ids(browse.page(RECORDS, TaskFilter(states=frozenset({SUCCESS, FAILURE})), 0, 10)[0]) == ["c5", "b4", "b3"]
    assert ids(browse.page(RECORDS, TaskFilter(priority=HIGH), 0, 10)[0]) == ["b4"]
    assert ids(browse.page(RECORDS, TaskFilter(worker="w1"), 0, 10)[0]) == ["b4", "a2"]
    assert ids(browse.page(RECORDS, TaskFilter(task_id_prefix="b"), 0, 10)[0]) == ["b4", "b3"]
    assert ids(browse.page(RECORDS, TaskFilter(name="add", worker="w1", states=frozenset({RUNNING})), 0, 10)[0]) == [
        "a2"
    ]
    assert browse.page(RECORDS, TaskFilter(name="nothing"), 0, 10) == ([], 0)


def test_pages_are_slices_of_the_newest_first_order_and_the_total_counts_all_matches() -> None:
    assert ids(browse.page(RECORDS, TaskFilter(), 0, 2)[0]) == ["c5", "b4"]
    found, total = browse.page(RECORDS, TaskFilter(), 2, 2)
    assert ids(found) == ["b3", "a2"] and total == 5
    assert browse.page(RECORDS, TaskFilter(), 10, 2) == ([], 5)


def test_the_page_size_defaults_when_zero_and_is_capped() -> None:
    many = [record(f"t{n}", queued_at=n) for n in range(MAX_PAGE + 100)]
    assert len(browse.page(many, TaskFilter(), 0, 0)[0]) == browse.DEFAULT_PAGE
    found, total = browse.page(many, TaskFilter(), 0, 10_000)
    assert len(found) == MAX_PAGE and total == MAX_PAGE + 100


def test_a_filter_reads_its_request_and_unspecified_priority_matches_all() -> None:
    request = admin_pb2.TasksRequest(states=[task_pb2.TASK_STATE_FAILURE], name="mul", worker="w1", task_id_prefix="b")
    task_filter = TaskFilter.from_request(request)
    assert ids(browse.page(RECORDS, task_filter, 0, 10)[0]) == ["b4"]
    assert TaskFilter.from_request(admin_pb2.TasksRequest()) == TaskFilter()


def test_known_records_lists_live_tasks_then_finished_ones_within_their_ttl() -> None:
    live = [record("live", queued_at=9)]
    old = record("old", queued_at=1, state=SUCCESS)
    old.finished_at = 10.0
    fresh = record("fresh", queued_at=2, state=SUCCESS)
    fresh.finished_at = 100.0
    assert ids(list(browse.known_records(live, [old, fresh], ttl_cutoff=50.0))) == ["live", "fresh"]


def test_text_matches_an_id_prefix_or_a_part_of_the_name_in_any_case() -> None:
    assert ids(browse.page(RECORDS, TaskFilter(text="b"), 0, 10)[0]) == ["b4", "b3"]  # id prefix
    assert ids(browse.page(RECORDS, TaskFilter(text="ul"), 0, 10)[0]) == ["b4", "b3"]  # part of "mul"
    upper = TaskFilter.from_request(admin_pb2.TasksRequest(text="DD"))
    assert ids(browse.page(RECORDS, upper, 0, 10)[0]) == ["c5", "a2", "a1"]
