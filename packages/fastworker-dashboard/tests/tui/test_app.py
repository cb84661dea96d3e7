"""fastworker-top against a fake client: panels render, keys call the admin API, text stays literal."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import os
import signal
import time

import pytest
from rich.text import Text
from textual.widgets import Input, Sparkline, Static
from tui_keys import press_confirmed

from fastworker.client import ProtocolError, TaskDetail, TaskError, TaskLimits, TaskState
from fastworker.dashboard.tui import FastworkerTop, make_app
from fastworker.dashboard.tui._lifeline import QUIT_DEADLINE
from fastworker.dashboard.tui.format import format_timestamp
from fastworker.dashboard.tui.screens import HelpScreen, TaskDetailScreen
from fastworker.dashboard.tui.screens.detail import result_text, summary_text
from fastworker.dashboard.tui.widgets import LimitTable, QueueTable, TaskTable, TopHeader, WorkerTable

SIZE = (160, 50)
FAILED_ID = "bbbb2222-0000-4000-8000-000000000002"
RUNNING_ID = "cccc3333-0000-4000-8000-000000000003"
MARKUP_ID = "dddd4444-0000-4000-8000-000000000004"


def app_for(fake) -> FastworkerTop:
    return make_app("tcp://fake:1", client=fake, refresh_interval=0.1)


def cell(table, key: str, column: str) -> str:
    value = table.get_cell(key, column)
    assert isinstance(value, Text), f"cell {key}/{column} is {type(value).__name__}, not rich Text"
    return value.plain


def screen_text(app: FastworkerTop) -> str:
    """Everything on screen as the terminal would show it (from the SVG screenshot)."""
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


async def select_task(pilot, wait, task_id: str) -> None:
    table = pilot.app.task_table
    await wait(pilot, lambda: task_id in table.row_keys, f"task {task_id} listed")
    table.focus()
    assert table.select_key(task_id)
    await pilot.pause()
    assert table.selected_key() == task_id


async def test_app_renders_workers_tasks_queues_and_counters(fake, wait):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        workers = app.query_one(WorkerTable)
        tasks = app.query_one(TaskTable)
        queues = app.query_one(QueueTable)
        await wait(pilot, lambda: workers.row_count == 2 and tasks.row_count == 5, "workers and tasks shown")
        await wait(pilot, lambda: queues.row_count == 4, "four priority levels shown")

        assert cell(workers, "w1", "load") == "███░░░░░░░ 1/4"
        assert cell(workers, "w1", "processed") == "12"
        assert cell(workers, "w1", "rss") == "50.0 MiB"
        assert cell(workers, "[red]w2[/]", "draining") == "draining"
        # Newest first, as the control plane lists them.
        assert tasks.row_keys[0].startswith("eeee5555") and tasks.row_keys[-1].startswith("aaaa1111")
        assert cell(tasks, FAILED_ID, "state") == "FAILURE"
        assert cell(tasks, FAILED_ID, "error") == "ValueError: boom"
        assert cell(queues, "default/normal", "depth") == "1"
        assert cell(queues, "default/normal", "state") == "running"

        header = app.query_one(TopHeader)
        counters = header.query_one("#counters", Static).content
        assert isinstance(counters, Text)
        for expected in ("submitted 1,234", "succeeded 1,200", "failed 7", "running 1", "queued 2", "12.5/s"):
            assert expected in counters.plain
        assert "uptime 1h02m" in counters.plain
        spark = header.query_one("#spark-succeeded", Sparkline)
        assert spark.data is not None and len(spark.data) == 120 and max(spark.data) == 6
        failed_spark = header.query_one("#spark-failed", Sparkline)
        assert failed_spark.data is not None and sum(failed_spark.data) == 4
        assert header.banner_text == ""


async def test_limited_task_names_show_in_a_panel_only_while_there_are_some(fake, wait):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        limits = app.query_one(LimitTable)
        await wait(pilot, lambda: app.queue_table.row_count == 4, "queues shown")
        assert limits.row_count == 0 and not limits.display  # no flow control: the layout is unchanged

        fake.limit_list = [
            TaskLimits("fwtop.sleep", "10/s", 2, running=2, waiting=5, current_rate=9.5, burst=1, overridden=True),
            TaskLimits("[red]x[/]", None, 3, running=1),
        ]
        await wait(pilot, lambda: limits.row_count == 2, "the limited names listed")
        assert limits.display
        assert limits.row_keys == ["[red]x[/]", "fwtop.sleep"]
        assert cell(limits, "fwtop.sleep", "name") == "fwtop.sleep*"  # set at run time
        assert cell(limits, "fwtop.sleep", "rate") == "10/s"
        assert cell(limits, "fwtop.sleep", "concurrency") == "2"
        assert cell(limits, "fwtop.sleep", "running") == "2"
        assert cell(limits, "fwtop.sleep", "waiting") == "5"
        assert cell(limits, "fwtop.sleep", "current") == "9.5"
        assert cell(limits, "[red]x[/]", "rate") == "-" and cell(limits, "[red]x[/]", "name") == "[red]x[/]"
        await wait(pilot, lambda: "Limits (* set at run time)" in screen_text(app), "the panel painted")
        assert "fwtop.sleep" in screen_text(app) and "[red]x[/]" in screen_text(app)  # literally, not as markup

        fake.limit_list = []
        await wait(pilot, lambda: not limits.display, "the panel hidden again")


async def test_limits_that_cannot_be_read_do_not_hide_the_rest(fake, wait, monkeypatch):
    async def refuse():
        raise ProtocolError("the control plane does not know limits")

    monkeypatch.setattr(fake, "limits", refuse)
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.queue_table.row_count == 4 and app.worker_table.row_count == 2, "overview shown")
        assert not app.limit_table.display
        assert app.query_one(TopHeader).banner_text == ""


async def test_markup_in_names_and_worker_ids_renders_literally(fake, wait):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        tasks = app.task_table
        await wait(pilot, lambda: MARKUP_ID in tasks.row_keys, "the markup-named task listed")
        await wait(pilot, lambda: app.worker_table.row_count == 2, "workers shown")
        assert cell(tasks, MARKUP_ID, "name") == "[bold]x[/]"
        assert cell(app.worker_table, "[red]w2[/]", "worker") == "[red]w2[/]"
        # Painted on screen with the brackets (markup would have been swallowed and styled instead).
        await wait(pilot, lambda: "[bold]x[/]" in screen_text(app), "literal task name on screen")
        await wait(pilot, lambda: "[red]w2[/]" in screen_text(app), "literal worker id on screen")


async def test_c_cancels_the_selected_task(fake, wait, notes):
    app = app_for(fake)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await select_task(pilot, wait, RUNNING_ID)
        await press_confirmed(pilot, "c")
        await wait(pilot, lambda: fake.cancelled == [RUNNING_ID], "cancel called with the selected id")
        await wait(pilot, lambda: f"cancelled {RUNNING_ID} (was RUNNING)" in notes.texts(), "cancel notification")
        await wait(pilot, lambda: cell(app.task_table, RUNNING_ID, "state") == "CANCELLED", "row shows CANCELLED")
        # The cursor stays on the task it was on across refreshes.
        assert app.task_table.selected_key() == RUNNING_ID


async def test_an_action_key_asks_first_and_a_no_leaves_the_task_alone(fake, wait, notes):
    # One stray `c` cancelled a running task: the web dashboard asks first, and so does fastworker-top
    app = app_for(fake)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await select_task(pilot, wait, RUNNING_ID)
        await press_confirmed(pilot, "c", answer="n")
        await press_confirmed(pilot, "c", answer="escape")
        await press_confirmed(pilot, "r", answer="n")
        await press_confirmed(pilot, "p", answer="escape")
        await pilot.pause(0.2)
        assert (fake.cancelled, fake.retried, fake.pause_calls) == ([], [], [])
        assert cell(app.task_table, RUNNING_ID, "state") == "RUNNING"


async def test_cancel_of_a_vanished_task_notifies_an_error(fake, wait, notes):
    app = app_for(fake)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await select_task(pilot, wait, RUNNING_ID)
        fake.evicted.add(RUNNING_ID)
        await press_confirmed(pilot, "c")
        await wait(pilot, lambda: notes.texts("error"), "an error notification")
        assert notes.texts("error") == [f"cannot cancel {RUNNING_ID}: not known to the control plane"]


async def test_r_retries_a_failed_task_and_reports_a_refused_retry(fake, wait, notes):
    app = app_for(fake)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await select_task(pilot, wait, FAILED_ID)
        await press_confirmed(pilot, "r")
        await wait(pilot, lambda: f"retrying {FAILED_ID} (now PENDING)" in notes.texts(), "retry notification")
        assert fake.retried == [FAILED_ID]

        await select_task(pilot, wait, RUNNING_ID)
        await press_confirmed(pilot, "r")
        await wait(pilot, lambda: notes.texts("error"), "refusal notification")
        assert "only FAILURE or CANCELLED tasks can be retried" in notes.texts("error")[0]


async def test_p_pauses_and_resumes_the_selected_tasks_level(fake, wait, notes):
    app = app_for(fake)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await select_task(pilot, wait, FAILED_ID)  # a HIGH task
        await wait(pilot, lambda: app.queue_table.row_count == 4, "queues shown")
        await press_confirmed(pilot, "p")
        await wait(pilot, lambda: "paused high" in notes.texts(), "pause notification")
        assert fake.pause_calls == [("pause", "high")]
        await wait(pilot, lambda: cell(app.queue_table, "default/high", "state") == "PAUSED", "PAUSED marker")

        await press_confirmed(pilot, "p")
        await wait(pilot, lambda: "resumed high" in notes.texts(), "resume notification")
        assert fake.pause_calls == [("pause", "high"), ("resume", "high")]
        await wait(pilot, lambda: cell(app.queue_table, "default/high", "state") == "running", "marker gone")


async def test_p_on_the_focused_queue_panel_pauses_the_cursor_row(fake, wait, notes):
    app = app_for(fake)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        queues = app.queue_table
        await wait(pilot, lambda: queues.row_count == 4, "queues shown")
        queues.focus()
        assert queues.select_key("default/low")
        await pilot.pause()
        await press_confirmed(pilot, "p")
        await wait(pilot, lambda: fake.pause_calls == [("pause", "low")], "pause of the low level")


async def test_enter_opens_the_detail_screen_and_escape_closes_it(fake, wait):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await select_task(pilot, wait, FAILED_ID)
        await pilot.press("enter")
        await wait(pilot, lambda: isinstance(app.screen, TaskDetailScreen), "detail screen open")
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen) and screen.task_id == FAILED_ID
        await wait(pilot, lambda: screen.detail is not None, "detail loaded")

        def section(name: str) -> str:
            content = screen.query_one(f"#detail-{name}", Static).content
            assert isinstance(content, Text), f"{name} is not Text"
            return content.plain

        assert "ValueError: boom [red]not markup[/]" in section("traceback")
        assert section("error") == "ValueError: boom"
        assert "[1, '[b]two[/b]']" in section("args") and "{'flag': True}" in section("args")
        summary = section("summary")
        assert "fwtop.fail" in summary and "FAILURE" in summary
        assert "wait  0.50s" in summary and "run  1.00s" in summary
        await wait(pilot, lambda: "[red]not markup[/]" in screen_text(app), "literal traceback on screen")

        await pilot.press("escape")
        await wait(pilot, lambda: not isinstance(app.screen, TaskDetailScreen), "detail screen closed")


def test_the_detail_summary_shows_when_a_scheduled_task_is_due_and_when_it_expires(new_task) -> None:
    # An operator saw a scheduled task's eta but not when it would end CANCELLED (Expired) instead
    scheduled = new_task("ffff6666-0000-4000-8000-000000000006", "fwtop.later", TaskState.SCHEDULED)
    due, expires = time.time() + 600, time.time() + 300
    summary = summary_text(TaskDetail(scheduled, [], {}, eta=due, expires=expires)).plain
    assert f"eta  {format_timestamp(due)}" in summary
    assert f"expires  {format_timestamp(expires)}" in summary
    assert "expires" not in summary_text(TaskDetail(scheduled, [], {})).plain  # none: no line


def test_the_detail_says_why_a_result_cannot_be_shown_rather_than_showing_text_as_the_result(new_task) -> None:
    # A pickled result read without pickle showed as the string "<result not decodable here: ...>"
    done = new_task("ffff7777-0000-4000-8000-000000000007", "fwtop.complex", TaskState.SUCCESS)
    undecodable = dataclasses.replace(done, result=None, result_error="pickle payloads are refused")
    assert result_text(undecodable).plain == "result not shown: pickle payloads are refused"
    assert result_text(dataclasses.replace(done, result="text")).plain == "'text'"


async def test_keys_in_the_detail_screen_act_on_its_task(fake, wait, notes):
    app = app_for(fake)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await select_task(pilot, wait, RUNNING_ID)
        await pilot.press("enter")
        await wait(pilot, lambda: isinstance(app.screen, TaskDetailScreen), "detail screen open")
        await press_confirmed(pilot, "c")
        await wait(pilot, lambda: fake.cancelled == [RUNNING_ID], "cancel from the detail screen")
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)
        await wait(
            pilot,
            lambda: screen.detail is not None and screen.detail.info.state is TaskState.CANCELLED,
            "detail shows CANCELLED",
        )


async def test_f_cycles_the_state_filter(fake, wait):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        tasks = app.task_table
        await wait(pilot, lambda: tasks.row_count == 5, "all tasks")
        await pilot.press("f")  # active
        await wait(pilot, lambda: tasks.row_count == 3, "only active tasks")
        assert fake.list_calls[-1]["states"] == {
            TaskState.PENDING,
            TaskState.SCHEDULED,
            TaskState.RUNNING,
            TaskState.RETRYING,
        }
        await pilot.press("f", "f", "f")  # running, waiting, failed
        await wait(pilot, lambda: tasks.row_keys == [FAILED_ID], "only the failed task")
        title = app.task_title.content
        assert isinstance(title, Text) and "filter failed" in title.plain and "showing 1 of 1" in title.plain


async def test_slash_focuses_search_which_matches_names_and_id_prefixes(fake, wait):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        tasks = app.task_table
        await wait(pilot, lambda: tasks.row_count == 5, "all tasks")
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"sleep")  # part of a registered name; "c" and "r" are typed, not actions
        await wait(
            pilot, lambda: sorted(tasks.row_keys) == [RUNNING_ID, "eeee5555-0000-4000-8000-000000000005"], "sleep tasks"
        )
        assert fake.cancelled == [] and fake.retried == []

        search = app.query_one(Input)
        search.value = ""
        await pilot.press(*"bbbb")
        await wait(pilot, lambda: tasks.row_keys == [FAILED_ID], "id prefix match")
        await pilot.press("enter")
        assert app.focused is tasks


async def test_new_tasks_appear_through_the_event_stream(fake, wait, new_task):
    app = FastworkerTop(fake, address="tcp://fake:1", refresh_interval=3600)  # no polling: only events
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.task_table.row_count == 5, "initial tasks")
        fake.add_task(new_task("ffff6666-0000-4000-8000-000000000006", "fwtop.add", TaskState.PENDING, age=0))
        await wait(pilot, lambda: app.task_table.row_count == 6, "the new task via events")
        assert app.task_table.row_keys[0] == "ffff6666-0000-4000-8000-000000000006"


async def test_unreachable_control_plane_shows_a_banner_and_recovers(fake, wait):
    fake.unreachable = True
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        header = app.query_one(TopHeader)
        await wait(pilot, lambda: "control plane unreachable" in header.banner_text, "the banner")
        assert "tcp://fake:1" in header.banner_text
        await wait(pilot, lambda: "control plane unreachable" in screen_text(app), "banner on screen")
        assert app.reachable is False

        fake.unreachable = False
        await wait(pilot, lambda: header.banner_text == "", "banner cleared after reconnect")
        await wait(pilot, lambda: app.task_table.row_count == 5, "tasks after reconnect")


async def test_unexpected_errors_are_shown_not_raised(fake, wait):
    async def broken(**kwargs):
        raise RuntimeError("the admin API changed")

    fake.list_tasks = broken
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        header = app.query_one(TopHeader)
        await wait(pilot, lambda: "the admin API changed" in header.banner_text, "error in the banner")
        await wait(pilot, lambda: app.worker_table.row_count == 2, "other panels still work")


async def test_an_error_stays_in_the_banner_while_its_read_fails_whatever_the_other_reads_do(fake, wait):
    # The task list's read failed first; the overview's first success then marked the control plane
    # reachable and cleared the banner, so the error showed only until then (a flaky test under load).
    async def broken(**kwargs):
        raise RuntimeError("the admin API changed")

    real_stats = fake.stats

    async def slow_stats():
        await asyncio.sleep(0.3)
        return await real_stats()

    fake.list_tasks = broken
    fake.stats = slow_stats
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        header = app.query_one(TopHeader)
        await wait(pilot, lambda: app.worker_table.row_count == 2, "the overview, read after the task list failed")
        assert "the admin API changed" in header.banner_text


async def test_question_mark_opens_help(fake, wait):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait(pilot, lambda: isinstance(app.screen, HelpScreen), "help open")
        await wait(pilot, lambda: "pause or resume a priority level" in screen_text(app), "help text on screen")
        await pilot.press("escape")
        await wait(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")


async def test_q_quits_and_an_owned_client_is_closed(fake, wait):
    app = FastworkerTop(fake, address="tcp://fake:1", refresh_interval=0.1, owns_client=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.task_table.row_count == 5, "tasks")
        await pilot.press("q")
    assert fake.closed


@pytest.mark.parametrize("how", ["ctrl+c", "SIGTERM", "SIGHUP"])
async def test_ctrl_c_sigterm_and_sighup_quit_as_q_does(fake, wait, how):
    app = FastworkerTop(fake, address="tcp://fake:1", refresh_interval=0.1, owns_client=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.task_table.row_count == 5, "tasks")
        if how == "ctrl+c":
            await pilot.press("ctrl+c")
        else:
            os.kill(os.getpid(), getattr(signal, how))
        await wait(pilot, lambda: app.return_code is not None, f"the app to quit on {how}")
        assert app.return_code == 0
    assert fake.closed
    # and the signals are the process's own again (here: pytest's) once it quit
    assert asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM) is False


async def test_a_quit_signal_on_a_terminal_arms_a_deadline_that_ends_the_process_if_the_exit_hangs(fake, wait):
    # Restoring a terminal that is gone blocks Textual's exit for ever: a signal's quit is cut short
    app = FastworkerTop(fake, address="tcp://fake:1", refresh_interval=0.1, owns_client=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: app.task_table.row_count == 5, "tasks")
            app._terminal_fd = os.open(os.devnull, os.O_WRONLY)  # as on a real terminal (headless here)
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                await wait(pilot, lambda: app.return_code is not None, "the app to quit on SIGTERM")
            finally:
                os.close(app._terminal_fd)
                app._terminal_fd = None
        deadline = app.quit_deadline
        assert deadline is not None and deadline.interval == QUIT_DEADLINE and deadline.args == (0,)
        assert deadline.is_alive()  # armed, and it would end this process
    finally:
        if app.quit_deadline is not None:
            app.quit_deadline.cancel()  # as main() does once the app returned


async def test_a_client_passed_to_make_app_is_left_open(fake, wait):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.task_table.row_count == 5, "tasks")
    assert not fake.closed


async def test_escape_sequences_from_tasks_and_workers_reach_the_terminal_escaped(fake, wait):
    # A task named with ESC[2J cleared the operator's screen; an error carrying an OSC sequence set
    # the terminal's title: every string the control plane reports is shown with controls escaped
    hostile_id = "ffff6666-0000-4000-8000-000000000006"
    fake.task_list.insert(
        0,
        dataclasses.replace(
            fake.task_list[0],
            id=hostile_id,
            name="evil\x1b[2J",
            state=TaskState.FAILURE,
            error=TaskError("Bad\x07", "title \x1b]0;pwned\x07 here"),
        ),
    )
    fake.workers_data[0]["worker_id"] = "w\x1b[31m1"
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        tasks = app.task_table
        await wait(pilot, lambda: hostile_id in tasks.row_keys, "the task listed")
        await wait(pilot, lambda: app.worker_table.row_count == 2, "workers shown")
        assert cell(tasks, hostile_id, "name") == "evil\\x1b[2J"
        assert cell(tasks, hostile_id, "error") == "Bad\\x07: title \\x1b]0;pwned\\x07 here"
        assert "w\\x1b[31m1" in app.worker_table.row_keys
        on_screen = screen_text(app)
        assert "\x1b" not in on_screen and "\x07" not in on_screen and "evil\\x1b[2J" in on_screen


async def test_a_narrower_value_updates_its_cell_without_measuring_the_column_again(monkeypatch):
    # DataTable measures every cell of a column again for each updated cell narrower than the column:
    # with an age on each of 200 rows changing every second, that kept fastworker-top at a core.
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    from fastworker.dashboard.tui.widgets.table import KeyedTable

    class Ages(KeyedTable):
        COLUMNS = (("id", "ID"), ("age", "AGE"))

    class Host(App[None]):
        def compose(self) -> ComposeResult:
            yield Ages()

    measured: list[int] = []
    original = DataTable._update_column_widths

    def counting(self, updated_cells):  # type: ignore[no-untyped-def]
        measured.append(len(updated_cells))
        return original(self, updated_cells)

    monkeypatch.setattr(DataTable, "_update_column_widths", counting)
    async with Host().run_test() as pilot:
        table = pilot.app.query_one(Ages)
        table.sync([(f"t{i}", (Text(f"t{i}"), Text("59m 59s"))) for i in range(200)])
        await pilot.pause()
        measured.clear()
        table.sync([(f"t{i}", (Text(f"t{i}"), Text("1s"))) for i in range(200)])
        await pilot.pause()
        assert table.get_cell("t7", "age").plain == "1s"  # updated...
        assert sum(measured) == 0  # ...without a width pass over the column
        table.sync([(f"t{i}", (Text(f"t{i}"), Text("a much longer age"))) for i in range(200)])
        await pilot.pause()
        assert table.columns["age"].content_width == len("a much longer age")  # a wider one still widens it
