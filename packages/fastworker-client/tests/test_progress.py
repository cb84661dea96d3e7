"""``report_progress`` checks its arguments and needs a running task; ``Progress`` reads and travels well."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastworker.client import NoCurrentTask, Progress, TaskInfo, TaskState, report_progress
from fastworker.client import _progress as progress_module
from fastworker.client.models import task_info_from_wire
from fastworker.protocol.v1 import task_pb2


@pytest.fixture
def reported() -> Any:
    """Bind a collecting sink for the test, as a runtime does around a run."""
    seen: list[Progress] = []
    token = progress_module.bind(seen.append)
    yield seen
    progress_module.unbind(token)


def test_report_progress_hands_the_sink_a_timestamped_progress(reported: list[Progress]) -> None:
    report_progress(3, 10, "rendering")
    report_progress(4)
    assert reported == [Progress(3, 10, "rendering"), Progress(4, None, "")]
    assert all(p.reported_at > 0 for p in reported)


def test_outside_a_running_task_it_raises_a_typed_error() -> None:
    with pytest.raises(NoCurrentTask, match="outside a running task"):
        report_progress(1, 2, "nobody listens")
    assert issubclass(NoCurrentTask, RuntimeError)


@pytest.mark.parametrize(
    ("args", "error", "text"),
    [
        ((-1, 10), ValueError, "done must be 0 or more"),
        ((1, -10), ValueError, "total must be 0 or more"),
        ((11, 10), ValueError, r"done \(11\) cannot be above total \(10\)"),
        ((2**63, None), ValueError, "below 2\\*\\*63"),
        ((1.5, 10), TypeError, "done must be an int, not float"),
        ((True, 10), TypeError, "done must be an int, not bool"),
        ((1, "10"), TypeError, "total must be an int, not str"),
        ((1, 10, b"bytes"), TypeError, "message must be a str, not bytes"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(
    reported: list[Progress], args: tuple[Any, ...], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        report_progress(*args)
    assert reported == []


def test_bad_arguments_are_refused_outside_a_task_too() -> None:
    with pytest.raises(ValueError):
        report_progress(5, 4)


def test_a_long_message_is_cut_and_any_index_type_counts(reported: list[Progress]) -> None:
    class Count:
        def __index__(self) -> int:
            return 7

    report_progress(Count(), 7, "x" * 1_000)  # type: ignore[arg-type]
    (progress,) = reported
    assert progress.done == 7 and len(progress.message) == progress_module.MAX_MESSAGE_LENGTH
    assert progress.message.endswith("…")


async def test_the_sink_follows_async_code_and_stays_with_its_context(reported: list[Progress]) -> None:
    async def step(n: int) -> None:
        await asyncio.sleep(0)
        report_progress(n, 3)

    await asyncio.gather(step(1), asyncio.create_task(step(2)))
    assert sorted(p.done for p in reported) == [1, 2]


def test_progress_reads_as_a_fraction_a_remaining_time_and_text() -> None:
    assert Progress(3, 10).fraction == pytest.approx(0.3)
    assert Progress(0, 0).fraction == 1.0
    assert Progress(5).fraction is None
    halfway = Progress(5, 10, "half", reported_at=110.0)
    assert halfway.remaining(started_at=100.0) == pytest.approx(10.0)  # 5 units took 10 s
    assert halfway.remaining(started_at=100.0, now=120.0) == pytest.approx(20.0)  # no news since: slower
    assert halfway.remaining(started_at=100.0, now=105.0) == pytest.approx(10.0)  # a clock behind the report
    assert halfway.remaining(started_at=None) is None
    assert Progress(0, 10, reported_at=110.0).remaining(100.0) is None  # no rate yet
    assert Progress(5, None, reported_at=110.0).remaining(100.0) is None
    assert Progress(10, 10, reported_at=110.0).remaining(100.0) == 0.0
    assert str(Progress(3, 10, "rendering")) == "3/10 (30%) rendering"
    assert str(Progress(3)) == "3"


def test_progress_compares_without_its_timestamp_and_round_trips_the_wire() -> None:
    assert Progress(3, 10, "x", reported_at=1.0) == Progress(3, 10, "x", reported_at=2.0)
    for value in (Progress(3, 10, "x", reported_at=1.5), Progress(0, None, ""), Progress(0, 0)):
        back = Progress.from_wire(value.to_wire())
        assert back == value and back.reported_at == value.reported_at
        assert back.total == value.total
    assert not Progress(1).to_wire().HasField("total")


def test_task_info_carries_progress_from_the_wire() -> None:
    wire = task_pb2.TaskInfo(task_id="t", name="n", state=task_pb2.TASK_STATE_RUNNING)
    assert task_info_from_wire(wire).progress is None
    wire.progress.CopyFrom(Progress(2, 4, "half", reported_at=9.0).to_wire())
    info: TaskInfo = task_info_from_wire(wire)
    assert info.state is TaskState.RUNNING and info.progress == Progress(2, 4, "half")
