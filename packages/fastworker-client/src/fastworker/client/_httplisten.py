"""The daemons' small plain-HTTP listener for probes and scrapes, on threads of its own.

Private, and shared by FastWorker's own distributions only (the control plane's ``/metrics`` and
``/healthz``, the subworker's ``/healthz``; see ``SHARED_INTERNALS`` in ``scripts/check_layout.py``):
no compatibility promise.

It runs on threads of its own, so a probe never waits behind the loop's other work, and asks the
loop for what it reports: a loop that does not answer within a few seconds makes ``/healthz``
answer 503, which is what a liveness probe is for. Bound to loopback, it answers only requests
whose ``Host`` names loopback or the bound address (a web page elsewhere cannot read it through
DNS rebinding); connections are capped, per peer too, and silent ones closed. A connection over
the caps still gets an answer (``/healthz`` as usual, 503 with ``Retry-After`` otherwise) while a
few such are open, so that one peer holding connections cannot fail the liveness probe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from fastworker.client._hosts import HostAllowList
from fastworker.protocol.addresses import Address, parse_http_address

logger = logging.getLogger(__name__)

T = TypeVar("T")
StartResponse = Callable[..., Any]
#: A WSGI application.
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Seconds the loop has to answer a scrape or a health check before it counts as stuck.
LOOP_ANSWER_TIMEOUT = 5.0
#: Connections served at once; more are closed at once (a scraper and a probe need two).
MAX_CONNECTIONS = 16
#: Of those, connections from one address: one host holding silent connections cannot starve
#: the scraper and the liveness probe (which would have the daemon restarted).
MAX_CONNECTIONS_PER_PEER = 4
#: Seconds a connection may stay silent before it is closed, and its request line and headers may
#: take to arrive in all (a peer that trickles them is closed too).
CONNECTION_TIMEOUT = 10.0
#: Connections over those caps served at once in a short lane: ``/healthz`` is answered there as
#: usual (a peer holding its connections cannot fail the liveness probe), anything else gets 503
#: with ``Retry-After``; beyond this many, connections are closed unanswered.
MAX_OVERFLOW = 8
#: Seconds a connection in that lane may take to send its request.
OVERFLOW_TIMEOUT = 1.0
#: What marks a request of that lane in its WSGI environ.
OVERFLOW_KEY = "fastworker.over_connection_caps"


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """Threads per connection, at most ``MAX_CONNECTIONS`` at once and ``MAX_CONNECTIONS_PER_PEER`` per address."""

    daemon_threads = True
    allow_reuse_address = True

    def server_activate(self) -> None:
        super().server_activate()
        self._guard = threading.Lock()
        self._open = 0
        self._by_peer: dict[str, int] = {}
        self._overflow = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = str(client_address[0])
        with self._guard:
            held = self._by_peer.get(peer, 0)
            admitted = self._open < MAX_CONNECTIONS and held < MAX_CONNECTIONS_PER_PEER
            if admitted:
                self._open += 1
                self._by_peer[peer] = held + 1
            overflow = not admitted and self._overflow < MAX_OVERFLOW
            if overflow:
                self._overflow += 1
        if admitted:
            super().process_request(request, client_address)
        elif overflow:
            threading.Thread(target=self._serve_overflow, args=(request, client_address), daemon=True).start()
        else:
            self.shutdown_request(request)  # over every cap: closed at once, nothing is read

    def _serve_overflow(self, request: Any, client_address: Any) -> None:
        """Serve one connection over the caps in the short lane (see :data:`MAX_OVERFLOW`)."""
        try:
            _OverflowHandler(request, client_address, self)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._guard:
                self._overflow -= 1

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            peer = str(client_address[0])
            with self._guard:
                self._open -= 1
                left = self._by_peer[peer] - 1
                if left:
                    self._by_peer[peer] = left
                else:
                    del self._by_peer[peer]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed (timed out silent, reset): logged, never printed to stderr.

        socketserver's own handler prints a traceback to stderr, around the daemon's logging: a
        port scanner or a half-open scrape would put raw lines into a ``--log-format json`` stream.
        """
        logger.debug("http listener: a connection from %s ended in an error", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class QuietHandler(WSGIRequestHandler):
    """One connection, whose request line and headers must arrive within :meth:`head_time` seconds in all.

    The socket's timeout bounds each read only: a peer trickling a byte every few seconds would
    hold one of the listener's few places for ever (measured: 16 such made every scrape a 503).
    """

    timeout = CONNECTION_TIMEOUT

    def head_time(self) -> float:
        """Seconds the request line and headers may take to arrive, together."""
        return CONNECTION_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self._head_deadline = threading.Timer(self.head_time(), self._cut_off)
        self._head_deadline.daemon = True
        self._head_deadline.start()

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers
        self._head_deadline.cancel()
        return parsed

    def finish(self) -> None:
        self._head_deadline.cancel()
        super().finish()

    def _cut_off(self) -> None:
        """The head did not arrive in time: end the connection (its thread's read returns at once)."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed meanwhile

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http listener: %s", format % args)


class _OverflowHandler(QuietHandler):
    """A connection over the caps: one request, sent quickly, marked for :meth:`HttpListener._guarded`."""

    def head_time(self) -> float:
        return OVERFLOW_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(OVERFLOW_TIMEOUT)  # read per connection, as the module's other bounds are

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ[OVERFLOW_KEY] = True
        return environ


class HttpListener:
    """Serves ``app`` on ``address`` (``HOST:PORT``; port 0 picks one) from a daemon thread.

    ``what`` names the listener in errors about the address and in its thread's name. Requests
    with a foreign ``Host`` header are refused with 400 when bound to loopback. The daemons'
    listeners subclass it and pass their own ``app``.
    """

    def __init__(self, address: str, app: App, *, what: str) -> None:
        host, port = parse_http_address(address, what)
        self._app = app
        self._what = what
        server_class = _Server6 if ":" in host else _Server
        self._server = make_server(host, port, self._guarded, server_class=server_class, handler_class=QuietHandler)
        bound_port = self._server.server_address[1]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{bound_port}"
        #: The dashboard's Host rule, bound to loopback; None (any Host) beyond it.
        self._hosts: tuple[HostAllowList, tuple[str, int]] | None = (
            (HostAllowList(bind_host=host), (host, bound_port)) if Address("tcp", host).is_loopback() else None
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name=f"fastworker-{self._what}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port (from any thread but the server's own)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def _guarded(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        if not self._host_allowed(environ.get("HTTP_HOST")):
            return plain(start_response, "400 Bad Request", "unknown Host header\n", method)
        if environ.get(OVERFLOW_KEY) and environ.get("PATH_INFO") != "/healthz":
            return plain(
                start_response,
                "503 Service Unavailable",
                f"too many connections (at most {MAX_CONNECTIONS}, {MAX_CONNECTIONS_PER_PEER} from one address);"
                " try again\n",
                method,
                [("Retry-After", "1")],
            )
        return self._app(environ, start_response)

    def _host_allowed(self, host_header: str | None) -> bool:
        """The dashboard's rule (``HostAllowList``): a loopback name or the bound address, at this port."""
        if self._hosts is None:
            return True
        allow, served = self._hosts
        return host_header is not None and allow.allows_host_header(host_header, served)


def on_loop(loop: asyncio.AbstractEventLoop, function: Callable[[], T]) -> T:
    """Run ``function`` on the loop and return its value (from another thread).

    Raises:
        TimeoutError: the loop did not answer within ``LOOP_ANSWER_TIMEOUT``.
        RuntimeError: the loop is closed.
    """
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(function())
            except BaseException as exc:  # handed to the waiting thread
                future.set_exception(exc)

    loop.call_soon_threadsafe(run)  # RuntimeError once the loop is closed
    return future.result(LOOP_ANSWER_TIMEOUT)


def health(
    loop: asyncio.AbstractEventLoop,
    healthy: Callable[[], str | None],
    start_response: StartResponse,
    method: str,
    daemon: str,
) -> list[bytes]:
    """Answer ``/healthz``: 200 if ``healthy()`` (run on the loop) returns None, else 503 with its reason."""
    try:
        problem = on_loop(loop, healthy)
    except (TimeoutError, RuntimeError):
        problem = f"the {daemon}'s event loop does not answer"
    if problem is None:
        return plain(start_response, "200 OK", "ok\n", method)
    return plain(start_response, "503 Service Unavailable", f"{problem}\n", method)


def refuse_unserved(
    environ: dict[str, Any], start_response: StartResponse, paths: tuple[str, ...]
) -> list[bytes] | None:
    """The 404 or 405 for a request this listener does not serve (only GET and HEAD of ``paths``), or None."""
    method = environ.get("REQUEST_METHOD", "GET")
    if environ.get("PATH_INFO", "") not in paths:
        return plain(start_response, "404 Not Found", f"not found: {' and '.join(paths)} are served\n", method)
    if method not in ("GET", "HEAD"):
        return plain(start_response, "405 Method Not Allowed", "GET or HEAD only\n", method, [("Allow", "GET, HEAD")])
    return None


def plain(
    start_response: StartResponse, status: str, text: str, method: str, extra: list[tuple[str, str]] | None = None
) -> list[bytes]:
    """A plain-text answer (no body for HEAD)."""
    body = text.encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *(extra or [])],
    )
    return [b"" if method == "HEAD" else body]
