"""The widgets fastworker-top is built from: header, queue, worker and task tables."""

from fastworker.dashboard.tui.widgets.header import TopHeader
from fastworker.dashboard.tui.widgets.queues import QueueTable
from fastworker.dashboard.tui.widgets.tasks import TaskTable
from fastworker.dashboard.tui.widgets.workers import WorkerTable

__all__ = ["QueueTable", "TaskTable", "TopHeader", "WorkerTable"]
