"""fastworker-top with named queues: one row per queue and level, the "no worker" marker, ``p`` on any queue's row."""

from __future__ import annotations

import html

from rich.text import Text
from textual.widgets import Static
from tui_keys import press_confirmed

from fastworker.client import Priority, TaskState
from fastworker.dashboard.tui import FastworkerTop, make_app
from fastworker.dashboard.tui.screens import TaskDetailScreen
from fastworker.dashboard.tui.widgets.queues import queue_key, split_queue_key

REPORT_LOW = "ffff6666-0000-4000-8000-000000000006"
REPORT_HIGH = "ffff7777-0000-4000-8000-000000000007"
SIZE = (160, 50)
ROWS = [
    "default/critical",
    "default/high",
    "default/normal",
    "default/low",
    "idle/",
    "reports/high",
    "reports/low",
]


def app_for(fake) -> FastworkerTop:
    return make_app("tcp://fake:1", client=fake, refresh_interval=0.1)


def cell(table, key: str, column: str) -> str:
    value = table.get_cell(key, column)
    assert isinstance(value, Text)
    return value.plain


def screen_text(app: FastworkerTop) -> str:
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


async def select_task(pilot, wait, task_id: str) -> None:
    table = pilot.app.task_table
    await wait(pilot, lambda: task_id in table.row_keys, f"task {task_id} listed")
    table.focus()
    assert table.select_key(task_id)
    await pilot.pause()


def with_queues(fake, new_task) -> None:
    """ "reports" (nothing serves it) holds a low and a high task; "idle" is served by 2 with nothing waiting."""
    fake.served = {"default": 1, "idle": 2}
    # Straight into the list, before the app starts: add_task's events are for tasks arriving while it runs.
    fake.task_list.append(
        new_task(REPORT_LOW, "fwtop.report", TaskState.PENDING, priority=Priority.LOW, queue="reports")
    )
    fake.task_list.append(
        new_task(REPORT_HIGH, "fwtop.report", TaskState.PENDING, priority=Priority.HIGH, queue="reports")
    )


def test_row_keys_name_the_queue_and_the_level() -> None:
    assert queue_key("reports.v2:eu", "low") == "reports.v2:eu/low"
    assert split_queue_key("reports.v2:eu/low") == ("reports.v2:eu", "low")
    assert split_queue_key(queue_key("idle", "")) == ("idle", None)


async def test_only_the_default_queue_shows_its_four_levels(fake, wait):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        queues = app.queue_table
        await wait(pilot, lambda: queues.row_count == 4, "four levels shown")
        assert queues.row_keys == ROWS[:4]
        assert cell(queues, "default/critical", "queue") == "default" and cell(queues, "default/low", "queue") == ""
        assert {cell(queues, key, "state") for key in ROWS[:4]} == {"running"}


async def test_each_queue_shows_its_waiting_levels_and_an_unserved_queue_says_no_worker(fake, wait, new_task):
    with_queues(fake, new_task)
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        queues = app.queue_table
        await wait(pilot, lambda: queues.row_count == len(ROWS), "every queue shown")
        assert queues.row_keys == ROWS
        assert cell(queues, "reports/high", "queue") == "reports" and cell(queues, "reports/low", "queue") == ""
        assert cell(queues, "reports/low", "depth") == "1" and cell(queues, "reports/low", "oldest") == "20.0s"
        assert (
            cell(queues, "reports/high", "state") == "no worker" and cell(queues, "reports/low", "state") == "no worker"
        )
        assert cell(queues, "idle/", "state") == "idle" and cell(queues, "idle/", "priority") == "-"
        assert cell(queues, "default/normal", "depth") == "1" and cell(queues, "default/normal", "state") == "running"
        await wait(pilot, lambda: "no worker" in screen_text(app), "the marker painted")

        # A worker for "reports" connects: the marker goes, the rows stay
        fake.served["reports"] = 1
        await wait(pilot, lambda: cell(queues, "reports/low", "state") == "running", "served now")


async def test_p_on_a_row_of_another_queue_pauses_that_level_in_every_queue(fake, wait, notes, new_task):
    with_queues(fake, new_task)
    app = app_for(fake)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        queues = app.queue_table
        await wait(pilot, lambda: queues.row_count == len(ROWS), "every queue shown")
        queues.focus()
        assert queues.select_key("reports/low")
        await pilot.pause()
        await press_confirmed(pilot, "p")
        await wait(pilot, lambda: fake.pause_calls == [("pause", "low")], "pause of the low level")
        await wait(pilot, lambda: "paused low in every queue" in notes.texts(), "pause notification")
        await wait(pilot, lambda: cell(queues, "reports/low", "state") == "PAUSED", "PAUSED on the reports row")
        assert cell(queues, "default/low", "state") == "PAUSED"
        assert queues.selected_key() == "reports/low"  # the cursor stayed on its row

        await press_confirmed(pilot, "p")
        await wait(pilot, lambda: fake.pause_calls == [("pause", "low"), ("resume", "low")], "resume of the level")
        await wait(pilot, lambda: cell(queues, "reports/low", "state") == "no worker", "marker back")

        # The row of a queue with nothing waiting has no level to pause
        assert queues.select_key("idle/")
        await pilot.pause()
        await pilot.press("p")  # nothing to ask about
        await wait(pilot, lambda: notes.texts("warning"), "a warning")
        assert "nothing waits in this queue" in notes.texts("warning")[0]
        assert len(fake.pause_calls) == 2


async def test_detail_screen_shows_the_queue_and_that_nothing_serves_it(fake, wait, new_task):
    with_queues(fake, new_task)
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.queue_table.row_count == len(ROWS), "every queue shown")
        await select_task(pilot, wait, REPORT_LOW)
        await pilot.press("enter")
        await wait(pilot, lambda: isinstance(app.screen, TaskDetailScreen), "detail screen open")
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)
        await wait(pilot, lambda: screen.detail is not None, "detail loaded")

        def summary() -> str:
            content = screen.query_one("#detail-summary", Static).content
            assert isinstance(content, Text)
            return content.plain

        assert "queue  reports  no worker serves this queue" in summary()
        fake.served["reports"] = 1
        await wait(pilot, lambda: "no worker" not in summary(), "the marker gone once a worker serves it")
        assert "queue  reports" in summary()
