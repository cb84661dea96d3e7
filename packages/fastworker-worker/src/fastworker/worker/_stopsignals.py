"""The signals a FastWorker daemon answers, and how: one set for the control plane and the subworker.

Private, shared by the daemons (see ``SHARED_INTERNALS`` in ``scripts/check_layout.py``). SIGTERM
and SIGINT stop a daemon gracefully (drain, then exit 0); so does SIGHUP, which a closing terminal
sends to a daemon in the foreground, and whose default action ended it at once, with no drain and
its ready file left behind. SIGUSR1 and SIGUSR2 mean nothing to the daemons: they are logged and
ignored rather than ending it (their default action), since a container's init passes them on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

__all__ = ["IGNORED_SIGNALS", "PARENT_PID_VARIABLE", "STOP_SIGNALS", "answer_signals"]

logger = logging.getLogger(__name__)

#: Signals that stop a daemon gracefully.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Signals a daemon logs and otherwise ignores.
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


#: The environment variable that ties a daemon to its parent: the parent's pid (the testing harness sets it).
PARENT_PID_VARIABLE = "FASTWORKER_PARENT_PID"
#: How often a tied daemon looks at its parent, in seconds.
PARENT_CHECK_INTERVAL = 0.5


def answer_signals(loop: asyncio.AbstractEventLoop, request_stop: Callable[[str], None]) -> None:
    """Make ``loop`` call ``request_stop(<signal name>)`` on a stop signal, and log the ignored ones.

    A daemon started with ``FASTWORKER_PARENT_PID`` set to its parent's pid also stops, as on
    SIGTERM, once that parent is gone: a test session killed with SIGTERM or SIGKILL (by
    ``timeout``, a cancelled CI job, an IDE's stop button) runs no teardown, and left its daemons running.
    """
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, request_stop, signum.name)
    for signum in IGNORED_SIGNALS:
        loop.add_signal_handler(signum, _ignored, signum.name)
    parent = os.environ.get(PARENT_PID_VARIABLE, "")
    if parent:
        _watch_parent(loop, parent, request_stop)


def _watch_parent(loop: asyncio.AbstractEventLoop, parent: str, request_stop: Callable[[str], None]) -> None:
    """Call ``request_stop`` once this process's parent is no longer ``parent`` (it exited: another adopted us)."""
    if not parent.isdigit() or int(parent) <= 1:
        logger.warning("%s=%r is not a parent process id: ignored", PARENT_PID_VARIABLE, parent)
        return
    expected = int(parent)

    def look() -> None:
        if os.getppid() != expected:
            request_stop(f"its parent process {expected} exited")
            return
        loop.call_later(PARENT_CHECK_INTERVAL, look)

    look()


def _ignored(name: str) -> None:
    logger.info("%s received: it means nothing to this daemon (SIGTERM, SIGINT or SIGHUP stop it)", name)
