"""fastworker-top's modal screens: task detail, workflow, key help and the question before an action."""

from fastworker.dashboard.tui.screens.confirm import ConfirmScreen
from fastworker.dashboard.tui.screens.detail import TaskDetailScreen
from fastworker.dashboard.tui.screens.help import HelpScreen
from fastworker.dashboard.tui.screens.workflow import WorkflowScreen

__all__ = ["ConfirmScreen", "HelpScreen", "TaskDetailScreen", "WorkflowScreen"]
