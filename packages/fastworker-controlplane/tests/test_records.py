"""Task records fill TaskInfo messages; the result cache keeps finished records by recency (LRU) and age (TTL)."""

from __future__ import annotations

import pytest

from fastworker.controlplane.records import (
    CANCELLED,
    FAILURE,
    FINAL_STATES,
    PENDING,
    RETRYING,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    ResultCache,
    TaskRecord,
    record_bytes,
)
from fastworker.protocol.payload import decode_value, encode_arguments, encode_value
from fastworker.protocol.v1 import task_pb2


def finished(task_id: str, finished_at: float = 0.0, state: int = SUCCESS) -> TaskRecord:
    rec = TaskRecord(task_pb2.TaskSpec(task_id=task_id, name="t"), task_pb2.PRIORITY_NORMAL, 0.0)
    rec.state = state
    rec.finished_at = finished_at
    return rec


def ids(cache: ResultCache) -> list[str]:
    return [rec.task_id for rec in cache]


# ---------------------------------------------------------------------------------------- ResultCache


@pytest.mark.parametrize(("size", "ttl"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -5.0)])
def test_a_cache_refuses_a_size_below_one_or_a_ttl_that_is_not_positive(size: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="result"):
        ResultCache(size, ttl)


def test_adding_over_the_size_bound_evicts_the_least_recently_added() -> None:
    cache = ResultCache(max_size=2, ttl=100.0)
    for task_id in ("a", "b", "c"):
        cache.add(finished(task_id), now=0.0)

    assert ids(cache) == ["b", "c"]
    assert len(cache) == 2
    assert cache.evicted == 1
    assert cache.get("a", now=0.0) is None


def test_a_read_refreshes_recency_so_the_read_record_survives_eviction() -> None:
    # Given a full cache where "a" is the oldest
    cache = ResultCache(max_size=2, ttl=100.0)
    cache.add(finished("a"), now=0.0)
    cache.add(finished("b"), now=0.0)

    # When "a" is read, then a third record arrives
    assert cache.get("a", now=1.0) is not None
    cache.add(finished("c"), now=1.0)

    # Then "b", now the least recently used, is the one evicted
    assert ids(cache) == ["a", "c"]
    assert cache.get("b", now=1.0) is None


def test_peek_does_not_refresh_recency_nor_count_a_hit() -> None:
    cache = ResultCache(max_size=2, ttl=100.0)
    a = finished("a")
    cache.add(a, now=0.0)
    cache.add(finished("b"), now=0.0)

    assert cache.peek("a", now=1.0) is a
    assert cache.peek("zzz", now=1.0) is None
    assert (cache.hits, cache.misses) == (0, 0)

    cache.add(finished("c"), now=1.0)
    assert ids(cache) == ["b", "c"]  # "a" was still the least recently used


def test_get_counts_hits_and_misses() -> None:
    cache = ResultCache(max_size=10, ttl=100.0)
    rec = finished("a")
    cache.add(rec, now=0.0)

    assert cache.get("a", now=1.0) is rec
    assert cache.get("a", now=2.0) is rec
    assert cache.get("missing", now=2.0) is None

    assert cache.hits == 2
    assert cache.misses == 1


def test_get_of_a_record_older_than_the_ttl_drops_it_and_counts_a_miss() -> None:
    # Given a record that finished at t=100 with a 10 s TTL
    cache = ResultCache(max_size=10, ttl=10.0)
    cache.add(finished("a", finished_at=100.0), now=100.0)

    # Then at exactly the TTL it is still there
    assert cache.get("a", now=110.0) is not None

    # And past the TTL it is gone, counted as a miss and an eviction
    assert cache.get("a", now=110.5) is None
    assert len(cache) == 0
    assert cache.misses == 1
    assert cache.hits == 1
    assert cache.evicted == 1


def test_age_counts_from_when_the_task_finished_and_a_read_does_not_renew_it() -> None:
    cache = ResultCache(max_size=10, ttl=10.0)
    cache.add(finished("a", finished_at=100.0), now=105.0)

    assert cache.get("a", now=109.0) is not None  # a read at 109...
    assert cache.get("a", now=111.0) is None  # ...does not extend life past 110


