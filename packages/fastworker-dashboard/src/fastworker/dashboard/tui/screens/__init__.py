"""fastworker-top's modal screens: task detail and key help."""

from fastworker.dashboard.tui.screens.detail import TaskDetailScreen
from fastworker.dashboard.tui.screens.help import HelpScreen

__all__ = ["HelpScreen", "TaskDetailScreen"]
