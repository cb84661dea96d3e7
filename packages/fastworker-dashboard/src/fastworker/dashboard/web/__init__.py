"""The FastWorker web dashboard: server-rendered pages, live updates, a JSON API and Prometheus metrics.

It reads and acts only through the control plane's admin API (``fastworker.client``), so it runs
in-process inside the control plane or standalone against a remote one.
"""

from fastworker.dashboard.web.app import create_app
from fastworker.dashboard.web.server import RunningDashboard, parse_address, start_in_thread

__all__ = ["RunningDashboard", "create_app", "parse_address", "start_in_thread"]