def test_peek_hides_an_expired_record_without_dropping_it() -> None:
    cache = ResultCache(max_size=10, ttl=10.0)
    cache.add(finished("a", finished_at=0.0), now=0.0)

    assert cache.peek("a", now=11.0) is None
    assert len(cache) == 1
    assert cache.misses == 0


def test_expire_drops_every_record_older_than_the_ttl_and_says_how_many() -> None:
    cache = ResultCache(max_size=10, ttl=10.0)
    for task_id, finished_at in (("old-1", 0.0), ("old-2", 5.0), ("edge", 10.0), ("young", 15.0)):
        cache.add(finished(task_id, finished_at=finished_at), now=finished_at)

    assert cache.expire(now=20.0) == 2

    assert ids(cache) == ["edge", "young"]
    assert cache.evicted == 2
    assert cache.expire(now=20.0) == 0


def test_remove_takes_a_record_out_and_returns_it() -> None:
    cache = ResultCache(max_size=10, ttl=10.0)
    rec = finished("a")
    cache.add(rec, now=0.0)

    assert cache.remove("a") is rec
    assert cache.remove("a") is None
    assert len(cache) == 0
    assert cache.peek("a", now=0.0) is None


def test_adding_a_record_again_refreshes_it_without_duplicating_it() -> None:
    cache = ResultCache(max_size=2, ttl=100.0)
    a = finished("a")
    cache.add(a, now=0.0)
    cache.add(finished("b"), now=0.0)

    cache.add(a, now=1.0)
    cache.add(finished("c"), now=1.0)

    assert ids(cache) == ["a", "c"]


# ----------------------------------------------------------------------------------------- TaskRecord


def make_record(**spec_fields: object) -> TaskRecord:
    spec = task_pb2.TaskSpec(
        task_id="tid-1",
        name="emails.send",
        arguments=encode_arguments([1, "x"], {"flag": True}),
        **spec_fields,  # type: ignore[arg-type]
    )
    return TaskRecord(spec, task_pb2.PRIORITY_HIGH, queued_at=1000.0)


def test_a_new_record_is_pending_with_no_attempts_and_takes_its_eta_from_the_spec() -> None:
    rec = make_record(eta=1234.5)

    assert rec.state == PENDING
    assert rec.attempts == 0
    assert rec.task_id == "tid-1"
    assert rec.name == "emails.send"
    assert rec.eta == 1234.5
    assert rec.result is None and rec.error is None
    assert not rec.is_final


@pytest.mark.parametrize("state", [PENDING, SCHEDULED, RUNNING, RETRYING, SUCCESS, FAILURE, CANCELLED])
def test_is_final_holds_exactly_for_success_failure_and_cancelled(state: int) -> None:
    rec = make_record()
    rec.state = state

    assert rec.is_final == (state in (SUCCESS, FAILURE, CANCELLED))
    assert FINAL_STATES == {SUCCESS, FAILURE, CANCELLED}


def test_fill_info_copies_every_field_of_a_successful_record_with_its_result() -> None:
    # Given a record that ran and succeeded
    rec = make_record()
    rec.state = SUCCESS
    rec.attempts = 2
    rec.worker = "controlplane"
    rec.started_at = 1001.0
    rec.finished_at = 1002.0
    rec.result = encode_value({"ok": True})

    # When it fills a TaskInfo
    info = task_pb2.TaskInfo()
    rec.fill_info(info)

    # Then every field is there, the result decodes, and no error or arguments are set
    assert info.task_id == "tid-1"
    assert info.name == "emails.send"
    assert info.state == task_pb2.TASK_STATE_SUCCESS
    assert info.priority == task_pb2.PRIORITY_HIGH
    assert info.attempts == 2
    assert info.worker == "controlplane"
    assert (info.queued_at, info.started_at, info.finished_at) == (1000.0, 1001.0, 1002.0)
    assert decode_value(info.result) == {"ok": True}
    assert not info.HasField("error")
    assert not info.HasField("arguments")
    assert info.eta == 0.0


def test_fill_info_of_a_failed_record_carries_its_error_and_no_result() -> None:
    rec = make_record()
    rec.state = FAILURE
    rec.error = task_pb2.TaskError(type="ValueError", message="bad", traceback="Traceback ...")

    info = task_pb2.TaskInfo()
    rec.fill_info(info)

    assert info.state == task_pb2.TASK_STATE_FAILURE
    assert (info.error.type, info.error.message, info.error.traceback) == ("ValueError", "bad", "Traceback ...")
    assert not info.HasField("result")


