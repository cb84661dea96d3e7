"""Wake the event loop from other threads with one descriptor write: the local slots' completion signal.

``loop.call_soon_threadsafe`` makes a handle per call and, on the loop, reads asyncio's self-pipe
until it is empty (a second read that fails, raised as an exception): about a tenth of a local
task's round trip on a small VM. A :class:`LoopWakeup` coalesces any number of ``set()`` calls
into one callback and costs one write and one read of its own eventfd (a pipe where there is none).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable


class LoopWakeup:
    """Runs ``callback`` on the loop soon after :meth:`set` is called from any thread.

    Sets that come before the callback runs are coalesced into that one call, and the pending flag
    is cleared before the callback runs: whatever a thread queued before calling ``set`` is seen by
    the callback that follows. Safe to ``set`` after :meth:`close` (it does nothing then).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._pending = False
        #: When the pending wake-up was asked for (monotonic).
        self._asked_at = 0.0
        #: One held lock per thread in :meth:`let_loop_run`, released once a callback ran. Made by
        #: the waiting threads, not by ``set`` (a threading.Event per wake-up cost ~2 µs of the GIL).
        self._waiting: list[threading.Lock] = []
        self._closed = False
        # Guards the descriptors against a thread writing while close() releases them (the number
        # could be reused by an unrelated file at once).
        self._lock = threading.Lock()
        if hasattr(os, "eventfd"):
            self._read_fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - platforms without eventfd
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)
        loop.add_reader(self._read_fd, self._on_readable)

    def set(self) -> None:
        """Ask for the callback to run on the loop (any thread; cheap when one is already asked for)."""
        if self._pending:
            return
        self._asked_at = time.monotonic()
        self._pending = True
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._write_fd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except BlockingIOError:
                pass  # full (a pipe): the loop has a wake-up waiting already

    def _on_readable(self) -> None:
        try:
            os.read(self._read_fd, 4096)
        except BlockingIOError:
            return
        self._pending = False
        try:
            self._callback()
        finally:
            self._release_waiting()

    def _release_waiting(self) -> None:
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for gate in waiting:
                gate.release()

    def let_loop_run(self, after: float, timeout: float) -> None:
        """Wait (without the GIL) for the pending callback if it was asked for more than ``after`` seconds ago.

        Threads that keep the GIL busy (local slots running short tasks) would otherwise keep the
        loop from it for many switch intervals: the loop competes for the GIL with each of them.
        Waiting at most ``timeout``: a loop busy elsewhere slows the caller down, never stops it.
        """
        if self._pending and time.monotonic() - self._asked_at > after:
            gate = threading.Lock()
            gate.acquire()
            self._waiting.append(gate)
            # Looked at again once listed: the loop clears the flag before it runs the callback and
            # releases the listed gates after it, so a wake-up served meanwhile is not waited for.
            if self._pending and not self._closed:
                gate.acquire(timeout=timeout)

    def close(self) -> None:
        """Stop watching and release the descriptors (on the loop's thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release_waiting()
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            if self._write_fd != self._read_fd:
                os.close(self._write_fd)
