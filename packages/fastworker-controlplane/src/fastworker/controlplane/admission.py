"""Connection admission for listening sockets: caps per peer address and overall, and idle-connection expiry.

A listening socket that accepts every connection and keeps it forever can be filled by peers that
connect and then say nothing. :class:`ConnectionAdmission` refuses a connection beyond
``max_per_peer`` from one address (below the global ``max_connections``, so one host never
locks every other one out) and closes connections that have not delivered a valid request within
``idle_timeout`` of connecting. A connection that has spoken is kept however long it idles (a
client that submits once an hour), except that a full cap closes the longest-idle one to make
room; its nng dialer redials transparently.

A socket whose peers never speak (discovery's PUB: ``silent_peers``) cannot tell an attacker
from a subscriber by idleness, so there a full cap never refuses: it closes the oldest connection
of the address holding the most, so that a crowd from a few addresses only churns its own
connections and a newcomer from any other address always gets in.

nng calls :meth:`ConnectionAdmission.admit` on its own threads; everything else runs on the loop
that serves the socket (see :class:`fastworker.controlplane.replyserver.ReplyServer`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import resource
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import pynng
from pynng.sockaddr import In6Addr, InAddr

logger = logging.getLogger(__name__)

#: Connections each listening socket accepts at once, and from one peer address.
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_CONNECTIONS_PER_PEER = 256
#: Seconds a connection may stay open without delivering a valid (with a secret: authenticated) request.
DEFAULT_IDLE_CONNECTION_TIMEOUT = 10.0


class ConnectionEvent(enum.Enum):
    """What happened to a connection; the value names the control plane's stats counter."""

    REFUSED = "connections_refused"
    IDLE_CLOSED = "connections_idle_closed"
    DROPPED_UNREAD = "connections_dropped_unread"


class RefusalLog:
    """Logs at most one line per ``interval`` per reason, saying how many were left out since (thread-safe).

    A flood of refusals must not become a flood of log lines (disk, log shipping, CPU).
    """

    def __init__(self, log: logging.Logger, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, reason: str, message: str) -> bool:
        """Log ``message`` for ``reason`` unless one was logged within the interval; True if logged."""
        now = self._clock()
        with self._lock:
            if now - self._last.get(reason, float("-inf")) < self._interval:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
                return False
            self._last[reason] = now
            suppressed = self._suppressed.pop(reason, 0)
        if suppressed:
            message = f"{message} ({suppressed} more since the last such line)"
        self._log.warning("%s", message)
        return True


@dataclass
class _Connection:
    pipe: pynng.Pipe
    peer: Hashable | None  # None: a transport without peer addresses (ipc, inproc): only the global cap
    connected_at: float
    last_request: float | None = None  # None: no valid request yet


def peer_key(pipe: pynng.Pipe) -> Hashable | None:
    """The remote address a connection counts against (the IP, without the port), or None if it has none."""
    try:
        address = pipe.remote_address
    except pynng.NNGException:
        return None
    if isinstance(address, InAddr):
        return ("inet", int(address.addr))
    if isinstance(address, In6Addr):
        return ("inet6", bytes(address.addr))
    return None


