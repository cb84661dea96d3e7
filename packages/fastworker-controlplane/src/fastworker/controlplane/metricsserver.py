"""The control plane's plain-HTTP listener (``--metrics-address``): ``/metrics`` for Prometheus, ``/healthz`` for probes.

The listener (threads of its own, Host check, connection caps, the loop's answer bounded in time)
is ``fastworker.client._httplisten``, shared with the subworker's ``/healthz``; what the loop
reports is a copy taken there. ``prometheus_client`` renders the exposition (text or OpenMetrics,
as the scraper asks) and adds the process and Python collectors; it is imported at the first
scrape, so a control plane nobody scrapes does not hold it (~1 MiB).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fastworker.client._httplisten import (
    LOOP_ANSWER_TIMEOUT,
    HttpListener,
    StartResponse,
    health,
    on_loop,
    plain,
    refuse_unserved,
)
from fastworker.controlplane.snapshot import Snapshot

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)

__all__ = ["LOOP_ANSWER_TIMEOUT", "MetricsServer"]


class MetricsServer(HttpListener):
    """Serves ``/metrics`` and ``/healthz`` from a thread; every answer is taken on ``loop``.

    ``snapshot`` and ``healthy`` run on the loop's thread; ``healthy`` returns None when the
    control plane serves, else the reason it does not.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        snapshot: Callable[[], Snapshot],
        healthy: Callable[[], str | None],
    ) -> None:
        self._loop = loop
        self._snapshot = snapshot
        self._healthy = healthy
        self._registry: CollectorRegistry | None = None
        self._registry_lock = threading.Lock()  # scrapes are answered on the listener's threads
        super().__init__(address, self._answer, what="metrics")

    @property
    def registry(self) -> CollectorRegistry:
        """What a scrape renders: the control plane's families, the process's and the interpreter's (made once)."""
        with self._registry_lock:
            if self._registry is None:
                from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

                from fastworker.controlplane.exporter import ControlPlaneCollector

                registry = CollectorRegistry(auto_describe=False)
                registry.register(ControlPlaneCollector(lambda: on_loop(self._loop, self._snapshot)))
                ProcessCollector(registry=registry)
                PlatformCollector(registry=registry)
                GCCollector(registry=registry)
                self._registry = registry
            return self._registry

    # ------------------------------------------------------------------------------- the server thread

    def _answer(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        refused = refuse_unserved(environ, start_response, ("/metrics", "/healthz"))
        if refused is not None:
            return refused
        method = environ.get("REQUEST_METHOD", "GET")
        if environ.get("PATH_INFO", "") == "/healthz":
            return health(self._loop, self._healthy, start_response, method, "control plane")
        return self._metrics(environ, start_response, method)

    def _metrics(self, environ: dict[str, Any], start_response: StartResponse, method: str) -> Iterable[bytes]:
        registry = self.registry
        from prometheus_client.exposition import choose_encoder, gzip_accepted

        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        try:
            body = encoder(registry)
        except (TimeoutError, RuntimeError) as exc:
            logger.warning("metrics scrape failed: %s", exc or type(exc).__name__)
            return plain(
                start_response, "503 Service Unavailable", "the control plane's event loop does not answer\n", method
            )
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [b"" if method == "HEAD" else body]
