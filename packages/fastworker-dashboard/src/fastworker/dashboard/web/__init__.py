"""The FastWorker web dashboard: server-rendered pages, live updates, a JSON API and Prometheus metrics.

It reads and acts only through the control plane's admin API (``fastworker.client``), so it runs
in-process inside the control plane or standalone against a remote one. Importing this package
loads no web framework: ``create_app`` and the server load on first use (PEP 562), so the control
plane can bind the dashboard's port without them (see ``lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastworker.dashboard.web.app import create_app
    from fastworker.dashboard.web.server import RunningDashboard, start_in_thread

from fastworker.dashboard.web.listen import parse_address

_LAZY = {
    "create_app": "fastworker.dashboard.web.app",
    "RunningDashboard": "fastworker.dashboard.web.server",
    "start_in_thread": "fastworker.dashboard.web.server",
}

if not TYPE_CHECKING:

    def __getattr__(name):
        """Import a lazily loaded name's module once, then keep the name here (PEP 562)."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


__all__ = ["RunningDashboard", "create_app", "parse_address", "start_in_thread"]