def test_fill_info_includes_the_arguments_only_when_asked() -> None:
    rec = make_record()

    without, with_args = task_pb2.TaskInfo(), task_pb2.TaskInfo()
    rec.fill_info(without)
    rec.fill_info(with_args, with_arguments=True)

    assert not without.HasField("arguments")
    assert with_args.arguments == rec.spec.arguments
    assert decode_value(with_args.arguments) == [[1, "x"], {"flag": True}]


@pytest.mark.parametrize(
    ("state", "eta_shown"),
    [
        (SCHEDULED, True),
        (RETRYING, True),
        (PENDING, False),
        (RUNNING, False),
        (SUCCESS, False),
        (FAILURE, False),
        (CANCELLED, False),
    ],
)
def test_fill_info_reports_the_eta_only_while_scheduled_or_retrying(state: int, eta_shown: bool) -> None:
    rec = make_record(eta=5000.0)
    rec.state = state

    info = task_pb2.TaskInfo()
    rec.fill_info(info)

    assert info.eta == (5000.0 if eta_shown else 0.0)


def with_result(task_id: str, size: int) -> TaskRecord:
    record = finished(task_id)
    record.result = task_pb2.Payload(data=b"r" * size)
    return record


def test_a_byte_bound_evicts_the_least_recently_used_and_accounts_every_removal() -> None:
    cache = ResultCache(100, 60.0, max_bytes=11_000)
    for n in range(10):
        cache.add(with_result(f"t{n}", 3_000), now=0.0)
    assert ids(cache) == ["t7", "t8", "t9"]  # three of 3.6 kB fit in 11 kB
    assert cache.bytes == sum(record_bytes(r) for r in cache) <= 11_000
    cache.remove("t8")
    cache.expire(now=1_000.0)
    assert cache.bytes == 0 and len(cache) == 0


def test_the_newest_record_stays_even_when_it_alone_is_over_the_byte_bound() -> None:
    cache = ResultCache(100, 60.0, max_bytes=1_000)
    cache.add(with_result("small", 10), now=0.0)
    cache.add(with_result("huge", 50_000), now=0.0)
    assert ids(cache) == ["huge"]


# ------------------------------------------------------------------------------ the spec kept encoded


def test_a_compacted_record_gives_back_the_same_spec_and_its_encoding_unchanged() -> None:
    spec = task_pb2.TaskSpec(task_id="t1", name="app.add", arguments=encode_arguments((1, 2), {}), expires=9.0)
    record = TaskRecord(spec, task_pb2.PRIORITY_NORMAL, 0.0)
    record.compact()
    assert record.encoded_spec() == spec.SerializeToString()
    assert record.spec == spec and record.expires == 9.0 and record.name == "app.add"


def test_a_change_made_through_edit_spec_survives_compaction_and_reaches_the_encoding() -> None:
    record = TaskRecord(task_pb2.TaskSpec(task_id="t1", name="t"), task_pb2.PRIORITY_NORMAL, 0.0)
    record.compact()
    record.edit_spec().arguments.CopyFrom(encode_arguments((41,), {}))
    record.edit_spec().workflow_id = "wf"
    record.compact()
    assert task_pb2.TaskSpec.FromString(record.encoded_spec()).workflow_id == "wf"
    assert record.spec.arguments == encode_arguments((41,), {})
    info = task_pb2.TaskInfo()
    record.fill_info(info, with_arguments=True)
    assert info.workflow_id == "wf" and info.arguments == encode_arguments((41,), {})


def test_a_record_made_from_an_encoding_keeps_it_and_parses_only_when_read() -> None:
    spec = task_pb2.TaskSpec(task_id="t1", name="t", dependencies=task_pb2.Dependencies(task_ids=["a"]))
    encoded = spec.SerializeToString()
    record = TaskRecord(spec, task_pb2.PRIORITY_NORMAL, 0.0, encoded=encoded)
    assert record.encoded_spec() is encoded
    info = task_pb2.TaskInfo()
    record.fill_info(info)
    assert list(info.dependencies.task_ids) == ["a"]


def test_records_share_their_task_name_string() -> None:
    a, b = (TaskRecord(task_pb2.TaskSpec(task_id=i, name="app.add"), 0, 0.0) for i in ("1", "2"))
    assert a.name is b.name
