"""fastworker-top (Textual Pilot) against a real control plane and a real subworker.

The app runs with its own real ``Client`` (as ``fastworker-top`` does); the test submits and
checks through a second client. Rows are chosen the way an operator would: ``/``, a task-id
prefix, ``enter``. Every wait is bounded and polls while the app runs.
"""

from __future__ import annotations

import html
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from fastworker.client import Client, TaskState
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker
from fastworker.dashboard.tui import FastworkerTop, make_app
from fastworker.dashboard.tui.cli import RET_ERROR
from fastworker.dashboard.tui.screens import ConfirmScreen, TaskDetailScreen

TOP_TASKS = ("fwtests_top_tasks",)
SIZE = (160, 50)
WAIT = 20.0  # generous: the CI machine is small and noisy


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, one_worker_cluster: Any
) -> Iterator[tuple[RunningControlPlane, RunningWorker]]:
    """One control plane that runs nothing itself, and one subworker ``w1`` with the top tasks."""
    with one_worker_cluster(tmp_path_factory.mktemp("top"), task_modules=TOP_TASKS, concurrency=4) as pair:
        yield pair


@pytest.fixture
async def client(cluster: tuple[RunningControlPlane, RunningWorker]) -> Any:
    """The test's own client (the app has another)."""
    async with Client(cluster[0].discovery) as test_client:
        yield test_client


def top_for(cluster: tuple[RunningControlPlane, RunningWorker]) -> FastworkerTop:
    return make_app(cluster[0].discovery, refresh_interval=0.25)


async def wait_until(pilot: Pilot[Any], predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Let the app run until predicate() is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for: {what}")
        await pilot.pause(0.05)


async def press_confirmed(pilot: Pilot[Any], key: str) -> None:
    """Press an action key and answer its question yes (fastworker-top asks before it acts)."""
    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), f"the question after {key!r}")
    await pilot.press("y")


async def wait_for_state(pilot: Pilot[Any], client: Client, task_id: str, state: TaskState) -> None:
    """Poll the control plane (while the app runs) until the task is in state."""
    deadline = time.monotonic() + WAIT
    while (info := await client.status(task_id)).state is not state:
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} did not reach {state} within {WAIT:g} s (last: {info.state})")
        await pilot.pause(0.05)


def cell(app: FastworkerTop, task_id: str, column: str) -> str:
    value = app.task_table.get_cell(task_id, column)
    assert isinstance(value, Text)
    return value.plain


def screen_text(app: FastworkerTop) -> str:
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


async def select_by_search(pilot: Pilot[Any], app: FastworkerTop, task_id: str) -> None:
    """Select a task as an operator would: ``/``, its id prefix, ``enter``."""
    await pilot.press("slash")
    await pilot.press(*task_id[:13])
    await pilot.press("enter")
    table = app.task_table
    await wait_until(pilot, lambda: table.row_keys == [task_id], f"only task {task_id} listed")
    assert app.focused is table
    assert table.selected_key() == task_id


async def test_top_shows_the_worker_and_submitted_tasks(cluster: Any, client: Client) -> None:
    done = await client.delay("fwtop.add", 2, 3)
    assert await client.result(done, timeout=WAIT) == 5
    app = top_for(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "w1" in app.worker_table.row_keys, "worker w1 in the worker table")
        await wait_until(pilot, lambda: done in app.task_table.row_keys, "the finished task listed")
        assert cell(app, done, "name") == "fwtop.add"
        assert cell(app, done, "state") == "SUCCESS"
        assert cell(app, done, "worker") == "w1"

        # A task submitted while the app runs shows up (through the event stream or the next poll).
        fresh = await client.delay("fwtop.sleep", 0.2)
        await wait_until(pilot, lambda: fresh in app.task_table.row_keys, "the new task listed")
        await wait_until(pilot, lambda: cell(app, fresh, "state") == "SUCCESS", "the new task finished")
        header = app.header.query_one("#counters", Static).content
        assert isinstance(header, Text) and "workers 1" in header.plain
        assert app.header.banner_text == ""


