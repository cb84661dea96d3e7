"""Making sure fastworker-top ends: when its terminal is gone, and when a quit signal's clean exit hangs.

Textual notices neither a terminal that went away without a SIGHUP (a pseudo-terminal whose other
side closed while it was not the controlling terminal: started with ``setsid``, by a supervisor
or a test driver) nor a shutdown that cannot finish: its input thread then spins on the dead
descriptor at 100 % of a CPU, and its exit blocks for ever writing to it. So the app looks at its
terminal on every poll, and a quit asks for the process to end within a deadline, cleanly if
Textual can, else at once.
"""

from __future__ import annotations

import os
import select
import threading

#: Seconds a clean exit (restoring the terminal, closing the client) may take before the process just ends.
QUIT_DEADLINE = 3.0
_HUNG_UP = select.POLLHUP | select.POLLERR | select.POLLNVAL


def terminal_gone(fd: int) -> bool:
    """True when the terminal on ``fd`` hung up (the other side of its pseudo-terminal closed, or it is not open)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)  # (hang-ups and errors are reported whatever is asked for)
    return any(events & _HUNG_UP for _, events in poller.poll(0))


def end_within(deadline: float, code: int) -> threading.Timer:
    """End the process with ``code`` after ``deadline`` seconds unless it ended by itself before (or the timer is cancelled)."""
    timer = threading.Timer(deadline, os._exit, args=(code,))
    timer.daemon = True  # (a process that ends by itself does not wait for it)
    timer.start()
    return timer
