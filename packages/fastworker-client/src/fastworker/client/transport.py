"""The only code that drives nng sockets from asyncio: request/reply on both ends, and subscriptions.

pynng's own asyncio layer costs ~200-250 µs of CPU per message and a thread hop per completion
(measured: 373 µs p50 echo round trip versus 261 µs for the approach below). So the hot paths here
avoid it:

- A :class:`ReplyServer` watches the Rep0 socket's receive descriptor with ``loop.add_reader`` and
  pulls requests with non-blocking ``nng_ctx_recvmsg`` into a pool of contexts, so any number of
  requests can be answered later, each on its own context (a reply can never reach the wrong
  requester). Replies are sent with callback-free nng aios that are reaped lazily: no thread hop.
- A :class:`RequestChannel` sends on the Req0 socket's default context (a "fast lane" watched the
  same way) when it is idle, and falls back to one pynng context per request when it is busy.

Everything runs on the loop's thread. pynng's cffi ``lib``/``ffi`` are used directly for the
non-blocking context calls that pynng does not wrap; pynng is pinned below 0.10 for that reason.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket as _socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import pynng
from pynng._nng import ffi, lib

from fastworker.client.admission import ConnectionAdmission, ConnectionEvent, RefusalLog, close_pipe
from fastworker.client.tls import TlsFiles, configure_dial
from fastworker.protocol.auth import FrameAuth, authentication_error_frame
from fastworker.protocol.errors import AuthenticationError
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE, encode_frame, new_envelope
from fastworker.protocol.v1 import error_pb2

logger = logging.getLogger(__name__)

_EAGAIN = lib.NNG_EAGAIN
_NONBLOCK = lib.NNG_FLAG_NONBLOCK
#: Requests taken from the socket per loop callback, so one flood cannot starve other work.
_MAX_RECV_PER_WAKEUP = 256
#: Requests one connection may have waiting for an answer at once (long polls included).
DEFAULT_MAX_PENDING_PER_CONNECTION = 1024
#: Slack over the frame limit for nng's receive limit (nng drops larger messages at the transport).
_RECV_SLACK = 1024
#: Contexts a reply server keeps however quiet it gets; above this, contexts unused for a while are closed.
DEFAULT_MIN_CONTEXTS = 64
#: Seconds between a reply server's housekeeping rounds (idle connections, pool shrinking).
_HOUSEKEEPING_INTERVAL = 0.5
#: Contexts that stayed unused for this many seconds are closed (down to the floor).
DEFAULT_POOL_SHRINK_AFTER = 5.0


class TransportError(Exception):
    """nng failed a request (e.g. the connection was reset); the request may be retried."""


class TransportClosed(TransportError):
    """The socket was closed while an operation was pending."""


def listener_url(listener: pynng.Listener, requested: str) -> str:
    """The URL a listener actually bound, with the real port when port 0 was requested.

    nng reports a TCP listener's port in network byte order (measured), so it is converted here.
    """
    scheme, _, rest = requested.partition("://")
    if scheme not in ("tcp", "tls+tcp"):
        return requested
    host, _, _port = rest.rpartition(":")
    port = _socket.ntohs(listener.local_address.port)
    return f"{scheme}://{host}:{port}"


def _readable(fd: int) -> bool:
    """True if nng's receive descriptor says a message is waiting (nng keeps it level-triggered).

    poll, not select: select refuses descriptors from 1,024 up, which a process holding many
    connections reaches (measured: as cheap, ~1.3 µs).
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _take_message_bytes(msg: Any) -> bytes:
    """Copy an nng_msg's body into bytes and free the message."""
    try:
        data: bytes = ffi.buffer(lib.nng_msg_body(msg), lib.nng_msg_len(msg))[:]
        return data
    finally:
        lib.nng_msg_free(msg)


