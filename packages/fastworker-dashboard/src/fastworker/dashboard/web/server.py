"""Runs a dashboard app under uvicorn in a daemon thread with its own event loop (how the control plane embeds it).

The socket is bound before the server starts, so port 0 works and :attr:`RunningDashboard.url`
names the real port; :func:`start_in_thread` returns only once the server accepts connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from fastworker.dashboard.web.listen import bind, bound_address, local_url, parse_address

__all__ = [
    "MAX_CONNECTIONS",
    "REQUEST_HEAD_TIMEOUT",
    "START_TIMEOUT",
    "RunningDashboard",
    "parse_address",
    "serve_socket",
    "start_in_thread",
]

logger = logging.getLogger(__name__)

#: Longest wait for the server to start serving, in seconds.
START_TIMEOUT = 15.0
#: Most connections the dashboard holds at once; the next ones are answered 503 and closed.
MAX_CONNECTIONS = 128
#: Seconds a connection has to send its request's head (from its first byte, or from connecting):
#: one that sends nothing, or trickles a header now and then, is closed then. Without it, 128 silent
#: connections held every place and the dashboard answered 503 to everyone for as long as they liked.
REQUEST_HEAD_TIMEOUT = 10.0


class _HeadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head does not arrive within ``REQUEST_HEAD_TIMEOUT``.

    Between requests uvicorn's keep-alive timeout closes an idle connection; it stops at the next
    byte, so a head that then comes a byte at a time is bounded here too.
    """

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(REQUEST_HEAD_TIMEOUT, self._head_too_late)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._between_requests():
            self._cancel_head_timer()  # a request is under way: its head came
        elif self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(REQUEST_HEAD_TIMEOUT, self._head_too_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_late(self) -> None:
        self._head_timer = None
        if self._between_requests():
            self.transport.close()


@dataclass
class RunningDashboard:
    """A dashboard served from a background thread; :meth:`stop` shuts it down.

    ``url`` is where to browse it from this machine; ``bound`` is what it really listens on
    (``0.0.0.0:8080`` for a wildcard bind).
    """

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    bound: str = ""
    _stop_streams: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        """True while the server thread runs."""
        return self.thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """End live streams, ask uvicorn to exit, and wait up to ``timeout`` seconds for the thread."""
        if self.thread.is_alive():
            stop_streams = self._stop_streams
            if stop_streams is not None:
                try:
                    self.loop.call_soon_threadsafe(stop_streams)
                except RuntimeError:  # the loop already closed
                    pass
            self.server.should_exit = True
            self.thread.join(timeout)
            if self.thread.is_alive():
                self.server.force_exit = True
                self.thread.join(timeout)
                if self.thread.is_alive():
                    logger.warning("dashboard server thread did not stop within %.1f s", 2 * timeout)


def start_in_thread(app: FastAPI, host: str, port: int, *, log_level: str = "warning") -> RunningDashboard:
    """Serve ``app`` on host:port from a daemon thread; returns once it accepts connections.

    Raises:
        OSError: the address cannot be bound (in use, not local, ...).
        RuntimeError: the server did not start (its lifespan failed, or it took longer than ``START_TIMEOUT``).
    """
    return serve_socket(app, bind(host, port), log_level=log_level)


def serve_socket(app: FastAPI, sock: socket.socket, *, log_level: str = "warning") -> RunningDashboard:
    """Serve ``app`` on an already listening socket from a daemon thread; returns once it accepts connections.

    The server owns the socket from here on and closes it when it stops.

    Raises:
        RuntimeError: the server did not start (its lifespan failed, or it took longer than ``START_TIMEOUT``).
    """
    url = local_url(sock)
    bound = bound_address(sock)
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=3,
        server_header=False,
        # The client's address is the connection's: uvicorn would otherwise take X-Forwarded-For
        # from any loopback peer, and a local caller (or a proxy passing the header through) would
        # pick the address the password throttle counts and the log names.
        proxy_headers=False,
        # Connections held at once (each open page's live stream is one): beyond, 503 at once. Inside
        # the control plane, connections nobody bounded (slow ones sending a header line now and
        # then) used up its descriptors, and new clients and workers were refused.
        limit_concurrency=MAX_CONNECTIONS,
        http=_HeadTimeoutH11,
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # SystemExit from a failed lifespan included
            failure.append(exc)
            logger.error("dashboard server stopped: %r", exc)
        finally:
            sock.close()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    thread = threading.Thread(target=run, name=f"fastworker-dashboard-{url}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the dashboard server did not start on {url}: {failure[0] if failure else 'it exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5.0)
            raise RuntimeError(f"the dashboard server did not start on {url} within {START_TIMEOUT:g} s")
        time.sleep(0.01)
    stop_streams = getattr(app.state, "stop_streams", None)
    return RunningDashboard(url=url, server=server, thread=thread, loop=loop, bound=bound, _stop_streams=stop_streams)