class ConnectionAdmission:
    """Admits, counts and expires the connections of one listening socket.

    A cap that is full makes room by closing the connection idle the longest, provided it has been
    idle (no request since it connected, or since its last one) for at least ``idle_timeout`` and
    holds no request in flight; otherwise the new connection is refused. The idle bound stops
    peers that redial at once (every nng dialer does) from evicting each other in a loop.

    With ``silent_peers`` (peers that never send, so idleness means nothing and nothing expires),
    a full cap instead closes the oldest connection of the address holding the most connections,
    the newcomer's own on a tie: one address can then only ever displace its own connections
    (the per-peer cap is full only when the newcomer's address holds the most), and a newcomer
    from an address holding fewer always gets in.
    """

    def __init__(
        self,
        *,
        name: str,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER,
        idle_timeout: float = DEFAULT_IDLE_CONNECTION_TIMEOUT,
        silent_peers: bool = False,
        clock: Callable[[], float] = time.monotonic,
        refusal_log: RefusalLog | None = None,
    ) -> None:
        #: What log lines call the socket: set to the bound address once it listens (port 0 resolved).
        self.name = name
        self.silent_peers = silent_peers
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.idle_timeout = math.inf if silent_peers else idle_timeout  # silence is all such peers do
        #: Whether a connection has a request in flight (set by the server that answers them).
        self.busy: Callable[[int], bool] = lambda pipe_id: False
        self._clock = clock
        self._log = refusal_log or RefusalLog(logger)
        self._lock = threading.Lock()  # admit() and removed() run on nng threads
        self._live: dict[int, _Connection] = {}
        self._per_peer: dict[Hashable, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_event: Callable[[ConnectionEvent], None] | None = None

    def attach(
        self,
        sock: pynng.Socket,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[ConnectionEvent], None] | None = None,
    ) -> None:
        """Check every new connection of ``sock``; ``on_event`` is called on ``loop`` for each refusal or closing."""
        self._loop = loop
        self._on_event = on_event
        sock.add_pre_pipe_connect_cb(self.admit)
        sock.add_post_pipe_remove_cb(self.removed)

    def __len__(self) -> int:
        return len(self._live)

    def admit(self, pipe: pynng.Pipe) -> bool:
        """Register a new connection, making room or refusing it when a cap is full.

        Runs on an nng thread before the connection is used: closing pipes is allowed there.
        """
        peer = peer_key(pipe)
        victim: _Connection | None = None
        with self._lock:
            now = self._clock()
            peer_full = peer is not None and self._per_peer.get(peer, 0) >= self.max_per_peer
            if peer_full or len(self._live) >= self.max_connections:
                if self.silent_peers:
                    chosen = self._oldest_of_the_most_crowded(peer)
                else:
                    chosen = self._idlest(now, peer if peer_full else None)
                victim = None if chosen is None else self._drop(chosen)
                if victim is None:
                    refusal = (
                        f"{self.max_per_peer} connections from that address already (--max-connections-per-peer)"
                        if peer_full
                        else f"{self.max_connections} connections already (--max-connections)"
                    )
                else:
                    refusal = ""
            else:
                refusal = ""
            if not refusal:
                self._live[pipe.id] = _Connection(pipe, peer, now)
                if peer is not None:
                    self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        if victim is not None:
            _close(victim.pipe)
            self._notify(ConnectionEvent.IDLE_CLOSED)
            which = (
                "the oldest connection of the address holding the most" if self.silent_peers else "an idle connection"
            )
            self._log.warning(f"evicted:{self.name}", f"closed {which} to {self.name} to make room")
        if not refusal:
            return True
        pipe.close()
        self._log.warning(f"refused:{self.name}", f"refused a connection to {self.name}: {refusal}")
        self._notify(ConnectionEvent.REFUSED)
        return False

    def _idlest(self, now: float, peer: Hashable | None) -> int | None:
        """The connection (of ``peer``, or of anyone) idle the longest, if one has been idle long enough."""
        chosen: int | None = None
        chosen_since = now - self.idle_timeout  # idle since at most this
        for pipe_id, connection in self._live.items():
            if peer is not None and connection.peer != peer:
                continue
            since = connection.last_request if connection.last_request is not None else connection.connected_at
            if since <= chosen_since and not self.busy(pipe_id):
                chosen, chosen_since = pipe_id, since
        return chosen

    def _oldest_of_the_most_crowded(self, newcomer: Hashable | None) -> int | None:
        """The oldest connection of the address holding the most (ties: ``newcomer``'s, then the oldest)."""
        counts: dict[Hashable | None, int] = {}
        oldest: dict[Hashable | None, int] = {}
        for pipe_id, connection in self._live.items():  # in the order they connected
            counts[connection.peer] = counts.get(connection.peer, 0) + 1
            oldest.setdefault(connection.peer, pipe_id)
        if not oldest:
            return None
        crowded = max(
            oldest,
            key=lambda peer: (counts[peer], peer == newcomer, -self._live[oldest[peer]].connected_at),
        )
        return oldest[crowded]

    def _drop(self, pipe_id: int) -> _Connection | None:
        """Forget a connection (under the lock); return it, or None if it was not counted."""
        connection = self._live.pop(pipe_id, None)
        if connection is None or connection.peer is None:
            return connection
        left = self._per_peer[connection.peer] - 1
        if left:
            self._per_peer[connection.peer] = left
        else:
            del self._per_peer[connection.peer]
        return connection

    def removed(self, pipe: pynng.Pipe) -> None:
        """Forget a connection that closed (either side); on an nng thread."""
        with self._lock:
            self._drop(pipe.id)

    def spoke(self, pipe_id: int) -> None:
        """A valid request arrived on the connection: it is no longer silent, and not idle."""
        connection = self._live.get(pipe_id)
        if connection is not None:
            connection.last_request = self._clock()

    def sweep(self) -> list[int]:
        """Close and return the connections that stayed silent (no valid request) for ``idle_timeout``."""
        deadline = self._clock() - self.idle_timeout
        with self._lock:
            silent = [
                pipe_id
                for pipe_id, c in self._live.items()
                if c.last_request is None and c.connected_at <= deadline and not self.busy(pipe_id)
            ]
            closing = [self._drop(pipe_id) for pipe_id in silent]
        for connection in closing:
            if connection is not None:
                _close(connection.pipe)
            self._notify(ConnectionEvent.IDLE_CLOSED)
        if silent:
            logger.info(
                "closed %d connection(s) to %s that sent no valid request within %g s (--idle-connection-timeout)",
                len(silent),
                self.name,
                self.idle_timeout,
            )
        return silent

    def _notify(self, event: ConnectionEvent) -> None:
        callback, loop = self._on_event, self._loop
        if callback is None:
            return
        if loop is None:
            callback(event)
            return
        try:
            loop.call_soon_threadsafe(callback, event)
        except RuntimeError:
            pass  # the loop is closed: shutting down


def _close(pipe: pynng.Pipe) -> None:
    """Close one connection (no-op if it is already gone); any thread."""
    try:
        pipe.close()
    except pynng.NNGException:
        pass  # closed meanwhile


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to the hard one; return the limit now in force.

    Every connection holds a descriptor: with the usual soft limit of 1,024, the operating system
    would refuse connections before ``--max-connections`` does (and refuse files and pipes too).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft  # nothing to raise to (an unlimited hard limit may still be capped by the kernel)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft  # some systems refuse the full hard limit: keep what we have
    return hard
