"""The JSON shapes shared by ``fastworker --json`` and the dashboard's API: plain JSON, one shape per object."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid

from fastworker.client import (
    CancelResult,
    Priority,
    Progress,
    TaskDetail,
    TaskInfo,
    TaskLimits,
    TaskPage,
    TaskState,
    WorkflowInfo,
)
from fastworker.client.jsonshape import (
    cancel_json,
    detail_json,
    jsonable,
    limits_json,
    page_json,
    task_json,
    task_limits_json,
    workflow_cancel_json,
    workflow_json,
)
from fastworker.client.models import TaskError

INFO = TaskInfo(
    id="t1",
    name="add",
    state=TaskState.FAILURE,
    priority=Priority.HIGH,
    attempts=2,
    worker="w1",
    queued_at=1.0,
    started_at=2.0,
    finished_at=3.5,
    result=None,
    error=TaskError("ValueError", "bad", "tb"),
)


def test_task_json_has_id_first_and_the_taskinfo_fields_in_order() -> None:
    data = task_json(INFO)
    assert list(data) == [
        "id",
        "name",
        "state",
        "priority",
        "attempts",
        "worker",
        "queued_at",
        "started_at",
        "finished_at",
        "result",
        "error",
        "progress",
        "depends_on",
        "workflow_id",
        "queue",
        "result_error",
    ]
    assert data["state"] == "FAILURE" and data["priority"] == "high"
    assert data["error"] == {"type": "ValueError", "message": "bad", "traceback": "tb"}
    assert data["progress"] is None
    assert data["depends_on"] == [] and data["workflow_id"] is None


def test_a_workflow_step_names_its_dependencies_and_its_workflow() -> None:
    step = dataclasses.replace(INFO, depends_on=("t0", "t00"), workflow_id="wf1")
    data = task_json(step)
    assert data["depends_on"] == ["t0", "t00"] and data["workflow_id"] == "wf1"
    assert json.loads(json.dumps(data)) == data


def test_a_tasks_progress_is_done_total_and_message() -> None:
    running = dataclasses.replace(INFO, progress=Progress(3, 10, "rendering", reported_at=5.0))
    assert task_json(running)["progress"] == {"done": 3, "total": 10, "message": "rendering"}
    unknown_total = dataclasses.replace(INFO, progress=Progress(7, None, ""))
    assert task_json(unknown_total)["progress"] == {"done": 7, "total": None, "message": ""}
    json.dumps(task_json(running))


class Colour(enum.Enum):
    RED = "red"


def test_values_the_codec_returns_become_plain_json() -> None:
    value = {
        "b": b"\x00\x01",
        "d": decimal.Decimal("1.10"),
        "u": uuid.UUID(int=1),
        "t": (1, (2, 3)),
        "s": frozenset({4}),
        "when": dt.date(2020, 1, 2),
        "at": dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "span": dt.timedelta(seconds=1.5),
        "nan": float("nan"),
        "inf": float("inf"),
        "enum": Colour.RED,
        "other": object,
        1: "int key",
        None: "null key",
        (1, 2): "tuple key",
    }
    data = jsonable(value)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data == {
        "b": "AAE=",
        "d": "1.10",
        "u": str(uuid.UUID(int=1)),
        "t": [1, [2, 3]],
        "s": [4],
        "when": "2020-01-02",
        "at": "2020-01-02T03:04:05+00:00",
        "span": 1.5,
        "nan": None,
        "inf": None,
        "enum": "red",
        "other": repr(object),
        "1": "int key",
        "null": "null key",
        "[1, 2]": "tuple key",
    }


def test_detail_is_the_task_then_arguments_and_timings() -> None:
    detail = TaskDetail(info=INFO, args=[(1, 2), b"raw"], kwargs={"k": decimal.Decimal("2")}, eta=9.0, expires=8.0)
    data = detail_json(detail)
    task_fields = len(task_json(INFO))
    assert list(data)[:task_fields] == list(task_json(INFO))
    assert list(data)[task_fields:] == ["args", "kwargs", "arguments_error", "eta", "expires", "wait_time", "run_time"]
    assert data["args"] == [[1, 2], "cmF3"] and data["kwargs"] == {"k": "2"}
    assert data["eta"] == 9.0 and data["expires"] == 8.0 and data["wait_time"] == 1.0 and data["run_time"] == 1.5
    assert detail_json(TaskDetail(info=INFO, args=[], kwargs={}))["expires"] is None  # none: null, not missing


def test_page_and_action_outcomes() -> None:
    listed = task_json(INFO)
    del listed["result"]  # a listing carries no results: no key, rather than a null read as "returned None"
    del listed["result_error"]
    assert page_json(TaskPage([INFO], total=3, offset=1, limit=1)) == {
        "tasks": [listed],
        "total": 3,
        "offset": 1,
        "limit": 1,
    }
    cancelled = cancel_json(INFO, CancelResult(False, TaskState.SUCCESS))
    assert cancelled == {**task_json(INFO), "cancelled": False, "previous_state": "SUCCESS"}
    assert list(cancelled)[0] == "id" and list(cancelled)[-2:] == ["cancelled", "previous_state"]


def test_limits_are_the_tasklimits_fields_in_order_with_null_for_no_limit() -> None:
    limited = TaskLimits("reports.build", "10/s", 3, running=2, waiting=5, current_rate=9.5, burst=1, overridden=True)
    data = task_limits_json(limited)
    assert list(data) == [f.name for f in dataclasses.fields(TaskLimits)]
    assert list(data)[:5] == ["name", "rate_limit", "max_concurrency", "running", "waiting"]
    assert data == {
        "name": "reports.build",
        "rate_limit": "10/s",
        "max_concurrency": 3,
        "running": 2,
        "waiting": 5,
        "current_rate": 9.5,
        "burst": 1,
        "overridden": True,
    }
    unlimited = task_limits_json(TaskLimits("add", None, None))
    assert unlimited["rate_limit"] is None and unlimited["max_concurrency"] is None
    assert limits_json([limited, TaskLimits("add", None, None)]) == [data, unlimited]
    assert json.loads(json.dumps(limits_json([limited]))) == [data]


def test_a_workflow_is_its_fields_then_its_steps_in_the_task_shape() -> None:
    first = dataclasses.replace(INFO, id="s1", state=TaskState.SUCCESS, error=None, result=3, workflow_id="wf1")
    second = dataclasses.replace(first, id="s2", state=TaskState.PENDING, result=None, depends_on=("s1",))
    workflow = WorkflowInfo(
        "wf1", TaskState.RUNNING, [first, second], 5.5, output_ids=("s2",), output_is_list=False, forgotten=("s0",)
    )
    data = workflow_json(workflow)
    assert list(data) == ["id", "state", "created_at", "output_ids", "output_is_list", "steps", "forgotten"]
    assert data["forgotten"] == ["s0"]
    assert data["id"] == "wf1" and data["state"] == "RUNNING" and data["created_at"] == 5.5
    assert data["output_ids"] == ["s2"] and data["output_is_list"] is False
    assert data["steps"] == [task_json(first), task_json(second)]
    assert data["steps"][1]["depends_on"] == ["s1"] and data["steps"][1]["workflow_id"] == "wf1"
    assert json.loads(json.dumps(data)) == data
    assert workflow_cancel_json("wf1", 2) == {"id": "wf1", "cancelled": 2}
