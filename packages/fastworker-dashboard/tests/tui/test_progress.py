"""fastworker-top shows running tasks' progress: a bar in the task list, the full line in the detail screen."""

from __future__ import annotations

import dataclasses
import time

from rich.text import Text

from fastworker.client import Progress, TaskState
from fastworker.dashboard.tui import make_app
from fastworker.dashboard.tui.format import progress_bar, progress_text
from fastworker.dashboard.tui.screens import TaskDetailScreen

SIZE = (180, 50)
RUNNING_ID = "cccc3333-0000-4000-8000-000000000003"


def cell(table, key: str, column: str) -> str:
    value = table.get_cell(key, column)
    assert isinstance(value, Text)
    return value.plain


async def test_the_task_list_shows_a_bar_for_a_task_with_progress_and_nothing_for_others(fake, wait) -> None:
    fake._replace(RUNNING_ID, progress=Progress(3, 10, "rendering", reported_at=time.time()))
    app = make_app("tcp://fake:1", client=fake, refresh_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        table = app.task_table
        await wait(pilot, lambda: RUNNING_ID in table.row_keys, "the running task listed")
        assert cell(table, RUNNING_ID, "progress") == "███░░░░░░░ 3/10"
        assert all(cell(table, key, "progress") == "" for key in table.row_keys if key != RUNNING_ID)

        # A new value shows at the next refresh.
        fake._replace(RUNNING_ID, progress=Progress(7, 10, "rendering", reported_at=time.time()))
        await wait(pilot, lambda: cell(table, RUNNING_ID, "progress") == "███████░░░ 7/10", "the new value shown")


async def test_the_detail_screen_shows_count_percent_message_and_time_left(fake, wait) -> None:
    fake._replace(RUNNING_ID, progress=Progress(5, 10, "rendering [b]pages[/b]", reported_at=time.time()))
    app = make_app("tcp://fake:1", client=fake, refresh_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: RUNNING_ID in app.task_table.row_keys, "the running task listed")
        app.task_table.focus()
        assert app.task_table.select_key(RUNNING_ID)
        await pilot.press("enter")
        await wait(pilot, lambda: isinstance(app.screen, TaskDetailScreen) and app.screen.detail is not None, "detail")
        summary = app.screen.query_one("#detail-summary").content
        assert isinstance(summary, Text)
        assert "5/10 50%  rendering [b]pages[/b]" in summary.plain  # literal, never markup
        assert "left" in summary.plain


def test_progress_text_for_unknown_totals_and_finished_tasks(fake) -> None:
    assert progress_bar(None).plain == ""
    assert progress_bar(Progress(1_234)).plain == "1,234"
    assert progress_bar(Progress(10, 10)).plain == "██████████ 10/10"
    info = dataclasses.replace(
        fake.task_list[0], state=TaskState.SUCCESS, progress=Progress(10, 10, "done", reported_at=5.0)
    )
    line = progress_text(info, now=time.time()).plain
    assert line.startswith("████") and "100%  done" in line and "left" not in line
