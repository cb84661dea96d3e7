"""``FastworkerTop``: polls the control plane, follows its event stream, and maps keys to admin actions.

All I/O runs in Textual workers (``@work``), never in handlers: the overview (stats, queues,
flow-control limits, workers) and the task list are polled every refresh interval, and a long-poll worker follows
``client.events()`` so that new tasks and state changes show up between polls. A failed request
never ends the app: the header says the control plane is unreachable and the polls keep trying.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import Worker, WorkerState

from fastworker.client import Client, ControlPlaneUnavailable, EventBatch, FastworkerError, TaskNotFound
from fastworker.dashboard.source import AdminClient, read_limits
from fastworker.dashboard.tui._lifeline import QUIT_DEADLINE, end_within, terminal_gone
from fastworker.dashboard.tui.query import STATE_FILTERS, TaskListing, TaskQuery, fetch_tasks
from fastworker.dashboard.tui.safetext import SafeClient
from fastworker.dashboard.tui.screens import ConfirmScreen, HelpScreen, TaskDetailScreen, WorkflowScreen
from fastworker.dashboard.tui.widgets import LimitTable, QueueTable, TaskTable, TopHeader, WorkerTable
from fastworker.protocol.auth import Secret

#: Signals that end fastworker-top the way q does (SIGINT arrives as the Ctrl-C key on its terminal).
_QUIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

logger = logging.getLogger(__name__)

#: Seconds one event long poll may be held by the control plane.
EVENT_POLL_TIMEOUT = 1.0
#: Rows of the queue/limits/workers panel row (``#middle`` in top.tcss), and most it grows to for many queues.
MIDDLE_HEIGHT = 9
MIDDLE_MAX_HEIGHT = 16
#: Event kinds that change the overview panels.
_OVERVIEW_EVENTS = frozenset({"worker_online", "worker_offline", "queue_changed"})


async def _gather(*calls: Awaitable[Any]) -> list[Any]:
    """Await all calls concurrently; raise the first failure only after every call settled."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)


def _is_active(worker: Worker[Any] | None) -> bool:
    return worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)


