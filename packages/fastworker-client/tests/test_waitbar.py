"""``fastworker result --wait``: a live progress bar on a terminal, plain output when piped."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Sequence
from typing import Any

import pytest
from rich.console import Console

from fastworker.client import EventBatch, Priority, Progress, TaskEvent, TaskInfo, TaskState, TaskTimeout, cli
from fastworker.client._waitbar import wait_with_bar

TASK_ID = "5c1e0000-0000-4000-8000-000000000001"
RUNNING = TaskInfo(
    id=TASK_ID,
    name="reports.build",
    state=TaskState.RUNNING,
    priority=Priority.NORMAL,
    attempts=1,
    worker="w1",
    queued_at=1.0,
    started_at=2.0,
    finished_at=None,
)


class ScriptedClient:
    """Answers status() with the current state and events() with the next scripted change, one per poll."""

    def __init__(self, changes: Sequence[TaskInfo]) -> None:
        self.current = RUNNING
        self.changes = list(changes)
        self.sequence = 10
        self.event_polls = 0

    async def status(self, task_id: str) -> TaskInfo:
        assert task_id == TASK_ID
        return self.current

    async def events(
        self, after: int = 0, *, timeout: float = 5.0, task_ids: Sequence[str] = (), limit: int = 1000
    ) -> EventBatch:
        assert list(task_ids) == [TASK_ID]
        if timeout == 0:
            return EventBatch([], self.sequence, False)
        self.event_polls += 1
        if not self.changes:
            return EventBatch([], self.sequence, False)  # as when the long poll times out
        self.current = self.changes.pop(0)
        self.sequence += 1
        return EventBatch([TaskEvent(self.sequence, "task_state", 0.0, self.current)], self.sequence, False)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        self.current = self.changes[-1]
        return self.current

    async def __aenter__(self) -> ScriptedClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


def step(done: int, message: str = "rendering") -> TaskInfo:
    return dataclasses.replace(RUNNING, progress=Progress(done, 10, message, reported_at=2.0 + done))


FINAL = dataclasses.replace(
    RUNNING, state=TaskState.SUCCESS, finished_at=20.0, result="report.pdf", progress=Progress(10, 10, "done")
)


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120, color_system=None), out


async def test_the_bar_follows_each_progress_update_and_returns_the_final_task() -> None:
    client = ScriptedClient([step(3), step(7, "[b]almost[/b]"), FINAL])
    console, out = terminal()
    info = await wait_with_bar(client, TASK_ID, None, console)
    assert info is FINAL
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "reports.build RUNNING: rendering" in drawn and "3/10" in drawn
    assert "reports.build RUNNING: [b]almost[/b]" in drawn and "7/10" in drawn  # literal, never markup
    assert "s left" in drawn


async def test_the_wait_is_bounded() -> None:
    client = ScriptedClient([])
    console, _ = terminal()
    with pytest.raises(TaskTimeout):
        await wait_with_bar(client, TASK_ID, 0.05, console)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Any:
    client = ScriptedClient([step(3), FINAL])
    monkeypatch.setattr(cli, "Client", lambda *args, **kwargs: client)
    monkeypatch.delenv("FASTWORKER_SECRET_FILE", raising=False)
    return client


def test_result_wait_draws_the_bar_on_a_terminal(scripted: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    assert cli.main(["result", TASK_ID, "--wait"]) == cli.RET_OK
    printed = capsys.readouterr().out
    assert "3/10" in printed  # the bar was drawn
    assert "report.pdf" in printed and "10/10 (100%) done" in printed  # then the final task


def test_result_wait_piped_prints_the_task_only(scripted: Any, capsys: Any) -> None:
    assert cli.main(["result", TASK_ID, "--wait", "--json"]) == cli.RET_OK
    printed = capsys.readouterr().out
    assert scripted.event_polls == 0  # no bar: the plain wait
    assert '"progress": {"done": 10, "total": 10, "message": "done"}' in printed
