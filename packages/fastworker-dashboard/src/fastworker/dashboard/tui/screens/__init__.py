"""fastworker-top's modal screens: task detail, workflow and key help."""

from fastworker.dashboard.tui.screens.detail import TaskDetailScreen
from fastworker.dashboard.tui.screens.help import HelpScreen
from fastworker.dashboard.tui.screens.workflow import WorkflowScreen

__all__ = ["HelpScreen", "TaskDetailScreen", "WorkflowScreen"]
