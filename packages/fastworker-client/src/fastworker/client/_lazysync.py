"""A process-wide SyncClient made on first use: thread-safe, closed at exit, made anew in a forked child.

Private to the client distribution: the default for sync typed calls (made from the environment,
``handles``) and the Django integration's (made from the ``FASTWORKER`` setting) are both one of
these, so the rules live once. A forked child (gunicorn, Celery-style prefork, multiprocessing)
never uses the parent's client: its background thread did not survive the fork.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastworker.client._sync import SyncClient

__all__ = ["LazySyncClient"]

logger = logging.getLogger(__name__)


class LazySyncClient:
    """Holds at most one open SyncClient, made by the ``make`` given to :meth:`get` when none is open.

    Args:
        name: What the client is, for the warning logged if closing it fails.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._client: SyncClient | None = None
        self._lock = threading.Lock()
        self._hooks_installed = False

    @property
    def current(self) -> SyncClient | None:
        """The client made and not closed through :meth:`close` yet, if any."""
        return self._client

    def get(self, make: Callable[[], SyncClient]) -> SyncClient:
        """The open client, made with ``make`` first if there is none (or it was closed).

        What ``make`` raises propagates, and nothing is kept.
        """
        client = self._client
        if client is not None and not client.closed:
            return client
        with self._lock:
            if self._client is None or self._client.closed:
                self._client = make()
                if not self._hooks_installed:
                    self._hooks_installed = True
                    atexit.register(self.close)
                    if hasattr(os, "register_at_fork"):
                        os.register_at_fork(after_in_child=self._forget)
            return self._client

    def close(self) -> None:
        """Close the client, if one is open; the next :meth:`get` makes a new one (at exit; tests; a changed setting)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # at interpreter exit: report, never raise
                logger.warning("closing %s failed", self._name, exc_info=True)

    def _forget(self) -> None:
        """In a forked child: drop the parent's client unclosed (its thread is not here) and a lock it may hold."""
        self._client = None
        self._lock = threading.Lock()
