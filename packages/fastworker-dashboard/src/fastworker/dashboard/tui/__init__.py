"""fastworker-top: a terminal UI ("htop for the queue") fed by the control plane's admin API and event stream.

The app's names are imported on first use, so that the command line (``tui.cli``: ``--help``,
``--version``, usage errors) starts without loading Textual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastworker.dashboard.tui.app import FastworkerTop, make_app

__all__ = ["FastworkerTop", "make_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fastworker.dashboard.tui import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