async def test_markup_task_name_renders_literally(cluster: Any, client: Client) -> None:
    task_id = await client.delay("[bold]x[/]")
    assert await client.result(task_id, timeout=WAIT) == "[bold]x[/]"
    app = top_for(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await select_by_search(pilot, app, task_id)
        assert cell(app, task_id, "name") == "[bold]x[/]"
        await wait_until(pilot, lambda: "[bold]x[/]" in screen_text(app), "the literal name on screen")

        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, TaskDetailScreen), "detail screen")
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)
        await wait_until(pilot, lambda: screen.detail is not None, "detail loaded")
        result = screen.query_one("#detail-result", Static).content
        assert isinstance(result, Text) and result.plain == "'[bold]x[/]'"


async def test_c_cancels_the_selected_running_task(cluster: Any, client: Client) -> None:
    task_id = await client.delay("fwtop.sleep", 60)
    app = top_for(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_state(pilot, client, task_id, TaskState.RUNNING)
        await select_by_search(pilot, app, task_id)
        await press_confirmed(pilot, "c")
        await wait_for_state(pilot, client, task_id, TaskState.CANCELLED)
        await wait_until(pilot, lambda: cell(app, task_id, "state") == "CANCELLED", "the row shows CANCELLED")


async def test_r_requeues_the_selected_failed_task(cluster: Any, client: Client) -> None:
    task_id = await client.delay("fwtop.fail", "first")
    app = top_for(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_state(pilot, client, task_id, TaskState.FAILURE)
        await select_by_search(pilot, app, task_id)
        await wait_until(pilot, lambda: cell(app, task_id, "state") == "FAILURE", "the row shows FAILURE")
        await press_confirmed(pilot, "r")
        deadline = time.monotonic() + WAIT
        while (info := await client.status(task_id)).attempts < 2:
            if time.monotonic() > deadline:
                pytest.fail(f"retry did not re-run task {task_id} (last: {info})")
            await pilot.pause(0.05)
        await wait_for_state(pilot, client, task_id, TaskState.FAILURE)
        await wait_until(pilot, lambda: cell(app, task_id, "attempts") == "2", "the row shows the second attempt")


async def test_enter_shows_the_traceback_of_a_failed_task(cluster: Any, client: Client) -> None:
    task_id = await client.delay("fwtop.fail", "<why>[red]", priority="high")
    app = top_for(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_state(pilot, client, task_id, TaskState.FAILURE)
        await select_by_search(pilot, app, task_id)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, TaskDetailScreen), "detail screen")
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)
        await wait_until(pilot, lambda: screen.detail is not None, "detail loaded")

        def section(name: str) -> str:
            content = screen.query_one(f"#detail-{name}", Static).content
            assert isinstance(content, Text)
            return content.plain

        traceback = section("traceback")
        assert "Traceback (most recent call last)" in traceback
        assert "ValueError: fwtop failure: <why>[red]" in traceback
        assert section("error") == "ValueError: fwtop failure: <why>[red]"
        assert "['<why>[red]']" in section("args")
        summary = section("summary")
        assert "FAILURE" in summary and "high" in summary and "w1" in summary
        assert "wait" in summary and "run" in summary
        await wait_until(pilot, lambda: "fwtop failure: <why>[red]" in screen_text(app), "traceback on screen")

        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, TaskDetailScreen), "detail screen closed")


async def test_p_pauses_and_resumes_the_selected_tasks_level(cluster: Any, client: Client) -> None:
    task_id = await client.delay("fwtop.add", 1, 1, priority="low")
    await client.result(task_id, timeout=WAIT)

    async def low_paused() -> bool:
        return next(q["paused"] for q in await client.queues() if q["priority"] == "low")

    app = top_for(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await select_by_search(pilot, app, task_id)
        await wait_until(pilot, lambda: app.queue_table.row_count == 4, "queues shown")
        await press_confirmed(pilot, "p")
        deadline = time.monotonic() + WAIT
        while not await low_paused():
            if time.monotonic() > deadline:
                pytest.fail("the low level was not paused")
            await pilot.pause(0.05)
        queue_state = lambda: app.queue_table.get_cell("default/low", "state").plain  # noqa: E731
        await wait_until(pilot, lambda: queue_state() == "PAUSED", "PAUSED marker on the low queue")

        try:
            # Paused: a new low task waits.
            waiting = await client.delay("fwtop.add", 2, 2, priority="low")
            await pilot.pause(0.5)
            assert (await client.status(waiting)).state is TaskState.PENDING
        finally:
            await press_confirmed(pilot, "p")
            deadline = time.monotonic() + WAIT
            while await low_paused():
                if time.monotonic() > deadline:
                    await client.resume("low")  # leave the shared control plane usable
                    pytest.fail("the low level was not resumed")
                await pilot.pause(0.05)
        await wait_until(pilot, lambda: queue_state() == "running", "PAUSED marker gone")
        assert await client.result(waiting, timeout=WAIT) == 4


async def test_lost_control_plane_shows_unreachable_and_the_app_keeps_running(start_cp_for_workers: Any) -> None:
    control_plane = start_cp_for_workers()
    try:
        app = make_app(control_plane.discovery, refresh_interval=0.25)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.reachable is True, "connected")
            control_plane.stop()
            await wait_until(pilot, lambda: "control plane unreachable" in app.header.banner_text, "the banner")
            await wait_until(pilot, lambda: "control plane unreachable" in screen_text(app), "banner on screen")
            assert app.is_running
    finally:
        control_plane.stop()


