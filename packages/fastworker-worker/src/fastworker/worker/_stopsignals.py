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
import signal
from collections.abc import Callable

__all__ = ["IGNORED_SIGNALS", "STOP_SIGNALS", "answer_signals"]

logger = logging.getLogger(__name__)

#: Signals that stop a daemon gracefully.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Signals a daemon logs and otherwise ignores.
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def answer_signals(loop: asyncio.AbstractEventLoop, request_stop: Callable[[str], None]) -> None:
    """Make ``loop`` call ``request_stop(<signal name>)`` on a stop signal, and log the ignored ones."""
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, request_stop, signum.name)
    for signum in IGNORED_SIGNALS:
        loop.add_signal_handler(signum, _ignored, signum.name)


def _ignored(name: str) -> None:
    logger.info("%s received: it means nothing to this daemon (SIGTERM, SIGINT or SIGHUP stop it)", name)
