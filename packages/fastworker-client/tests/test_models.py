"""Client value types map one-to-one onto the wire enums."""

from __future__ import annotations

import pytest

from fastworker.client import Priority, TaskFailed, TaskInfo, TaskState
from fastworker.client.models import TaskError
from fastworker.protocol.v1 import task_pb2


def test_every_wire_priority_maps_to_a_level_and_back() -> None:
    for level in Priority:
        assert Priority.from_wire(level.to_wire()) is level
    assert Priority.from_wire(task_pb2.PRIORITY_UNSPECIFIED) is Priority.NORMAL


def test_priorities_parse_case_insensitively_and_refuse_unknown_names() -> None:
    assert Priority.parse("HIGH") is Priority.HIGH
    assert Priority.parse(Priority.LOW) is Priority.LOW
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        Priority.parse("urgent")


def test_priorities_compare_by_importance_not_by_their_names() -> None:
    assert Priority.CRITICAL > Priority.HIGH > Priority.NORMAL > Priority.LOW
    assert Priority.NORMAL > Priority.LOW  # as strings, "normal" < "low" would be False here
    assert Priority.HIGH >= Priority.HIGH and Priority.LOW <= Priority.NORMAL
    assert not Priority.CRITICAL < Priority.LOW
    assert max(Priority) is Priority.CRITICAL and min(Priority) is Priority.LOW
    assert sorted([Priority.LOW, Priority.CRITICAL, Priority.NORMAL, Priority.HIGH], reverse=True) == list(Priority)
    # Still a str: equal to, hashed as and (against other strings) ordered as its value.
    assert Priority.LOW == "low" and {Priority.LOW: 1}["low"] == 1
    assert (Priority.LOW < "m") is ("low" < "m") and ("z" > Priority.LOW) is True


def test_every_wire_state_maps_to_a_state_and_back() -> None:
    wire_values = [v.number for v in task_pb2.TaskState.DESCRIPTOR.values if v.number != 0]
    assert sorted(int(s.to_wire()) for s in TaskState) == sorted(wire_values)
    for state in TaskState:
        assert TaskState.from_wire(state.to_wire()) is state
    with pytest.raises(ValueError):
        TaskState.from_wire(task_pb2.TASK_STATE_UNSPECIFIED)


def test_state_values_are_the_upper_case_names_and_final_states_are_marked() -> None:
    assert [s.value for s in TaskState] == [s.name for s in TaskState]
    assert {s for s in TaskState if s.is_final} == {TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED}


def test_task_failed_carries_the_remote_error_and_traceback() -> None:
    info = TaskInfo(
        id="t1",
        name="boom",
        state=TaskState.FAILURE,
        priority=Priority.NORMAL,
        attempts=1,
        worker="controlplane",
        queued_at=1.0,
        started_at=2.0,
        finished_at=3.0,
        error=TaskError("ValueError", "bad", "Traceback ..."),
    )
    error = TaskFailed(info)
    assert "ValueError: bad" in str(error)
    assert error.remote_traceback == "Traceback ..."
    assert error.info is info