async def test_a_running_tasks_progress_shows_in_the_list_and_the_detail_screen(
    cluster: Any, client: Client, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    task_id = await client.delay("fwtop.progress", str(gate))
    app = top_for(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_state(pilot, client, task_id, TaskState.RUNNING)
        await select_by_search(pilot, app, task_id)
        await wait_until(pilot, lambda: cell(app, task_id, "progress") == "████░░░░░░ 4/10", "the progress bar")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, TaskDetailScreen), "detail screen")
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)

        def summary() -> str:
            content = screen.query_one("#detail-summary", Static).content
            return content.plain if isinstance(content, Text) else ""

        await wait_until(pilot, lambda: "4/10 40%  rendering" in summary(), "the progress line")
        gate.touch()
        await wait_until(pilot, lambda: "10/10 100%  done" in summary(), "the last progress, kept once finished")
        await wait_for_state(pilot, client, task_id, TaskState.SUCCESS)


def test_top_piped_into_another_program_refuses_with_a_one_line_hint_and_writes_nothing() -> None:
    # Given fastworker-top with its stdout a pipe (as in `fastworker-top > file` or `| less`)
    script = Path(sys.executable).with_name("fastworker-top")
    assert script.is_file(), f"fastworker-top is not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    ran = subprocess.run(
        [str(script), "--control-plane", "tcp://127.0.0.1:9"],  # refused before connecting anywhere
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        env=env,
    )
    # Then it exits 1 without drawing a screen into the pipe, and says what to use instead in one line
    assert ran.returncode == RET_ERROR, ran
    assert ran.stdout == b"", ran.stdout[:200]
    hint = ran.stderr.decode().splitlines()
    assert len(hint) == 1, hint
    assert "not a terminal" in hint[0] and "fastworker stats --json" in hint[0], hint


def _top_on_a_pseudo_terminal(discovery: str) -> tuple[subprocess.Popen[bytes], int]:
    """fastworker-top drawing on a new pseudo-terminal that is not its controlling terminal (``setsid``), and the master side."""
    import fcntl
    import pty
    import struct
    import termios

    script = Path(sys.executable).with_name("fastworker-top")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "FASTWORKER_CONTROL_PLANE": discovery}
    top = subprocess.Popen(
        [str(script), "--refresh", "0.2"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env=env,
    )
    os.close(slave)
    deadline = time.monotonic() + WAIT
    drawn = b""
    while b"Workers" not in drawn and time.monotonic() < deadline:  # read what it draws until the panels show
        drawn += os.read(master, 65536)
    assert b"Workers" in drawn, drawn[-500:]
    return top, master


def test_top_whose_terminal_goes_away_without_a_sighup_exits_instead_of_spinning(start_cp: Any) -> None:
    # Given fastworker-top on a pseudo-terminal that is not its controlling terminal (started by a
    # supervisor or with setsid): when that terminal closes, no SIGHUP comes
    top, master = _top_on_a_pseudo_terminal(start_cp().discovery)
    try:
        # When the terminal goes away
        os.close(master)
        # Then it notices at its next poll and exits 1 (nothing can be drawn any more), rather than
        # spin on the dead terminal for ever
        assert top.wait(timeout=WAIT) == RET_ERROR
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