class FastworkerTop(App[None]):
    """An "htop for the queue": counters, queues, limits, workers and a live task list with operator keys.

    Args:
        client: Anything with the admin API of ``fastworker.client.Client`` (see ``AdminClient``).
        address: The control plane's discovery address, shown in the header.
        refresh_interval: Seconds between polls.
        owns_client: Close the client when the app exits (true when ``make_app`` created it).
        event_timeout: Seconds one event long poll may wait.
    """

    CSS_PATH = "top.tcss"
    TITLE = "fastworker-top"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        # Ctrl-C ends a terminal program (Textual's default only says to press Ctrl-Q).
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "focus_search", "Search"),
        Binding("f", "cycle_filter", "Filter"),
        Binding("enter", "open_detail", "Details"),
        Binding("c", "cancel_task", "Cancel"),
        Binding("r", "retry_task", "Retry"),
        Binding("p", "toggle_pause", "Pause/resume level (queue row or task's)"),
        Binding("w", "open_workflow", "Workflow", show=False),
        Binding("escape", "leave_search", "Back", show=False),
    ]

    #: Index into STATE_FILTERS of the task list's state filter.
    state_filter: reactive[int] = reactive(0, init=False)
    #: The search box's text (task name, part of one, or id prefix).
    search_text: reactive[str] = reactive("", init=False)
    #: Whether the control plane answered the last request (None before the first answer).
    reachable: reactive[bool | None] = reactive(None, init=False)

    def __init__(
        self,
        client: AdminClient,
        *,
        address: str,
        refresh_interval: float = 1.0,
        owns_client: bool = False,
        event_timeout: float = EVENT_POLL_TIMEOUT,
    ) -> None:
        super().__init__()
        # Every answer shown with its control characters escaped: tasks name and describe themselves.
        self.client: AdminClient = SafeClient(client)
        self.address = address
        self.refresh_interval = refresh_interval
        self.event_timeout = event_timeout
        self._owns_client = owns_client
        self._overview_worker: Worker[None] | None = None
        self._tasks_worker: Worker[None] | None = None
        self._tasks_dirty = False
        self._last_problem = ""
        #: The unexpected error each kind of read ("overview", "tasks") last ended with, while it does:
        #: one read's success must not clear the banner of another that keeps failing.
        self._errors: dict[str, str] = {}
        #: The terminal drawn on, looked at on every poll (None when there is none: headless, in tests).
        self._terminal_fd: int | None = None
        #: Ends the process if a quit asked for by a signal does not finish in time (see ``_lifeline``).
        self.quit_deadline: threading.Timer | None = None
        self.header = TopHeader(address, id="header")
        self.middle = Horizontal(id="middle")
        self.queue_table = QueueTable(id="queues")
        self.limit_table = LimitTable(id="limits")
        self.worker_table = WorkerTable(id="workers")
        self.task_table = TaskTable(id="tasks")
        self.task_title = Static("", id="task-title")
        self.search = Input(placeholder="/ search: task name (or part) or task-id prefix", id="search")

    # ------------------------------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        """Header, queue, limit (while any name is limited) and worker panels side by side, the task list, the keys."""
        yield self.header
        with self.middle:
            yield self.queue_table
            yield self.limit_table
            yield self.worker_table
        with Vertical(id="task-panel"):
            with Horizontal(id="task-bar"):
                yield self.task_title
                yield self.search
            yield self.task_table
        yield Footer()

    def on_mount(self) -> None:
        """Start polling and following events."""
        self.queue_table.border_title = "Queues"
        self.limit_table.border_title = "Limits (* set at run time)"
        self.worker_table.border_title = "Workers"
        self.task_table.border_title = "Tasks"
        self.task_table.focus()
        self._show_task_title(None)
        stdout = sys.__stdout__
        if not self.is_headless and stdout is not None and stdout.isatty():
            self._terminal_fd = stdout.fileno()
        self.set_interval(self.refresh_interval, self._tick)
        self._tick()
        self._follow_events()
        # Killed with SIGTERM (or its terminal closed: SIGHUP), quit as with q, which restores the
        # terminal: dying of the signal left it in the alternate screen, mouse reporting on.
        loop = asyncio.get_running_loop()
        for signum in _QUIT_SIGNALS:
            loop.add_signal_handler(signum, self._quit_on_signal)

    def _quit_on_signal(self) -> None:
        """Quit as with q; on a terminal, if that cannot finish (the terminal is gone) the process ends all the same."""
        if self._terminal_fd is not None and self.quit_deadline is None:
            self.quit_deadline = end_within(QUIT_DEADLINE, 0)  # (cancelled by main() once the app returned)
        self.exit()

    def _quit_if_terminal_gone(self) -> bool:
        """End at once, with 1, if the terminal went away unannounced (no SIGHUP): nothing can be drawn or read any more."""
        if self._terminal_fd is None or not terminal_gone(self._terminal_fd):
            return False
        logger.error("fastworker-top: its terminal is gone; exiting")
        end_within(0.0, 1)  # Textual's own exit would block writing to it
        return True

    async def on_unmount(self) -> None:
        """Stop answering signals; close the client if this app created it."""
        loop = asyncio.get_running_loop()
        for signum in _QUIT_SIGNALS:
            loop.remove_signal_handler(signum)
        if self._owns_client:
            await self.client.aclose()

    # -------------------------------------------------------------------------------- reactivity

    def watch_state_filter(self) -> None:
        """A new state filter: re-read the task list at once."""
        self._show_task_title(None)
        self.request_task_refresh(restart=True)

    def watch_search_text(self) -> None:
        """New search text: re-read the task list at once."""
        self._show_task_title(None)
        self.request_task_refresh(restart=True)

    def watch_reachable(self, reachable: bool | None) -> None:
        """Show or hide the unreachable banner; dim the panels while their data is stale."""
        for panel in (self.queue_table, self.limit_table, self.worker_table, self.task_table):
            panel.set_class(reachable is False, "-stale")
        if reachable:
            self._show_errors()
        elif reachable is False:
            self.header.show_unreachable(self._last_problem)

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.search_text = event.value.strip()

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.task_table.focus()

    @on(DataTable.RowSelected, "#tasks")
    def _task_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self._open_detail(event.row_key.value)

    # ---------------------------------------------------------------------------------- polling

    def _tick(self) -> None:
        if self._terminal_fd is not None and self._quit_if_terminal_gone():
            return
        self.refresh_overview()
        self.request_task_refresh()

    def refresh_overview(self) -> None:
        """Start an overview poll unless one is still in flight."""
        if not _is_active(self._overview_worker):
            self._overview_worker = self._poll_overview()

    def request_task_refresh(self, *, restart: bool = False) -> None:
        """Re-read the task list: now if idle or restarting, else once the read in flight is done."""
        if restart or not _is_active(self._tasks_worker):
            self._tasks_worker = self._fetch_tasks()
        else:
            self._tasks_dirty = True

    @work(exclusive=True, group="overview", exit_on_error=False)
    async def _poll_overview(self) -> None:
        """Read stats, queues, limits and workers and show them."""
        try:
            stats, queues, (limits, limits_error), workers = await _gather(
                self.client.stats(), self.client.queues(), read_limits(self.client), self.client.workers()
            )
        except Exception as exc:
            self._record_failure(exc, "overview")
            return
        self._record_success("overview")
        self.header.show_stats(stats)
        self.queue_table.show_queues(queues)
        self._fit_middle()
        if limits_error is None:  # else keep what was shown: the limits are a side panel
            self.limit_table.show_limits(limits)
        else:
            logger.debug("reading the limits failed: %s", limits_error)
        self.worker_table.show_workers(workers, time.time())

    def _fit_middle(self) -> None:
        """Grow the panel row with the queue rows (several named queues), so none hides below the fold."""
        wanted = min(max(MIDDLE_HEIGHT, self.queue_table.row_count + 3), MIDDLE_MAX_HEIGHT)  # + header and border
        if self.middle.styles.height is None or self.middle.styles.height.value != wanted:
            self.middle.styles.height = wanted

    @work(exclusive=True, group="tasks", exit_on_error=False)
    async def _fetch_tasks(self) -> None:
        """Read the task list for the current filter and search; read again if events came meanwhile."""
        while True:
            self._tasks_dirty = False
            try:
                listing = await fetch_tasks(self.client, self.current_query())
            except Exception as exc:
                self._record_failure(exc, "tasks")
                return
            self._record_success("tasks")
            self.task_table.show_tasks(listing.tasks, time.time())
            self._show_task_title(listing)
            if not self._tasks_dirty:
                return

    @work(exclusive=True, group="events", exit_on_error=False)
    async def _follow_events(self) -> None:
        """Follow the event stream from now on; refresh the panels an event touches."""
        after: int | None = None
        while True:
            try:
                if after is None:
                    after = (await self.client.events(0, timeout=0, limit=1)).last_sequence
                    continue
                batch = await self.client.events(after, timeout=self.event_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("event poll failed: %r", exc)
                await asyncio.sleep(self.refresh_interval)
                continue
            if batch.last_sequence < after:  # the control plane restarted: its sequence began anew
                after = batch.last_sequence
                self._tick()
                continue
            after = batch.last_sequence
            self._apply_events(batch)

    def _apply_events(self, batch: EventBatch) -> None:
        kinds = {event.kind for event in batch.events}
        if batch.gap or "task_state" in kinds:
            self.request_task_refresh()
        if batch.gap or kinds & _OVERVIEW_EVENTS:
            self.refresh_overview()
        screen = self.screen
        if isinstance(screen, TaskDetailScreen) and any(
            event.task is not None and event.task.id == screen.task_id for event in batch.events
        ):
            screen.load()
        if isinstance(screen, WorkflowScreen) and any(
            event.task is not None and (event.task.workflow_id == screen.workflow_id or screen.has_step(event.task.id))
            for event in batch.events
        ):
            screen.load()

    def _record_success(self, read: str) -> None:
        if self._errors.pop(read, None) is not None:
            self._show_errors()
        self.reachable = True

    def _show_errors(self) -> None:
        """The banner of a reachable control plane: the error of a read that still fails, else none."""
        if self._errors:
            self.header.show_error(next(iter(self._errors.values())))
        else:
            self.header.show_connected()

    def _record_failure(self, exc: Exception, read: str) -> None:
        if isinstance(exc, ControlPlaneUnavailable):
            self._last_problem = str(exc)
            if self.reachable is False:
                self.header.show_unreachable(self._last_problem)
            self.reachable = False
        else:
            if not isinstance(exc, FastworkerError):
                logger.error("request failed unexpectedly: %r", exc, exc_info=exc)
            self._errors[read] = f"{type(exc).__name__}: {exc}"
            self.header.show_error(self._errors[read])

    # -------------------------------------------------------------------------------- task list

    def current_query(self) -> TaskQuery:
        """The task list's state filter and search text."""
        return TaskQuery(states=STATE_FILTERS[self.state_filter].states, text=self.search_text)

    def _show_task_title(self, listing: TaskListing | None) -> None:
        text = Text("filter ", style="dim")
        text.append(STATE_FILTERS[self.state_filter].label, style="bold")
        if self.search_text:
            text.append("  search ", style="dim")
            text.append(self.search_text, style="bold")
        if listing is not None:
            text.append(f"  showing {len(listing.tasks):,} of {listing.total:,}", style="dim")
        self.task_title.update(text)

    # ----------------------------------------------------------------------------------- actions

    def _target_task_id(self) -> str | None:
        """The task the keys act on: the detail screen's, else the task list's cursor row."""
        screen = self.screen
        if isinstance(screen, TaskDetailScreen):
            return screen.task_id
        return self.task_table.selected_key()

    def _target_priority(self) -> str | None:
        """The level ``p`` acts on: the focused queue row's (of any named queue), else the target task's level."""
        if self.focused is self.queue_table:
            return self.queue_table.selected_level()
        screen = self.screen
        if isinstance(screen, TaskDetailScreen):
            return screen.info.priority.value if screen.info is not None else None
        task = self.task_table.selected_task()
        return task.priority.value if task is not None else None

    def _warn(self, message: str) -> None:
        self.notify(message, severity="warning", markup=False)

    def _fail(self, message: str) -> None:
        self.notify(message, severity="error", markup=False, timeout=8)

    def action_help(self) -> None:
        """Show the key help."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_focus_search(self) -> None:
        """Focus the search box."""
        self.search.focus()

    def action_leave_search(self) -> None:
        """Return from the search box to the task list."""
        if self.focused is self.search:
            self.task_table.focus()

    def action_cycle_filter(self) -> None:
        """Show the next state filter's tasks."""
        self.state_filter = (self.state_filter + 1) % len(STATE_FILTERS)

    def action_open_detail(self) -> None:
        """Open the selected task's detail screen."""
        task_id = self._target_task_id()
        if task_id is None:
            self._warn("no task selected")
            return
        self._open_detail(task_id)

    def _open_detail(self, task_id: str) -> None:
        if isinstance(self.screen, TaskDetailScreen):
            return
        self.push_screen(
            TaskDetailScreen(
                self.client, task_id, refresh_interval=self.refresh_interval, unserved=self.queue_table.is_unserved
            )
        )

    def action_open_workflow(self) -> None:
        """Show the workflow of the task in the detail screen (or of the task list's selected task)."""
        screen = self.screen
        if isinstance(screen, WorkflowScreen):
            return
        info = screen.info if isinstance(screen, TaskDetailScreen) else self.task_table.selected_task()
        if info is None:
            self._warn("no task selected")
            return
        if not info.workflow_id:
            self._warn(f"task {info.id} is not a step of a workflow")
            return
        below = self.screen_stack[-2] if len(self.screen_stack) > 1 else None
        if isinstance(screen, TaskDetailScreen) and isinstance(below, WorkflowScreen):
            if below.workflow_id == info.workflow_id:
                screen.dismiss()  # opened from that workflow's screen: go back to it, rather than stack another
                return
        self.push_screen(WorkflowScreen(self.client, info.workflow_id, refresh_interval=self.refresh_interval))

    def action_cancel_task(self) -> None:
        """Cancel the selected task, once confirmed."""
        task_id = self._target_task_id()
        if task_id is None:
            self._warn("no task selected")
            return
        self._confirm(f"Cancel task {task_id}?", lambda: self._cancel(task_id))

    def action_retry_task(self) -> None:
        """Retry the selected task, once confirmed (the control plane refuses unless it ended in FAILURE or CANCELLED)."""
        task_id = self._target_task_id()
        if task_id is None:
            self._warn("no task selected")
            return
        self._confirm(f"Retry task {task_id}? It runs again.", lambda: self._retry(task_id))

    def _confirm(self, question: str, then: Callable[[], object]) -> None:
        """Ask ``question`` and run ``then`` on yes (keys pressed while it asks do not ask again)."""
        if isinstance(self.screen, ConfirmScreen):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(ConfirmScreen(question), answered)

    def action_toggle_pause(self) -> None:
        """Pause the target level, or resume it when it is paused."""
        level = self._target_priority()
        if level is None:
            if self.focused is self.queue_table and self.queue_table.selected_key() is not None:
                self._warn("nothing waits in this queue: select a level's row to pause that level")
            else:
                self._warn("select a queue row or a task to pause its level")
            return
        paused = self.queue_table.is_paused(level)
        question = f"{'Resume' if paused else 'Pause'} the {level} level (in every queue)?"
        self._confirm(question, lambda: self._toggle_pause(level, paused))

    @work(group="actions", exit_on_error=False)
    async def _cancel(self, task_id: str) -> None:
        try:
            outcome = await self.client.cancel(task_id)
        except TaskNotFound:
            self._fail(f"cannot cancel {task_id}: not known to the control plane")
        except Exception as exc:
            self._fail(f"cannot cancel {task_id}: {exc}")
        else:
            if outcome.cancelled:
                self.notify(f"cancelled {task_id} (was {outcome.previous_state.value})", markup=False)
            else:
                self._warn(f"{task_id} not cancelled: already {outcome.previous_state.value}")
        self._after_task_action()

    @work(group="actions", exit_on_error=False)
    async def _retry(self, task_id: str) -> None:
        try:
            state = await self.client.retry(task_id)
        except TaskNotFound:
            self._fail(f"cannot retry {task_id}: not known to the control plane")
        except Exception as exc:
            self._fail(f"cannot retry {task_id}: {exc}")
        else:
            self.notify(f"retrying {task_id} (now {state.value})", markup=False)
        self._after_task_action()

    @work(group="actions", exit_on_error=False)
    async def _toggle_pause(self, level: str, paused: bool) -> None:
        verb = "resume" if paused else "pause"
        try:
            now_paused = await (self.client.resume(level) if paused else self.client.pause(level))
        except Exception as exc:
            self._fail(f"cannot {verb} {level}: {exc}")
        else:
            # The control plane pauses a level in every named queue: say so once there are several.
            where = " in every queue" if self.queue_table.queue_count > 1 else ""
            self.notify(f"{'paused' if now_paused else 'resumed'} {level}{where}", markup=False)
        self.refresh_overview()

    def _after_task_action(self) -> None:
        self.request_task_refresh()
        screen = self.screen
        if isinstance(screen, TaskDetailScreen):
            screen.load()


def make_app(
    control_plane: str,
    secret: Secret | None = None,
    *,
    client: AdminClient | None = None,
    refresh_interval: float = 1.0,
) -> FastworkerTop:
    """Build fastworker-top for a control plane (or for the given client, which the caller keeps and closes).

    Args:
        control_plane: The control plane's discovery address.
        secret: The shared secret, if the control plane requires one.
        client: A ready client (tests pass fakes); by default one is created and closed on exit.
        refresh_interval: Seconds between polls.
    """
    if client is not None:
        return FastworkerTop(client, address=control_plane, refresh_interval=refresh_interval)
    # Short timeouts: an unreachable control plane should show in the header within seconds.
    timeout = max(3.0, 3 * refresh_interval)
    real = Client(control_plane, secret=secret, connect_timeout=timeout, request_timeout=timeout)
    return FastworkerTop(real, address=control_plane, refresh_interval=refresh_interval, owns_client=True)
