"""A workflow's steps as an indented list: each step under the step it waits for, so the order reads top to bottom.

``fastworker workflow``, the web dashboard's workflow page and ``fastworker-top`` all show a
workflow this way. A step with several dependencies (a chord's callback) appears once, under the
last of them in step order, and says how many steps it waits for. A state is drawn in one
colour everywhere on a terminal (:func:`state_text`, for ``fastworker`` and ``fastworker-top``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

from fastworker.client.models import TaskInfo, TaskState

__all__ = ["MAX_INDENT", "STATE_STYLES", "TreeRow", "state_counts", "state_text", "workflow_tree"]

#: How each state shows on a terminal (rich drops the colours when the output is piped).
STATE_STYLES: dict[TaskState, str] = {
    TaskState.PENDING: "cyan",
    TaskState.SCHEDULED: "blue",
    TaskState.RUNNING: "bold yellow",
    TaskState.RETRYING: "magenta",
    TaskState.SUCCESS: "green",
    TaskState.FAILURE: "bold red",
    TaskState.CANCELLED: "dim",
}


def state_text(state: TaskState | str) -> Text:
    """A task state in its colour (a value that is no state, as shown, uncoloured)."""
    try:
        parsed = TaskState(state)
    except ValueError:
        return Text(str(state))
    return Text(parsed.value, style=STATE_STYLES.get(parsed, ""))


#: Deeper steps (a long chain) are drawn at this indentation, so that rows stay readable.
MAX_INDENT = 12


@dataclass(frozen=True, slots=True)
class TreeRow:
    """One step in the indented list.

    Attributes:
        step: The step's info.
        depth: How many steps lie above it on its line of dependencies (0: it waits for none).
        waits_for: How many steps of the workflow it waits for; above 1 for a chord's callback.
    """

    step: TaskInfo
    depth: int
    waits_for: int

    @property
    def indent(self) -> int:
        """The indentation to draw: ``depth``, at most :data:`MAX_INDENT`."""
        return min(self.depth, MAX_INDENT)

    @property
    def after_note(self) -> str:
        """``"after 3 steps"`` for a step that waits for several, else ``""``."""
        return f"after {self.waits_for} steps" if self.waits_for > 1 else ""


def workflow_tree(steps: Sequence[TaskInfo]) -> list[TreeRow]:
    """The steps (in step order, as ``WorkflowInfo.steps`` lists them) as an indented list, top to bottom.

    A step hangs under the dependency that comes last in step order; steps that wait for nothing
    start at depth 0. Dependencies outside the list, or later in it, do not place a step (so any
    input gives every step exactly once).
    """
    position = {step.id: index for index, step in enumerate(steps)}
    children: list[list[int]] = [[] for _ in steps]
    roots: list[int] = []
    waits_for: list[int] = []
    for index, step in enumerate(steps):
        earlier = {position[d] for d in step.depends_on if position.get(d, index) < index}
        waits_for.append(len(earlier))
        if earlier:
            children[max(earlier)].append(index)
        else:
            roots.append(index)
    rows: list[TreeRow] = []
    pending = [(index, 0) for index in reversed(roots)]
    while pending:
        index, depth = pending.pop()
        rows.append(TreeRow(steps[index], depth, waits_for[index]))
        pending.extend((child, depth + 1) for child in reversed(children[index]))
    return rows


def state_counts(steps: Sequence[TaskInfo]) -> list[tuple[TaskState, int]]:
    """How many steps are in each state, in the order of ``TaskState``, leaving out states no step is in."""
    counts = dict.fromkeys(TaskState, 0)
    for step in steps:
        counts[step.state] += 1
    return [(state, count) for state, count in counts.items() if count]
