"""The key help screen (``?``): what every key does, and which level ``p`` pauses."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

#: (key, what it does) pairs, in the order shown.
KEYS: tuple[tuple[str, str], ...] = (
    ("up/down", "move the cursor in the focused table"),
    ("tab", "focus the next panel: search, queues, limits (while a task name is limited), workers, tasks"),
    ("enter", "open the selected task's details (args, result, traceback, timings)"),
    ("w", "a workflow step's workflow: every step indented under what it waits for, with its state;"),
    ("", "  enter there opens a step's details"),
    ("c", "cancel the selected task (y or enter confirms, n or escape does not)"),
    ("r", "retry the selected task (FAILURE or CANCELLED only; confirmed as c is)"),
    ("p", "pause or resume a priority level, once confirmed (in every named queue): the selected queue row's level"),
    ("", "  while the queue panel has focus, otherwise the selected task's level"),
    ("f", "cycle the state filter: all, active, running, waiting, failed, succeeded, cancelled"),
    ("/", "search by task name (or part of it) or task-id prefix; enter or escape returns to the list"),
    ("escape", "close this screen or the detail screen"),
    ("?", "this help"),
    ("q", "quit"),
)


def help_text() -> Text:
    """The key table as text."""
    text = Text()
    for key, description in KEYS:
        text.append(f"{key:>9}  ", style="bold cyan")
        text.append(description + "\n")
    return text


class HelpScreen(ModalScreen[None]):
    """Lists the keys; escape or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        """One dialog with the key table."""
        with Vertical(id="help-dialog", classes="dialog"):
            yield Static(Text("fastworker-top keys", style="bold"), classes="dialog-title")
            yield Static(help_text(), id="help-body")