def _new_message(data: bytes) -> Any:
    msgp = ffi.new("nng_msg **")
    rc = lib.nng_msg_alloc(msgp, len(data))
    if rc != 0:
        raise MemoryError(f"nng_msg_alloc failed ({rc})")
    msg = msgp[0]
    ffi.memmove(lib.nng_msg_body(msg), data, len(data))
    return msg


def _start_send(data: bytes, start: Callable[[Any], None]) -> Any:
    """Put data in a new callback-free aio, start the send with ``start(aio)``, return the aio to reap."""
    msg = _new_message(data)
    aiop = ffi.new("nng_aio **")
    rc = lib.nng_aio_alloc(aiop, ffi.NULL, ffi.NULL)
    if rc != 0:
        lib.nng_msg_free(msg)
        raise MemoryError(f"nng_aio_alloc failed ({rc})")
    aio = aiop[0]
    lib.nng_aio_set_msg(aio, msg)
    start(aio)
    return aio


def _free_aio(aio: Any, *, abort: bool = False) -> None:
    """Release a finished (or, with abort, unfinished) send aio and any message nng left in it."""
    if abort:
        lib.nng_aio_stop(aio)
    if lib.nng_aio_result(aio) != 0:
        # nng leaves the message with the aio when the send failed (peer gone, cancelled).
        msg = lib.nng_aio_get_msg(aio)
        if msg != ffi.NULL:
            lib.nng_msg_free(msg)
    lib.nng_aio_free(aio)


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
    replies it has not read is closed, freeing what they hold (``on_event`` hears of it).
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
        self._sending: deque[tuple[pynng.Context, Any, int]] = deque()
        self._loop_thread = 0
        self._msgp = ffi.new("nng_msg **")
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
        for _ in range(_MAX_RECV_PER_WAKEUP):
            if self._closed:
                return
            context = self._idle.pop() if self._idle else self._new_context()
            if len(self._idle) < self._idle_low:
                self._idle_low = len(self._idle)
            rc = lib.nng_ctx_recvmsg(context.context, self._msgp, _NONBLOCK)
            if rc != 0:
                self._idle.append(context)
                if rc != _EAGAIN:
                    logger.warning("receive failed on the reply socket: nng error %d", rc)
                break
            msg = self._msgp[0]
            pipe_id = lib.nng_msg_get_pipe(msg).id
            data = _take_message_bytes(msg)
            if pipe_id in self._dropped:
                self._idle.append(context)  # the connection is being closed: nobody would read the reply
                continue
            held = self._pending.get(pipe_id, 0)
            if held >= self.max_pending_per_connection and (
                self._unsent_replies(pipe_id) >= self.max_pending_per_connection
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
            if not _readable(self._fd):
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

    def _drop_unread(self, pipe_id: int) -> None:
        """Close a connection that sends requests but does not read the replies.

        nng completes the sends queued for a closed connection at once, so the next reap frees
        their messages and returns their contexts to the pool.
        """
        self._dropped.add(pipe_id)
        close_pipe(pipe_id)
        self._reap()
        if self._on_event is not None:
            self._on_event(ConnectionEvent.DROPPED_UNREAD)
        self._drop_log.warning(
            "unread",
            f"closed a connection holding {self.max_pending_per_connection} replies it did not read",
        )

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
        self._send(context, authentication_error_frame(reason), seal=False, pipe_id=pipe_id)

    def _too_many(self, context: pynng.Context, pipe_id: int) -> None:
        """Refuse a request beyond the per-connection bound (the peer floods: it waits for its earlier answers)."""
        envelope = new_envelope()
        envelope.error.code = error_pb2.ERROR_CODE_RATE_LIMITED
        envelope.error.message = (
            f"more than {self.max_pending_per_connection} requests in flight on one connection; wait for answers"
        )
        if self._on_refused is not None:
            self._on_refused(envelope.error.message)
        self._pending[pipe_id] = self._pending.get(pipe_id, 0) + 1  # released when this refusal is sent
        self._send(context, encode_frame(envelope), pipe_id=pipe_id)

    def _send(self, context: pynng.Context, data: bytes, *, seal: bool = True, pipe_id: int = -1) -> None:
        if self._closed:
            return
        if seal and self._auth is not None:
            data = self._auth.seal(data)
        aio = _start_send(data, lambda aio: lib.nng_ctx_send(context.context, aio))
        self._sending.append((context, aio, pipe_id))
        if self._reap_handle is None and threading.get_ident() == self._loop_thread:
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
            context, aio, pipe_id = sending.popleft()
            if lib.nng_aio_busy(aio):
                sending.append((context, aio, pipe_id))
                continue
            _free_aio(aio)
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
            _free_aio(self._sending.popleft()[1], abort=True)
        self._idle = []
        for context in self._contexts:
            try:
                context.close()
            except pynng.NNGException:
                pass
        self._contexts = set()


def _expire(waiter: asyncio.Future[bytes]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class RequestChannel:
    """Sends requests to one Rep0 endpoint and returns the replies; safe for any number of coroutines.

    The first request in flight uses the socket's default context, watched with ``add_reader``;
    concurrent ones each use their own pynng context. The socket never resends on its own
    (``resend_time=-1``); callers retry with the same idempotency key.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        tls: TlsFiles | None = None,
    ) -> None:
        self._loop = loop
        self._tls = tls
        self._socket = pynng.Req0(resend_time=-1, recv_max_size=max_frame_size + _RECV_SLACK)
        self._dialer: pynng.Dialer | None = None
        self._address: str | None = None
        self._fast_waiter: asyncio.Future[bytes] | None = None
        self._fd = self._socket.recv_fd
        self._loop.add_reader(self._fd, self._on_readable)
        self._contexts: list[pynng.Context] = []
        self._sends: list[Any] = []
        self._msgp = ffi.new("nng_msg **")
        self._closed = False

    @property
    def address(self) -> str | None:
        """The address currently dialed."""
        return self._address

    def dial(self, address: str) -> None:
        """Connect (or reconnect) to address; nng keeps redialing in the background."""
        if address == self._address:
            return
        if self._dialer is not None:
            self._dialer.close()
        configure_dial(self._socket, address, self._tls)
        self._dialer = self._socket.dial(address, block=False)
        self._address = address

    def _send_on_socket(self, data: bytes) -> None:
        self._reap_sends()
        self._sends.append(_start_send(data, lambda aio: lib.nng_send_aio(self._socket.socket, aio)))

    def _reap_sends(self, *, abort: bool = False) -> None:
        """Free finished send aios (all of them, aborting unfinished ones, when abort is set)."""
        still_sending = []
        for aio in self._sends:
            if lib.nng_aio_busy(aio) and not abort:
                still_sending.append(aio)
                continue
            _free_aio(aio, abort=abort)
        self._sends = still_sending

    def _on_readable(self) -> None:
        # Raw non-blocking receive: pynng's recv(block=False) raises (and builds) an exception
        # whenever nothing is there, which is every other call on this path.
        # Only one request is ever out on the default context, so one receive is enough.
        if self._closed or lib.nng_recvmsg(self._socket.socket, self._msgp, _NONBLOCK) != 0:
            return  # a spurious wake-up (EAGAIN), or no request out (ESTATE)
        data = _take_message_bytes(self._msgp[0])
        waiter, self._fast_waiter = self._fast_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(data)

    async def request(self, data: bytes, timeout: float) -> bytes:
        """Send one request and return its reply.

        Raises:
            TimeoutError: no reply within timeout (the request may or may not have been processed).
            TransportClosed: the channel was closed.
        """
        if self._closed:
            raise TransportClosed("request channel is closed")
        if self._fast_waiter is None:
            # The socket's default context, sent with a callback-free aio: nng_send() would block
            # this thread until nng's I/O thread took the message (~60 µs measured).
            waiter: asyncio.Future[bytes] = self._loop.create_future()
            self._fast_waiter = waiter
            self._send_on_socket(data)
            # A plain timer instead of asyncio.wait_for, which costs a task-like wrapper per call.
            timer = self._loop.call_later(timeout, _expire, waiter)
            try:
                return await waiter
            finally:
                timer.cancel()
                if self._fast_waiter is waiter:
                    # Timed out or cancelled: the next socket-level send abandons this request.
                    self._fast_waiter = None
        return await self._request_on_context(data, timeout)

    async def _request_on_context(self, data: bytes, timeout: float) -> bytes:
        context = self._contexts.pop() if self._contexts else self._socket.new_context()
        clean = False
        try:
            async with asyncio.timeout(timeout):
                await context.asend(data)
                reply: bytes = await context.arecv()
            clean = True
            return reply
        except pynng.NNGException as exc:
            if self._closed or isinstance(exc, pynng.Closed):
                raise TransportClosed("request channel is closed") from exc
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if clean and not self._closed:
                self._contexts.append(context)
            else:
                # A context whose request timed out may still receive the late reply: never reuse it.
                try:
                    context.close()
                except pynng.NNGException:
                    pass  # the socket is already closed, and the context with it

    def close(self) -> None:
        """Close the socket; pending requests fail."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._fast_waiter is not None and not self._fast_waiter.done():
            self._fast_waiter.set_exception(TransportClosed("request channel is closed"))
        for context in self._contexts:
            context.close()
        self._contexts = []
        self._reap_sends(abort=True)
        self._socket.close()


#: Seconds without any message after which a subscription dials its publisher again. A subscriber
#: never writes, so a connection that died silently (a cut link, a peer that vanished behind it)
#: is never noticed by TCP; the publisher announces several times a second.
DEFAULT_SUBSCRIPTION_STALE_AFTER = 5.0


class Subscription:
    """A Sub0 socket dialed to one PUB address, delivering each message to ``on_message`` on the loop.

    Silent for ``stale_after`` seconds, it replaces its socket and dials again (None: never).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        topic: bytes,
        on_message: Callable[[bytes], None],
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        tls: TlsFiles | None = None,
        stale_after: float | None = DEFAULT_SUBSCRIPTION_STALE_AFTER,
    ) -> None:
        self._loop = loop
        self._address = address
        self._topic = topic
        self._tls = tls
        self._max_frame_size = max_frame_size
        self._on_message = on_message
        self._msgp = ffi.new("nng_msg **")
        self._closed = False
        self._stale_after = stale_after
        self._watchdog: asyncio.TimerHandle | None = None
        self._open()
        if stale_after is not None:
            self._watchdog = loop.call_later(stale_after / 2, self._check_stale)

    def _open(self) -> None:
        self._socket = pynng.Sub0(recv_max_size=self._max_frame_size + _RECV_SLACK)
        self._socket.subscribe(self._topic)
        configure_dial(self._socket, self._address, self._tls)
        self._socket.dial(self._address, block=False)
        self._fd = self._socket.recv_fd
        self._loop.add_reader(self._fd, self._on_readable)
        self._last_message = self._loop.time()

    def _check_stale(self) -> None:
        assert self._stale_after is not None
        if self._closed:
            return
        silent = self._loop.time() - self._last_message
        if silent > self._stale_after:
            logger.info("nothing heard from %s for %.1f s: dialing it again", self._address, silent)
            self._loop.remove_reader(self._fd)
            self._socket.close()
            self._open()
        self._watchdog = self._loop.call_later(self._stale_after / 2, self._check_stale)

    def _on_readable(self) -> None:
        for _ in range(_MAX_RECV_PER_WAKEUP):
            if self._closed or lib.nng_recvmsg(self._socket.socket, self._msgp, _NONBLOCK) != 0:
                return
            data = _take_message_bytes(self._msgp[0])
            self._last_message = self._loop.time()
            try:
                self._on_message(data)
            except Exception:
                logger.exception("subscription handler failed")
            if not _readable(self._fd):
                return

    def close(self) -> None:
        """Stop receiving and close the socket."""
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._loop.remove_reader(self._fd)
        self._socket.close()
