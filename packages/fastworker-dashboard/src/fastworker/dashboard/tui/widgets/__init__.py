"""The widgets fastworker-top is built from: header, queue, limit, worker and task tables."""

from fastworker.dashboard.tui.widgets.header import TopHeader
from fastworker.dashboard.tui.widgets.limits import LimitTable
from fastworker.dashboard.tui.widgets.queues import QueueTable
from fastworker.dashboard.tui.widgets.tasks import TaskTable
from fastworker.dashboard.tui.widgets.workers import WorkerTable

__all__ = ["LimitTable", "QueueTable", "TaskTable", "TopHeader", "WorkerTable"]
