"""fastworker-top: a terminal UI ("htop for the queue") fed by the control plane's admin API and event stream."""

from fastworker.dashboard.tui.app import FastworkerTop, make_app

__all__ = ["FastworkerTop", "make_app"]
