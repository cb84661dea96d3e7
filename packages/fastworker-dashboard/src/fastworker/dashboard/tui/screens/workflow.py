"""The workflow screen (``w`` on a workflow step): every step indented under what it waits for, with its state.

Opened over the task-detail screen (or the task list) for one workflow id; it reads
``client.workflow`` in a worker, again every refresh interval until the workflow is final and when
an event names one of its steps. ``enter`` opens the selected step's detail. Values show as plain text.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from fastworker.client import FastworkerError, TaskNotFound, TaskState, WorkflowInfo
from fastworker.client.workflowtree import state_counts, workflow_tree
from fastworker.dashboard.source import AdminClient
from fastworker.dashboard.tui.format import format_timestamp, short_id, state_text
from fastworker.dashboard.tui.screens.detail import TaskDetailScreen
from fastworker.dashboard.tui.widgets.table import KeyedTable, Row


class WorkflowStepTable(KeyedTable):
    """A workflow's steps, one row per step keyed by its task id, indented under the step each waits for."""

    COLUMNS = (
        ("step", "Step"),
        ("id", "ID"),
        ("state", "State"),
        ("error", "Error"),
    )

    def show_workflow(self, workflow: WorkflowInfo) -> None:
        """Show the steps as an indented list (a chord's callback once, noting how many steps it waits for)."""
        rows: list[Row] = []
        for row in workflow_tree(workflow.steps):
            step = row.step
            label = Text("  " * row.indent + ("└ " if row.depth else ""), style="dim")
            label.append(Text(step.name, style="not dim"))
            if row.after_note:
                label.append(f"  ({row.after_note})", style="dim")
            error = step.error.type if step.error is not None and step.state is TaskState.FAILURE else ""
            cells = (label, Text(short_id(step.id), style="dim"), state_text(step.state), Text(error, style="red"))
            rows.append((step.id, cells))
        self.sync(rows)


def summary_text(workflow: WorkflowInfo) -> Text:
    """The workflow's state, how many steps are in each state, and when it was accepted."""
    text = Text("state ", style="dim")
    text.append(state_text(workflow.state))
    text.append(f"   {len(workflow.steps)} step{'' if len(workflow.steps) == 1 else 's'}: ", style="dim")
    for index, (state, count) in enumerate(state_counts(workflow.steps)):
        if index:
            text.append(", ")
        text.append(f"{count} ")
        text.append(state_text(state))
    if workflow.forgotten:
        text.append(f", {len(workflow.forgotten)} no longer known (left the result cache)", style="dim")
    text.append("   accepted ", style="dim")
    text.append(format_timestamp(workflow.created_at))
    return text


class WorkflowScreen(ModalScreen[None]):
    """One workflow's steps and states; escape closes it, enter opens a step's detail."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("enter", "open_step", "Step details"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, client: AdminClient, workflow_id: str, *, refresh_interval: float = 1.0) -> None:
        super().__init__()
        self.client = client
        self.workflow_id = workflow_id
        self.refresh_interval = refresh_interval
        #: The workflow as last read, or None before the first answer.
        self.workflow: WorkflowInfo | None = None
        self.steps = WorkflowStepTable(id="workflow-steps")

    def compose(self) -> ComposeResult:
        """A dialog: the title, a summary line and the step table."""
        with Vertical(id="workflow-dialog", classes="dialog"):
            title = Text("workflow ", style="bold")
            title.append(self.workflow_id)
            yield Static(title, classes="dialog-title")
            yield Static(Text("loading...", style="dim"), id="workflow-summary")
            yield self.steps

    def on_mount(self) -> None:
        """Read the workflow now and again every interval until it is final."""
        self.steps.focus()
        self.load()
        self._timer = self.set_interval(self.refresh_interval, self._tick)

    def _tick(self) -> None:
        if self.workflow is None or not self.workflow.state.is_final:
            self.load()

    def has_step(self, task_id: str) -> bool:
        """True when the task is one of this workflow's steps (as last read)."""
        return self.workflow is not None and any(step.id == task_id for step in self.workflow.steps)

    @work(exclusive=True, group="workflow", exit_on_error=False)
    async def load(self) -> None:
        """Read the workflow and show it."""
        try:
            workflow = await self.client.workflow(self.workflow_id)
        except TaskNotFound:
            self._show_problem(
                f"workflow {self.workflow_id} is not known to the control plane (never seen, or evicted)"
            )
            self._timer.stop()
            return
        except FastworkerError as exc:
            self._show_problem(f"could not read the workflow: {exc}")
            return
        except Exception as exc:  # never let a surprise take the screen down
            self._show_problem(f"could not read the workflow: {exc!r}")
            return
        self.show(workflow)

    def _show_problem(self, message: str) -> None:
        self.query_one("#workflow-summary", Static).update(Text(message, style="bold red"))

    def show(self, workflow: WorkflowInfo) -> None:
        """Render a snapshot of the workflow."""
        self.workflow = workflow
        self.query_one("#workflow-summary", Static).update(summary_text(workflow))
        self.steps.show_workflow(workflow)

    @on(DataTable.RowSelected, "#workflow-steps")
    def _step_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()  # the app's task list handles its own RowSelected; this one is ours
        self.action_open_step()

    def action_open_step(self) -> None:
        """Open the selected step's detail screen."""
        task_id = self.steps.selected_key()
        if task_id is not None:
            self.app.push_screen(TaskDetailScreen(self.client, task_id, refresh_interval=self.refresh_interval))
