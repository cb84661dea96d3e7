"""The fastworker CLI's argument handling and output shapes (the commands themselves run in the integration suite)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import pytest

from fastworker.client import Priority, TaskInfo, TaskState
from fastworker.client.cli import RET_UNREACHABLE, RET_USAGE, _jsonable, info_dict, main, make_parser, parse_arg
from fastworker.client.models import TaskError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("2.5", 2.5),
        ('"x"', "x"),
        ("hello", "hello"),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("true", True),
    ],
)
def test_arguments_are_json_when_they_parse_and_text_otherwise(text: str, value: object) -> None:
    assert parse_arg(text) == value


def test_task_json_has_id_first_and_plain_values() -> None:
    info = TaskInfo(
        id="t1",
        name="add",
        state=TaskState.FAILURE,
        priority=Priority.HIGH,
        attempts=2,
        worker="w1",
        queued_at=1.0,
        started_at=2.0,
        finished_at=3.0,
        result=None,
        error=TaskError("ValueError", "bad", "tb"),
    )
    data = info_dict(info)
    assert list(data)[0] == "id"
    assert data["state"] == "FAILURE" and data["priority"] == "high"
    assert data["error"] == {"type": "ValueError", "message": "bad", "traceback": "tb"}
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
    ]


def test_results_the_codec_returns_become_json_friendly() -> None:
    value = {
        "b": b"\x00\x01",
        "d": decimal.Decimal("1.10"),
        "u": uuid.UUID(int=1),
        "t": (1, 2),
        "when": dt.date(2020, 1, 2),
    }
    assert json.loads(json.dumps(value, default=_jsonable)) == {
        "b": "AAE=",
        "d": "1.10",
        "u": str(uuid.UUID(int=1)),
        "t": [1, 2],
        "when": "2020-01-02",
    }


def test_usage_errors_exit_two() -> None:
    with pytest.raises(SystemExit) as exc:
        make_parser().parse_args(["submit"])
    assert exc.value.code == RET_USAGE
    with pytest.raises(SystemExit) as exc:
        make_parser().parse_args(["submit", "add", "--priority", "urgent"])
    assert exc.value.code == RET_USAGE


def test_an_unreachable_control_plane_exits_three(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--control-plane", "tcp://127.0.0.1:9", "--connect-timeout", "0.2", "--json", "stats"])
    assert code == RET_UNREACHABLE
    assert "no control plane announced itself" in json.loads(capsys.readouterr().out)["error"]
