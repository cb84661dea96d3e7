"""The control plane's dashboard, bound at start and loaded when the first browser connects.

The web stack (FastAPI, Starlette, Jinja, uvicorn) costs a control plane about 23 MiB of resident
memory and half a second of start-up, and most control planes run for days without anyone
opening the page. So the port is bound at once (its URL is announced, port 0 works, a port in use
fails the start as before) while a thread waits for the first connection; only then is the stack
imported and served on that same socket. The waiting connection sits in the listen backlog
meanwhile, so the first page is slower by the import, and nothing is refused.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastworker.dashboard.web.listen import bind, bound_address, local_url

if TYPE_CHECKING:
    from fastworker.dashboard.web.server import RunningDashboard

logger = logging.getLogger(__name__)


class LazyDashboard:
    """A bound dashboard socket; the app (``make_app()``, a FastAPI app) is built and served on first connection.

    ``url`` is where to browse it from this machine, ``bound`` what it listens on; :attr:`loaded`
    tells whether the web stack was loaded yet. If building or starting the app fails, the error is
    logged, that connection is answered ``503``, and the next connection tries again.
    """

    def __init__(self, make_app: Callable[[], Any], host: str, port: int, *, log_level: str = "warning") -> None:
        """Bind host:port (raises OSError when it cannot) and start waiting for the first connection."""
        self._make_app = make_app
        self._log_level = log_level
        self._sock: socket.socket | None = bind(host, port)
        self.url = local_url(self._sock)
        self.bound = bound_address(self._sock)
        self._lock = threading.Lock()
        self._stopping = False
        self._running: RunningDashboard | None = None
        self._wake_read, self._wake_write = os.pipe()
        self._watcher = threading.Thread(
            target=self._wait_then_serve, name=f"fastworker-dashboard-{self.url}", daemon=True
        )
        self._watcher.start()

    @property
    def loaded(self) -> bool:
        """True once the app is served (a browser connected)."""
        return self._running is not None

    @property
    def alive(self) -> bool:
        """True while it waits for a first connection or serves."""
        running = self._running
        return running.alive if running is not None else self._watcher.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop waiting, or stop serving; closes the socket."""
        with self._lock:
            self._stopping = True
            running = self._running
            if running is None and self._wake_write >= 0:
                os.write(self._wake_write, b"x")  # under the lock: a failed start closes the pipe under it too
        if running is None:
            self._watcher.join(timeout)
        else:
            running.stop(timeout)
        self._close()

    def _wait_then_serve(self) -> None:
        sock = self._sock
        assert sock is not None
        failures = 0
        while True:
            try:
                readable, _, _ = select.select([sock.fileno(), self._wake_read], [], [])
            except (OSError, ValueError):  # the socket closed under us: stopping
                return
            if self._wake_read in readable:
                return
            try:
                from fastworker.dashboard.web.server import serve_socket  # the web stack loads here

                app = self._make_app()
                with self._lock:
                    if self._stopping:
                        return
                    self._running = serve_socket(app, sock, log_level=self._log_level)
                    self._sock = None  # the server owns it now
            except Exception as exc:
                # Answered, and tried again at the next connection: a closed port (what this did
                # before) would leave the dashboard gone for the control plane's whole life.
                if failures == 0:
                    logger.exception("the web dashboard on %s could not be started: answering 503", self.url)
                else:
                    logger.debug("the web dashboard on %s still cannot start: %s", self.url, exc)
                failures += 1
                _refuse_one(sock, f"the web dashboard could not be started ({type(exc).__name__}): see the log")
                continue
            logger.info("web dashboard loaded on first connection to %s", self.url)
            return

    def _close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            fds, self._wake_read, self._wake_write = (self._wake_read, self._wake_write), -1, -1
        if sock is not None:
            sock.close()
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def _refuse_one(sock: socket.socket, reason: str) -> None:
    """Answer the connection waiting on ``sock`` with a plain 503 (bounded: a peer that never reads is dropped)."""
    try:
        conn, _ = sock.accept()
    except OSError:
        return
    body = (reason + "\n").encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with conn:
        conn.settimeout(1.0)
        try:
            conn.sendall(head + body)
        except OSError:
            pass
