"""The subworker's ``/healthz`` (``--health-address``), for a liveness probe.

A worker serves no port of its own otherwise, so without this a worker whose event loop is stuck
(an async task that blocks it, a deadlock) would hold its pod forever while the control plane has
long dropped it. ``/healthz`` answers 200 while the worker's loop answers within a few seconds and
the worker has not stopped, 503 otherwise; it does not depend on the control plane (a worker
waiting for one to come back is alive, and restarting it would not help).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from fastworker.client._httplisten import HttpListener, StartResponse, health, refuse_unserved

#: The one path served.
HEALTH_PATH = "/healthz"


class HealthServer(HttpListener):
    """Serves ``/healthz`` on ``address`` from a thread; ``healthy`` runs on ``loop`` (None: healthy, else why not)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str, healthy: Callable[[], str | None]) -> None:
        self._loop = loop
        self._healthy = healthy
        super().__init__(address, self._answer, what="health")

    def _answer(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        refused = refuse_unserved(environ, start_response, (HEALTH_PATH,))
        if refused is not None:
            return refused
        return health(self._loop, self._healthy, start_response, environ.get("REQUEST_METHOD", "GET"), "worker")
