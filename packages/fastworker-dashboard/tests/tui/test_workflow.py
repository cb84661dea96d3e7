"""fastworker-top's workflow screen: ``w`` on a workflow step lists its steps indented under what they wait for."""

from __future__ import annotations

import dataclasses

from rich.text import Text
from textual.widgets import Static

from fastworker.client import TaskError, TaskEvent, TaskState
from fastworker.dashboard.tui import make_app
from fastworker.dashboard.tui.screens import TaskDetailScreen, WorkflowScreen

SIZE = (160, 50)
WORKFLOW_ID = "wf000000-0000-4000-8000-000000000001"
FETCH, PARSE, OTHER, MERGE = (f"f{i}f{i}f{i}f{i}-0000-4000-8000-00000000000{i}" for i in range(1, 5))


def add_workflow(fake, new_task) -> None:
    """chord(group(chain(fetch, parse), fetch), merge) while parse runs."""
    steps = [
        new_task(FETCH, "wf.fetch", TaskState.SUCCESS, age=9),
        new_task(PARSE, "wf.parse", TaskState.RUNNING, age=8),
        new_task(OTHER, "wf.fetch", TaskState.FAILURE, age=7, error=TaskError("KeyError", "no page", "tb")),
        new_task(MERGE, "[bold]wf.merge[/]", TaskState.PENDING, age=6),
    ]
    depends = {PARSE: (FETCH,), MERGE: (PARSE, OTHER)}
    for step in steps:
        fake.task_list.append(dataclasses.replace(step, workflow_id=WORKFLOW_ID, depends_on=depends.get(step.id, ())))
    fake.workflow_steps[WORKFLOW_ID] = [FETCH, PARSE, OTHER, MERGE]


def plain(value) -> str:
    assert isinstance(value, Text)
    return value.plain


async def test_w_in_a_steps_detail_shows_the_workflow_indented_with_states(fake, wait, new_task):
    add_workflow(fake, new_task)
    app = make_app("tcp://fake:1", client=fake, refresh_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        table = app.task_table
        await wait(pilot, lambda: MERGE in table.row_keys, "the workflow's steps listed")
        table.focus()
        assert table.select_key(MERGE)
        await pilot.press("enter")
        await wait(pilot, lambda: isinstance(app.screen, TaskDetailScreen), "detail screen open")
        detail = app.screen
        await wait(pilot, lambda: detail.detail is not None, "detail loaded")
        summary = plain(detail.query_one("#detail-summary", Static).content)
        assert WORKFLOW_ID in summary and "f2f2f2f2, f3f3f3f3" in summary

        await pilot.press("w")
        await wait(pilot, lambda: isinstance(app.screen, WorkflowScreen), "workflow screen open")
        screen = app.screen
        assert isinstance(screen, WorkflowScreen) and screen.workflow_id == WORKFLOW_ID
        await wait(pilot, lambda: screen.steps.row_count == 4, "four steps shown")
        steps = screen.steps
        assert steps.row_keys == [FETCH, PARSE, OTHER, MERGE]
        names = {key: plain(steps.get_cell(key, "step")) for key in steps.row_keys}
        assert names[FETCH] == "wf.fetch" and names[OTHER] == "wf.fetch"
        assert names[PARSE] == "  └ wf.parse"
        assert names[MERGE] == "  └ [bold]wf.merge[/]  (after 2 steps)"  # literal; once, under its last dependency
        assert [plain(steps.get_cell(key, "state")) for key in steps.row_keys] == [
            "SUCCESS",
            "RUNNING",
            "FAILURE",
            "PENDING",
        ]
        assert plain(steps.get_cell(OTHER, "error")) == "KeyError"
        summary = plain(screen.query_one("#workflow-summary", Static).content)
        assert "RUNNING" in summary and "4 steps: 1 PENDING, 1 RUNNING, 1 SUCCESS, 1 FAILURE" in summary

        # A step's change, announced by an event, shows without waiting for the workflow to end
        fake._replace(PARSE, state=TaskState.SUCCESS)
        fake.sequence += 1
        fake.pending_events.append(TaskEvent(fake.sequence, "task_state", 0.0, fake._find(PARSE)))
        await wait(pilot, lambda: plain(steps.get_cell(PARSE, "state")) == "SUCCESS", "the step's new state")

        # enter opens a step's detail; w there goes back to this workflow screen instead of stacking another
        steps.focus()
        assert steps.select_key(OTHER)
        await pilot.press("enter")
        await wait(pilot, lambda: isinstance(app.screen, TaskDetailScreen), "the step's detail")
        assert app.screen.task_id == OTHER
        await pilot.press("w")
        await wait(pilot, lambda: app.screen is screen, "back on the workflow screen")
        await pilot.press("escape")
        await wait(pilot, lambda: isinstance(app.screen, TaskDetailScreen), "back on the first detail")
        assert app.screen.task_id == MERGE


async def test_w_on_a_task_outside_a_workflow_warns(fake, wait, notes):
    app = make_app("tcp://fake:1", client=fake, refresh_interval=0.1)
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        table = app.task_table
        await wait(pilot, lambda: table.row_count == 5, "tasks listed")
        table.focus()
        await pilot.press("w")
        await wait(pilot, lambda: any("not a step of a workflow" in t for t in notes.texts("warning")), "warning")
        assert not isinstance(app.screen, WorkflowScreen) and fake.workflow_calls == []


async def test_an_unknown_workflow_says_so(fake, wait, new_task):
    add_workflow(fake, new_task)
    del fake.workflow_steps[WORKFLOW_ID]  # its steps are still listed, but the workflow was forgotten
    app = make_app("tcp://fake:1", client=fake, refresh_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        table = app.task_table
        await wait(pilot, lambda: PARSE in table.row_keys, "steps listed")
        table.focus()
        assert table.select_key(PARSE)
        await pilot.press("w")  # from the task list too
        await wait(pilot, lambda: isinstance(app.screen, WorkflowScreen), "workflow screen open")
        summary = app.screen.query_one("#workflow-summary", Static)
        await wait(pilot, lambda: "is not known to the control plane" in plain(summary.content), "not known")
