"""The control plane's side of the nng transport: serves Rep0 sockets from the event loop.

A :class:`ReplyServer` watches the socket's receive descriptor with ``loop.add_reader`` and pulls
requests with non-blocking context receives into a pool of contexts, so any number of requests
can be answered later, each on its own context (a reply can never reach the wrong requester).
Replies are sent with callback-free nng aios that are reaped lazily: no thread hop. The raw nng
calls are in ``fastworker.client._nng`` (pynng's asyncio layer costs ~200-250 µs per message).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable

import pynng

from fastworker.client import _nng
from fastworker.controlplane.admission import ConnectionAdmission, ConnectionEvent, RefusalLog
from fastworker.protocol.auth import FrameAuth, authentication_error_frame
from fastworker.protocol.errors import AuthenticationError
from fastworker.protocol.framing import MAX_REQUESTS_IN_FLIGHT, encode_frame, new_envelope
from fastworker.protocol.v1 import error_pb2

logger = logging.getLogger(__name__)

#: Requests one connection may have waiting for an answer at once (long polls included).
DEFAULT_MAX_PENDING_PER_CONNECTION = MAX_REQUESTS_IN_FLIGHT
#: Bytes of replies one connection may leave unread before it is closed: a count alone let a peer
#: that never reads hold 1,024 replies of up to 16 MiB each (measured: 3 GB, and a stalled loop).
DEFAULT_MAX_UNREAD_BYTES = 64 * 1024 * 1024
#: Bytes of replies all connections of one reply server together may leave unread. Per connection
#: alone, 40 connections that never read took a control plane from 60 MiB to 2.3 GiB (1,024 could
#: hold 64 GiB: an OOM kill loses every in-memory task). Four connections' worth: a reader that is
#: merely slow holds a few replies at a time, so only peers that stopped reading ever reach it.
DEFAULT_MAX_UNREAD_BYTES_TOTAL = 4 * DEFAULT_MAX_UNREAD_BYTES
#: Contexts a reply server keeps however quiet it gets; above this, contexts unused for a while are closed.
DEFAULT_MIN_CONTEXTS = 64
#: Seconds between a reply server's housekeeping rounds (idle connections, pool shrinking).
_HOUSEKEEPING_INTERVAL = 0.5
#: Contexts that stayed unused for this many seconds are closed (down to the floor).
DEFAULT_POOL_SHRINK_AFTER = 5.0


def listener_url(listener: pynng.Listener, requested: str) -> str:
    """The URL a listener actually bound, with the real port when port 0 was requested.

    nng reports a TCP listener's port in network byte order (measured), so it is converted here.
    """
    scheme, _, rest = requested.partition("://")
    if scheme not in ("tcp", "tls+tcp"):
        return requested
    host, _, _port = rest.rpartition(":")
    port = socket.ntohs(listener.local_address.port)
    return f"{scheme}://{host}:{port}"


class Request:
    """One request received by a :class:`ReplyServer`; answer it with :meth:`reply` exactly once."""

    __slots__ = ("_context", "_server", "data", "pipe_id")

    def __init__(self, server: ReplyServer, context: pynng.Context, data: bytes, pipe_id: int = 0) -> None:
        self._server = server
        self._context: pynng.Context | None = context
        self.data = data
        #: The nng pipe (connection) the request came in on, to tie peers to connections.
        self.pipe_id = pipe_id

    @property
    def answered(self) -> bool:
        """True once reply() or drop() was called."""
        return self._context is None

    def reply(self, data: bytes) -> None:
        """Send the reply to the requester that sent this request (no-op if already answered).

        Safe to call from any thread, provided only one thread ever answers a given request.
        """
        context, self._context = self._context, None
        if context is not None:
            self._server._send(context, data, pipe_id=self.pipe_id)

    def drop(self) -> None:
        """Give up on this request without replying (the requester times out)."""
        context, self._context = self._context, None
        if context is not None:
            self._server._release(context, self.pipe_id)


class ReplyServer:
    """Serves a Rep0 socket from the event loop; calls ``handler(request)`` for every request.

    The handler runs on the loop thread and may reply at once or keep the :class:`Request` and
    reply later (long polls); each pending request holds one nng context. Contexts are pooled; the
    pool shrinks back towards ``min_contexts`` once load has gone. With an ``admission``, silent
    connections are closed on its schedule; a connection holding ``max_pending_per_connection``
    replies or ``max_unread_bytes`` it has not read is closed, freeing what they hold, and so is
    the connection holding the most when all of them together hold over ``max_unread_bytes_total``
    (``on_event`` hears of it).
    """

    def __init__(
        self,
        sock: pynng.Rep0,
        handler: Callable[[Request], None],
        loop: asyncio.AbstractEventLoop,
        *,
        auth: FrameAuth | None = None,
        on_refused: Callable[[str], None] | None = None,
        max_pending_per_connection: int = DEFAULT_MAX_PENDING_PER_CONNECTION,
        max_unread_bytes: int = DEFAULT_MAX_UNREAD_BYTES,
        max_unread_bytes_total: int = DEFAULT_MAX_UNREAD_BYTES_TOTAL,
        admission: ConnectionAdmission | None = None,
        on_event: Callable[[ConnectionEvent], None] | None = None,
        min_contexts: int = DEFAULT_MIN_CONTEXTS,
        pool_shrink_after: float = DEFAULT_POOL_SHRINK_AFTER,
    ) -> None:
        self._socket = sock
        self._handler = handler
        self._loop = loop
        #: With a shared secret: requests are opened (checked) before the handler sees them, replies sealed.
        self._auth = auth
        self._on_refused = on_refused
        #: Requests received and not yet answered, per connection (bounds what one peer can hold).
        self._pending: dict[int, int] = {}
        self.max_pending_per_connection = max_pending_per_connection
        self.max_unread_bytes = max_unread_bytes
        self.max_unread_bytes_total = max_unread_bytes_total
        self._admission = admission
        if admission is not None:
            admission.busy = self._busy
        self._on_event = on_event
        #: Connections closed for not reading their replies; their remaining requests are ignored.
        self._dropped: set[int] = set()
        self._drop_log = RefusalLog(logger)
        self._idle: list[pynng.Context] = []  # the pool; reused from the end, shrunk from the front
        self._contexts: set[pynng.Context] = set()  # every live context, closed with the server
        self.min_contexts = min_contexts
        self.pool_shrink_after = pool_shrink_after
        #: The fewest idle contexts seen since the last shrink: that many were not needed meanwhile.
        self._idle_low = 0
        self._next_shrink = 0.0
        self._housekeeping: asyncio.TimerHandle | None = None
        # Replies handed to nng and not yet reaped. A deque, because replies may also be sent from
        # other threads (see Request.reply); everything else here belongs to the loop's thread.
        self._sending: deque[tuple[pynng.Context, _nng.SendAio, int, int]] = deque()  # ..., pipe, size
        #: Bytes handed to nng and not reaped yet, per connection; replies come from any thread.
        self._unsent: dict[int, int] = {}
        self._unsent_total = 0  # the sum of _unsent
        #: A shedding round is scheduled on the loop (a reply from another thread went over the total).
        self._shed_scheduled = False
        self._unsent_lock = threading.Lock()
        self._loop_thread = 0
        self._receiver = _nng.Receiver()
        self._fd = sock.recv_fd
        self._closed = False
        self._reap_handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Begin serving requests."""
        self._loop_thread = threading.get_ident()
        self._loop.add_reader(self._fd, self._on_readable)
        self._next_shrink = self._loop.time() + self.pool_shrink_after
        self._housekeeping = self._loop.call_later(_HOUSEKEEPING_INTERVAL, self._housekeep)

    def _on_readable(self) -> None:
        for _ in range(_nng.MAX_RECV_PER_WAKEUP):
            if self._closed:
                return
            context = self._idle.pop() if self._idle else self._new_context()
            if len(self._idle) < self._idle_low:
                self._idle_low = len(self._idle)
            try:
                received = self._receiver.context_message(context)
            except pynng.NNGException as exc:
                self._idle.append(context)
                logger.warning("receive failed on the reply socket: %s", exc)
                break
            if received is None:
                self._idle.append(context)
                break
            data, pipe_id = received
            if pipe_id in self._dropped:
                self._idle.append(context)  # the connection is being closed: nobody would read the reply
                continue
            held = self._pending.get(pipe_id, 0)
            if held >= self.max_pending_per_connection and self._sending:
                # Sends are reaped lazily: those finished meanwhile were read, and their requests answered.
                self._reap()
                held = self._pending.get(pipe_id, 0)
            if (
                held >= self.max_pending_per_connection
                and self._unsent_replies(pipe_id) >= self.max_pending_per_connection
            ) or (
                self._unsent.get(pipe_id, 0) > self.max_unread_bytes
                and self._unsent_bytes(pipe_id) > self.max_unread_bytes
            ):
                self._idle.append(context)
                self._drop_unread(pipe_id)
                continue
            if self._auth is not None:
                try:
                    data = self._auth.open(data)
                except AuthenticationError as exc:
                    self._refuse(context, str(exc), pipe_id)
                    continue
            if self._admission is not None:
                self._admission.spoke(pipe_id)
            if held >= self.max_pending_per_connection:
                self._too_many(context, pipe_id)
                continue
            self._pending[pipe_id] = held + 1
            try:
                self._handler(Request(self, context, data, pipe_id))
            except Exception:
                logger.exception("request handler failed")
            if not _nng.readable(self._fd):
                break  # a failed nng receive costs ~20 µs; asking the descriptor costs ~1 µs
        if self._sending:
            self._reap()

    def _new_context(self) -> pynng.Context:
        context = self._socket.new_context()
        self._contexts.add(context)
        return context

    def _unsent_replies(self, pipe_id: int) -> int:
        """Replies to this connection that nng has not written yet (the peer is not reading them)."""
        self._reap()
        return sum(1 for entry in list(self._sending) if entry[2] == pipe_id)

    def _unsent_bytes(self, pipe_id: int) -> int:
        """Bytes of the replies to this connection that nng has not written yet (reaped first)."""
        self._reap()
        return self._unsent.get(pipe_id, 0)

    def _drop_unread(self, pipe_id: int) -> None:
        """Close a connection that sends requests but does not read the replies.

        nng completes the sends queued for a closed connection at once, so the next reap frees
        their messages and returns their contexts to the pool.
        """
        self._dropped.add(pipe_id)
        close_pipe(self._socket, pipe_id)
        self._reap()
        if self._on_event is not None:
            self._on_event(ConnectionEvent.DROPPED_UNREAD)
        mib = 1024 * 1024
        self._drop_log.warning(
            "unread",
            f"closed a connection that did not read its replies (at most {self.max_pending_per_connection}"
            f" replies or {self.max_unread_bytes // mib} MiB are kept for one,"
            f" {self.max_unread_bytes_total // mib} MiB for all together)",
        )

    def _shed_unread(self) -> None:
        """Close the connections holding the most unread bytes until all together are within the total.

        Connections already closed are not counted: nng completes their sends, and the reap frees them.
        """
        with self._unsent_lock:
            self._shed_scheduled = False
        if self._closed:
            return
        self._reap()
        while True:
            with self._unsent_lock:  # nng pipe ids are positive: the others were sent on no connection
                candidates = {
                    pipe: size for pipe, size in self._unsent.items() if pipe > 0 and pipe not in self._dropped
                }
            if sum(candidates.values()) <= self.max_unread_bytes_total:
                return
            self._drop_unread(max(candidates, key=candidates.__getitem__))

    def _housekeep(self) -> None:
        """Close silent or surplus idle connections and shrink the context pool (every half second)."""
        if self._closed:
            return
        self._housekeeping = self._loop.call_later(_HOUSEKEEPING_INTERVAL, self._housekeep)
        if self._sending:
            self._reap()  # replies sent from other threads schedule no reap: a connection is idle once sent
        if self._admission is not None:
            self._admission.sweep()
        if self._loop.time() >= self._next_shrink:
            self._next_shrink = self._loop.time() + self.pool_shrink_after
            self.shrink_pool()

    def _busy(self, pipe_id: int) -> bool:
        return pipe_id in self._pending

    def shrink_pool(self) -> int:
        """Close the contexts that stayed unused since the last call (keeping ``min_contexts``); return how many."""
        self._reap()
        surplus = min(self._idle_low, len(self._idle), len(self._contexts) - self.min_contexts)
        closing: list[pynng.Context] = []
        if surplus > 0:
            closing, self._idle = self._idle[:surplus], self._idle[surplus:]  # the least recently used
        for context in closing:
            self._contexts.discard(context)
            try:
                context.close()
            except pynng.NNGException:
                pass
        self._idle_low = len(self._idle)
        return len(closing)

    @property
    def pool_size(self) -> int:
        """Contexts alive now, idle or holding a request (for tests and stats)."""
        return len(self._contexts)

    def _refuse(self, context: pynng.Context, reason: str, pipe_id: int) -> None:
        """Answer an unauthenticated request with a plain error (its sender may hold no secret) and count it."""
        if self._on_refused is not None:
            self._on_refused(reason)
        self._pending[pipe_id] = self._pending.get(pipe_id, 0) + 1  # unread refusals count: released when sent
        refused_by = self._auth.identity if self._auth is not None else ""  # a client tells a restart from a bad seal
        self._send(context, authentication_error_frame(reason, refused_by=refused_by), seal=False, pipe_id=pipe_id)

    def _too_many(self, context: pynng.Context, pipe_id: int) -> None:
        """Refuse a request beyond the per-connection bound (the peer floods: it waits for its earlier answers)."""
        envelope = new_envelope()
        envelope.error.code = error_pb2.ERROR_CODE_RATE_LIMITED
        envelope.error.message = (
            f"more than {self.max_pending_per_connection} requests in flight on one connection; wait for answers"
        )
        # Not an authentication failure (the frame was opened): the client sends it again, later.
        logger.debug("connection %d: %s", pipe_id, envelope.error.message)
        self._pending[pipe_id] = self._pending.get(pipe_id, 0) + 1  # released when this refusal is sent
        self._send(context, encode_frame(envelope), pipe_id=pipe_id)

    def _send(self, context: pynng.Context, data: bytes, *, seal: bool = True, pipe_id: int = -1) -> None:
        if self._closed:
            return
        if seal and self._auth is not None:
            data = self._auth.seal(data)
        aio = _nng.send_on_context(context, data)
        size = len(data)
        on_loop = threading.get_ident() == self._loop_thread
        with self._unsent_lock:
            self._unsent[pipe_id] = self._unsent.get(pipe_id, 0) + size
            self._unsent_total += size
            shed = self._unsent_total > self.max_unread_bytes_total and not self._shed_scheduled
            if shed and not on_loop:
                self._shed_scheduled = True
        self._sending.append((context, aio, pipe_id, size))
        if shed:
            if on_loop:
                self._shed_unread()
            else:
                self._loop.call_soon_threadsafe(self._shed_unread)
        if self._reap_handle is None and on_loop:
            self._reap_handle = self._loop.call_later(0.05, self._reap_later)

    def _reap_later(self) -> None:
        self._reap_handle = None
        self._reap()
        if self._sending and not self._closed:
            self._reap_handle = self._loop.call_later(0.05, self._reap_later)

    def _reap(self) -> None:
        """Free the aios of finished sends and return their contexts to the pool."""
        sending = self._sending
        for _ in range(len(sending)):
            entry = sending.popleft()
            context, aio, pipe_id, size = entry
            if _nng.sending(aio):
                sending.append(entry)
                continue
            with self._unsent_lock:
                self._unsent_total -= size
                left = self._unsent.get(pipe_id, 0) - size
                if left > 0:
                    self._unsent[pipe_id] = left
                else:
                    self._unsent.pop(pipe_id, None)
            _nng.free_aio(aio)
            self._idle.append(context)
            self._answered(pipe_id)

    def _answered(self, pipe_id: int) -> None:
        held = self._pending.get(pipe_id)
        if held is None:
            return
        if held <= 1:
            del self._pending[pipe_id]
            self._dropped.discard(pipe_id)
        else:
            self._pending[pipe_id] = held - 1

    def _release(self, context: pynng.Context, pipe_id: int = -1) -> None:
        if not self._closed:
            self._idle.append(context)
            self._answered(pipe_id)

    @property
    def unread_bytes(self) -> int:
        """Bytes of replies handed to nng and not yet written, all connections together (for tests and stats)."""
        return self._unsent_total

    @property
    def pending_sends(self) -> int:
        """Replies handed to nng and not yet written (for tests and stats)."""
        return len(self._sending)

    async def flush(self, timeout: float) -> bool:
        """Wait until every reply handed to nng is written (bounded); True if none is left."""
        deadline = self._loop.time() + timeout
        await asyncio.sleep(0)  # let replies deferred with call_soon be handed over first
        while True:
            self._reap()
            if not self._sending or self._loop.time() >= deadline:
                return not self._sending
            await asyncio.sleep(0.005)

    def close(self) -> None:
        """Stop serving and release every context and aio; pending requests get no reply."""
        if self._closed:
            return
        self._closed = True
        if self._reap_handle is not None:
            self._reap_handle.cancel()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        self._loop.remove_reader(self._fd)
        while self._sending:
            _nng.free_aio(self._sending.popleft()[1], abort=True)
        self._idle = []
        for context in self._contexts:
            try:
                context.close()
            except pynng.NNGException:
                pass
        self._contexts = set()


def close_pipe(sock: pynng.Socket, pipe_id: int) -> None:
    """Close one connection of a socket by its nng pipe id (no-op if it is already gone); any thread."""
    for pipe in sock.pipes:
        if pipe.id == pipe_id:
            try:
                pipe.close()
            except pynng.NNGException:
                pass  # closed meanwhile
            return
