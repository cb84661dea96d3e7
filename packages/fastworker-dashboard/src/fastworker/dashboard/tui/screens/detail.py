"""The task-detail screen (``enter``): arguments, result, error and traceback, and timings, kept current.

Opened over the main screen for one task id; it reads ``task_detail`` in a worker and reads again
every refresh interval until the task is final. Every value is shown as plain text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from fastworker.client import FastworkerError, TaskInfo, TaskNotFound, TaskState
from fastworker.dashboard.source import AdminClient, TaskDetailView
from fastworker.dashboard.tui.format import (
    MISSING,
    format_duration,
    format_timestamp,
    pretty,
    priority_text,
    progress_text,
    short_id,
    state_text,
)


def _field(text: Text, label: str, value: str | Text) -> None:
    text.append(f"{label:>10}  ", style="dim")
    text.append(value)
    text.append("\n")


def summary_text(detail: TaskDetailView, *, unserved: bool = False) -> Text:
    """Identity, state and timings (wait and run separately); ``unserved``: nothing serves its queue."""
    info = detail.info
    text = Text()
    _field(text, "id", info.id)
    _field(text, "name", Text(info.name, style="bold"))
    _field(text, "state", state_text(info.state))
    if info.progress is not None:
        _field(text, "progress", progress_text(info, time.time()))
    _field(text, "priority", priority_text(info.priority))
    queue = Text(info.queue)
    if unserved and info.state is TaskState.PENDING:
        queue.append("  no worker serves this queue: it waits for one", style="bold red")
    _field(text, "queue", queue)
    _field(text, "attempts", str(info.attempts))
    _field(text, "worker", info.worker or MISSING)
    if info.workflow_id:
        workflow = Text(info.workflow_id)
        workflow.append("  (w: its steps)", style="dim")
        _field(text, "workflow", workflow)
    if info.depends_on:
        shown = ", ".join(short_id(task_id) for task_id in info.depends_on[:10])
        more = f" and {len(info.depends_on) - 10} more" if len(info.depends_on) > 10 else ""
        _field(text, "after", shown + more)
    _field(text, "queued", format_timestamp(info.queued_at))
    if detail.eta:
        _field(text, "eta", format_timestamp(detail.eta))
    if detail.expires:
        _field(text, "expires", format_timestamp(detail.expires))
    _field(text, "started", format_timestamp(info.started_at))
    _field(text, "finished", format_timestamp(info.finished_at))
    _field(text, "wait", format_duration(detail.wait_time))
    _field(text, "run", format_duration(detail.run_time))
    return text


def arguments_text(detail: TaskDetailView) -> Text:
    """Positional and keyword arguments, or why they cannot be shown."""
    text = Text()
    if detail.arguments_error:
        text.append("arguments not shown: ", style="yellow")
        text.append(detail.arguments_error)
        return text
    _field(text, "args", pretty(list(detail.args)))
    _field(text, "kwargs", pretty(dict(detail.kwargs)))
    return text


def result_text(info: TaskInfo) -> Text:
    """The returned value once the task succeeded, or why it cannot be shown."""
    if info.state is not TaskState.SUCCESS:
        return Text("(no result: the task has not succeeded)", style="dim")
    if info.result_error is not None:
        text = Text("result not shown: ", style="yellow")
        text.append(info.result_error)
        return text
    return Text(pretty(info.result))


def error_text(info: TaskInfo) -> Text:
    """The error type and message, if the task failed."""
    if info.error is None:
        return Text("(no error)", style="dim")
    text = Text(info.error.type, style="bold red")
    text.append(": ")
    text.append(info.error.message)
    return text


def traceback_text(info: TaskInfo) -> Text:
    """The remote traceback, if any."""
    if info.error is None or not info.error.traceback:
        return Text("(no traceback)", style="dim")
    return Text(info.error.traceback.rstrip("\n"))


class TaskDetailScreen(ModalScreen[None]):
    """Everything about one task; escape closes it."""

    # A modal screen hides the app's bindings: the operator keys are repeated here, acting on this task.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("c", "app.cancel_task", "Cancel"),
        Binding("r", "app.retry_task", "Retry"),
        Binding("p", "app.toggle_pause", "Pause/resume level"),
        Binding("w", "app.open_workflow", "Workflow"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(
        self,
        client: AdminClient,
        task_id: str,
        *,
        refresh_interval: float = 1.0,
        unserved: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.task_id = task_id
        self.refresh_interval = refresh_interval
        #: Whether nothing serves a named queue (the queue panel's last snapshot knows).
        self.unserved = unserved or (lambda queue: False)
        #: The last detail read, or None before the first answer.
        self.detail: TaskDetailView | None = None

    def compose(self) -> ComposeResult:
        """A dialog with one section per aspect of the task."""
        with Vertical(id="detail-dialog", classes="dialog"):
            title = Text("task ", style="bold")
            title.append(self.task_id)
            yield Static(title, classes="dialog-title")
            with VerticalScroll(id="detail-scroll"):
                yield Static(Text("loading...", style="dim"), id="detail-summary")
                yield Static(Text("arguments", style="bold"), classes="section-title")
                yield Static("", id="detail-args")
                yield Static(Text("result", style="bold"), classes="section-title")
                yield Static("", id="detail-result")
                yield Static(Text("error", style="bold"), classes="section-title")
                yield Static("", id="detail-error")
                yield Static(Text("traceback", style="bold"), classes="section-title")
                yield Static("", id="detail-traceback")

    def on_mount(self) -> None:
        """Read the task now and again every interval until it is final."""
        self.load()
        self._timer = self.set_interval(self.refresh_interval, self._tick)

    def _tick(self) -> None:
        if self.detail is None or not self.detail.info.state.is_final:
            self.load()

    @property
    def info(self) -> TaskInfo | None:
        """The task's info as last read."""
        return self.detail.info if self.detail is not None else None

    @work(exclusive=True, group="detail", exit_on_error=False)
    async def load(self) -> None:
        """Read the task's detail and show it."""
        try:
            detail = await self.client.task_detail(self.task_id)
        except TaskNotFound:
            self._show_problem(f"task {self.task_id} is not known to the control plane (never seen, or evicted)")
            self._timer.stop()
            return
        except FastworkerError as exc:
            self._show_problem(f"could not read the task: {exc}")
            return
        except Exception as exc:  # never let a surprise take the screen down
            self._show_problem(f"could not read the task: {exc!r}")
            return
        self.show(detail)

    def _show_problem(self, message: str) -> None:
        self.query_one("#detail-summary", Static).update(Text(message, style="bold red"))

    def show(self, detail: TaskDetailView) -> None:
        """Render a detail snapshot."""
        self.detail = detail
        info = detail.info
        self.query_one("#detail-summary", Static).update(summary_text(detail, unserved=self.unserved(info.queue)))
        self.query_one("#detail-args", Static).update(arguments_text(detail))
        self.query_one("#detail-result", Static).update(result_text(info))
        self.query_one("#detail-error", Static).update(error_text(info))
        self.query_one("#detail-traceback", Static).update(traceback_text(info))
