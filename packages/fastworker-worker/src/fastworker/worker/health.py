"""The subworker's ``/healthz`` and ``/readyz`` (``--health-address``), for liveness and readiness probes.

A worker serves no port of its own otherwise, so without this a worker whose event loop is stuck
(an async task that blocks it, a deadlock) would hold its pod forever while the control plane has
long dropped it. ``/healthz`` answers 200 while the worker's loop answers within a few seconds and
the worker has not stopped, 503 otherwise; it does not depend on the control plane (a worker
waiting for one to come back is alive, and restarting it would not help). ``/readyz`` answers 200
only while the worker is registered and takes tasks: a worker that can never register (a wrong
secret: it cannot even read the announcements, so the control plane never hears of it) shows as
not ready instead of healthy and idle, and a rollout stops at it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from fastworker.client._httplisten import HttpListener, StartResponse, health, refuse_unserved

#: Liveness: the worker's loop answers.
HEALTH_PATH = "/healthz"
#: Readiness: registered with a control plane, taking tasks.
READY_PATH = "/readyz"


class HealthServer(HttpListener):
    """Serves ``/healthz`` and ``/readyz`` on ``address`` from a thread.

    ``healthy`` and ``ready`` run on ``loop`` and return None, or why not.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        healthy: Callable[[], str | None],
        ready: Callable[[], str | None],
    ) -> None:
        self._loop = loop
        self._checks = {HEALTH_PATH: healthy, READY_PATH: ready}
        super().__init__(address, self._answer, what="health")

    def _answer(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        refused = refuse_unserved(environ, start_response, (HEALTH_PATH, READY_PATH))
        if refused is not None:
            return refused
        check = self._checks[environ["PATH_INFO"]]
        return health(self._loop, check, start_response, environ.get("REQUEST_METHOD", "GET"), "worker")
