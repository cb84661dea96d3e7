"""The client side of the nng transport, driven from asyncio: request channels and subscriptions.

Private, and shared by FastWorker's own distributions only (the client, the subworker's link; see
``SHARED_INTERNALS`` in ``scripts/check_layout.py``): no compatibility promise. The serving side
is the control plane's (``fastworker.controlplane.replyserver``).

A :class:`RequestChannel` sends on the Req0 socket's default context (a "fast lane" whose receive
descriptor the loop watches) when it is idle, and falls back to one pynng context per request when
it is busy. Everything runs on the loop's thread; the raw nng calls of the fast lane are in
``fastworker.client._nng``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

import pynng

from fastworker.client import _nng
from fastworker.client.tls import TlsFiles, configure_dial
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE, MAX_REQUESTS_IN_FLIGHT

logger = logging.getLogger(__name__)


class TransportError(Exception):
    """nng failed a request (e.g. the connection was reset); the request may be retried."""


class NoPlace(TransportError):
    """The request found no place among the connection's requests in flight within its timeout: not sent."""


class NotTaken(TransportError):
    """No connection took the request within its bound (no control plane is up): not sent, and withdrawn."""


class TransportClosed(TransportError):
    """The socket was closed while an operation was pending."""


class ConnectionLost(TransportError):
    """The connection that took the request closed before its reply came: none can come now."""


def _expire(waiter: asyncio.Future[bytes]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _withdraw(waiter: asyncio.Future[bytes], aio: _nng.SendAio, within: float) -> None:
    """Fail a fast-lane request that no connection took in time, withdrawing it from nng first."""
    if not waiter.done() and _nng.sending(aio) and _nng.withdraw_unsent(aio):
        waiter.set_exception(_not_taken(within))


def _not_taken(within: float) -> NotTaken:
    return NotTaken(f"no connection to the control plane took the request within {within:g} s")


class RequestChannel:
    """Sends requests to one Rep0 endpoint and returns the replies; safe for any number of coroutines.

    The first request in flight uses the socket's default context, watched with ``add_reader``;
    concurrent ones each use their own pynng context. The socket never resends on its own
    (``resend_time=-1``); callers retry with the same idempotency key.

    The default context is the cheap lane (the loop reads the socket itself; a context's reply
    comes through one of nng's threads). A request sent ``aside`` goes on a context even when the
    cheap lane is free, keeping it for the requests sent meanwhile: a busy subworker's held work
    request leaves it to its outcomes and claims, many per work request.

    At most ``max_in_flight`` requests are out at once (the control plane refuses more from one
    connection); those beyond wait here for an answer to free a place, within their timeout.

    When the connection closes (the control plane stopped or restarted), the requests it had taken
    fail at once with :class:`ConnectionLost`: nng never resends them, and their callers would
    otherwise wait out their whole timeout (a long poll's hold included) before asking the control
    plane that is back.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        tls: TlsFiles | None = None,
        max_in_flight: int = MAX_REQUESTS_IN_FLIGHT,
    ) -> None:
        self._loop = loop
        self._places = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._tls = tls
        _nng.check_not_forked("a client connected")
        self._socket = _nng.opened(pynng.Req0(resend_time=-1, recv_max_size=_nng.recv_max_size(max_frame_size)))
        self._dialer: pynng.Dialer | None = None
        self._address: str | None = None
        self._fast_waiter: asyncio.Future[bytes] | None = None
        self._fast_send: _nng.SendAio | None = None
        #: Contexts whose request a connection took and whose reply has not come; those of them
        #: closed because their connection closed.
        self._receiving: set[pynng.Context] = set()
        self._cut: set[pynng.Context] = set()
        self._socket.add_post_pipe_remove_cb(_connection_watch(self))
        self._fd = self._socket.recv_fd
        self._loop.add_reader(self._fd, self._on_readable)
        self._contexts: list[pynng.Context] = []
        self._sends: list[_nng.SendAio] = []
        self._receiver = _nng.Receiver()
        self._closed = False
        #: Whether any request got its reply (the peer was reachable once).
        self._answered = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def connected(self) -> bool:
        """Whether a connection to the dialed address is up now."""
        return not self._closed and bool(self._socket.pipes)

    @property
    def gone(self) -> bool:
        """Whether the peer answered before and no connection is up now (not: a first dial still under way)."""
        return self._answered and not self.connected

    @property
    def address(self) -> str | None:
        """The address currently dialed."""
        return self._address

    def dial(self, address: str) -> None:
        """Connect (or reconnect) to address; nng keeps redialing in the background."""
        if address == self._address:
            return
        if self._dialer is not None:
            self._fail_taken()  # (all on the connection closing now: the only one)
            self._dialer.close()
        configure_dial(self._socket, address, self._tls)
        self._dialer = self._socket.dial(address, block=False)
        self._address = address

    def _send_on_socket(self, data: bytes) -> _nng.SendAio:
        self._reap_sends()
        aio = _nng.send_on_socket(self._socket, data)
        self._sends.append(aio)
        return aio

    def _reap_sends(self, *, abort: bool = False) -> None:
        """Free finished send aios (all of them, aborting unfinished ones, when abort is set)."""
        still_sending = []
        for aio in self._sends:
            if not abort and _nng.sending(aio):
                still_sending.append(aio)
                continue
            _nng.free_aio(aio, abort=abort)
        self._sends = still_sending

    def _on_readable(self) -> None:
        # Only one request is ever out on the default context, so one receive is enough.
        if self._closed:
            return
        data = self._receiver.socket_message(self._socket)
        if data is None:
            return  # a spurious wake-up (EAGAIN), or no request out (ESTATE)
        self._answered = True
        waiter, self._fast_waiter = self._fast_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(data)

    async def request(
        self, data: bytes, timeout: float, *, aside: bool = False, taken_within: float | None = None
    ) -> bytes:
        """Send one request and return its reply (``aside``: on a context, leaving the cheap lane free).

        ``taken_within`` (shorter than ``timeout``) bounds the wait for a connection to take the
        request: nng keeps a request while no connection is up, and sends it once one is.

        Raises:
            TimeoutError: no reply within timeout (the request may or may not have been processed).
            NoPlace: no place among the requests in flight within timeout (the request was not sent).
            NotTaken: no connection took it within ``taken_within`` (it was withdrawn, never sent).
            TransportClosed: the channel was closed.
        """
        if self._closed:
            raise TransportClosed("request channel is closed")
        places = self._places
        if places.locked():  # as many requests out as the control plane takes from one connection
            try:
                async with asyncio.timeout(timeout):
                    await places.acquire()
            except TimeoutError:
                raise NoPlace(f"{self._max_in_flight} requests of this client were in flight") from None
            if self.closed:  # while it waited
                places.release()
                raise TransportClosed("request channel is closed")
        else:
            await places.acquire()  # (free: returns without suspending)
        try:
            if taken_within is not None and taken_within >= timeout:
                taken_within = None
            return await self._request(data, timeout, aside, taken_within)
        finally:
            places.release()

    async def _request(self, data: bytes, timeout: float, aside: bool, taken_within: float | None) -> bytes:
        if self._fast_waiter is None and not aside:
            # The socket's default context, sent with a callback-free aio (see _nng.send_on_socket).
            waiter: asyncio.Future[bytes] = self._loop.create_future()
            self._fast_waiter = waiter
            aio = self._fast_send = self._send_on_socket(data)
            # A plain timer instead of asyncio.wait_for, which costs a task-like wrapper per call.
            timer = self._loop.call_later(timeout, _expire, waiter)
            check = (
                None
                if taken_within is None
                else self._loop.call_later(taken_within, _withdraw, waiter, aio, taken_within)
            )
            try:
                return await waiter
            finally:
                timer.cancel()
                if check is not None:
                    check.cancel()
                if self._fast_waiter is waiter:
                    # Timed out or cancelled: the next socket-level send abandons this request.
                    self._fast_waiter = None
                if self._fast_send is aio:
                    self._fast_send = None
        return await self._request_on_context(data, timeout, taken_within)

    async def _request_on_context(self, data: bytes, timeout: float, taken_within: float | None) -> bytes:
        context = self._contexts.pop() if self._contexts else _nng.opened(self._socket.new_context())
        clean = False
        taken = False
        task = asyncio.current_task()
        try:
            ends = self._loop.time() + timeout
            async with asyncio.timeout_at(ends if taken_within is None else self._loop.time() + taken_within) as bound:
                await context.asend(data)
                taken = True
                self._receiving.add(context)
                if taken_within is not None:
                    if bound.expired():  # (pynng finished the send as the bound cancelled it)
                        raise TimeoutError
                    bound.reschedule(ends)
                reply: bytes = await context.arecv()
            clean = True
            self._answered = True
        except TimeoutError:
            if not taken and taken_within is not None:
                raise _not_taken(taken_within) from None
            raise
        except pynng.NNGException as exc:
            _raise_if_cancelled(task, exc)
            if self._closed:
                raise TransportClosed("request channel is closed") from exc
            if context in self._cut or isinstance(exc, pynng.ConnectionReset):  # (nng tells some itself)
                raise ConnectionLost("the connection to the control plane closed before the reply came") from None
            if isinstance(exc, pynng.Closed):
                raise TransportClosed("request channel is closed") from exc
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._receiving.discard(context)
            self._cut.discard(context)
            if clean and not self._closed:
                self._contexts.append(context)
            else:
                # A context whose request timed out may still receive the late reply: never reuse it.
                try:
                    context.close()
                except pynng.NNGException:
                    pass  # the socket is already closed, and the context with it
        _raise_if_cancelled(task)
        return reply

    def _connection_closed(self, pipe_id: int) -> None:
        """A connection closed: fail the requests it had taken, for their callers to send again.

        Only one connection is ever up (one dialer), and the next one takes the requests no
        connection took yet, which are left alone. If the next one is up already (a redial to the
        same address that was quick), which took what cannot be told: they all wait for their
        replies, as they would without this.
        """
        if self._closed or any(pipe.id != pipe_id for pipe in self._socket.pipes):
            return
        self._fail_taken()

    def _fail_taken(self) -> None:
        """Fail the requests a connection took whose replies have not come (with ConnectionLost)."""
        waiter, aio = self._fast_waiter, self._fast_send
        if waiter is not None and not waiter.done() and aio is not None and not _nng.sending(aio):
            waiter.set_exception(ConnectionLost("the connection to the control plane closed before the reply came"))
        for context in list(self._receiving):
            self._cut.add(context)
            context.close()  # its pending receive fails at once

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


def _connection_watch(channel: RequestChannel) -> Callable[[pynng.Pipe], None]:
    """The socket's pipe-removed callback (on an nng thread): hands the news to the channel's loop.

    It holds the channel weakly, so that a client dropped without closing is still collected.
    """
    ref = weakref.ref(channel)
    loop = channel._loop

    def closed(pipe: pynng.Pipe) -> None:
        if ref() is None:
            return
        try:
            loop.call_soon_threadsafe(_tell_closed, ref, pipe.id)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    return closed


def _tell_closed(ref: weakref.ref[RequestChannel], pipe_id: int) -> None:
    channel = ref()
    if channel is not None:
        channel._connection_closed(pipe_id)


#: Seconds without any message after which a subscription dials its publisher again. A subscriber
#: never writes, so a connection that died silently (a cut link, a peer that vanished behind it)
#: is never noticed by TCP; the publisher announces several times a second.
DEFAULT_SUBSCRIPTION_STALE_AFTER = 5.0


def _raise_if_cancelled(task: asyncio.Task[object] | None, cause: BaseException | None = None) -> None:
    """Raise CancelledError if someone cancelled ``task`` while pynng finished its operation.

    pynng answers a cancel by cancelling the nng operation and waiting for it; one that completed
    meanwhile (a reply, an error) comes back as if no cancel had happened, and the cancel is lost: a
    loop around the request then never ends, and whoever awaits its task waits for ever (a drained
    worker that never exited, deaf to SIGTERM). ``asyncio.timeout`` withdraws its own cancel on the
    way out, so what is left here is someone else's.
    """
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause


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
        self._receiver = _nng.Receiver()
        self._closed = False
        self._stale_after = stale_after
        self._watchdog: asyncio.TimerHandle | None = None
        #: True once a connection to the address got through (TCP, and TLS and nng's handshake):
        #: tells "nothing could be reached" from "something was reached, but it announced nothing".
        self.reached = False
        self._open()
        if stale_after is not None:
            self._watchdog = loop.call_later(stale_after / 2, self._check_stale)

    def _open(self) -> None:
        _nng.check_not_forked("a subscription opened")
        socket = _nng.opened(pynng.Sub0(recv_max_size=_nng.recv_max_size(self._max_frame_size)))
        try:
            socket.subscribe(self._topic)
            socket.add_post_pipe_connect_cb(self._on_connected)
            configure_dial(socket, self._address, self._tls)
            socket.dial(self._address, block=False)
            fd = socket.recv_fd
            self._loop.add_reader(fd, self._on_readable)
        except BaseException:
            socket.close()
            raise
        self._socket, self._fd = socket, fd
        self._last_message = self._loop.time()

    def _on_connected(self, _pipe: pynng.Pipe) -> None:
        self.reached = True  # on an nng thread: one attribute write

    def _shut(self) -> None:
        """Stop watching and close the current socket, if there is one."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._socket.close()
            self._fd = -1

    def _check_stale(self) -> None:
        assert self._stale_after is not None
        if self._closed:
            return
        silent = self._loop.time() - self._last_message
        if silent > self._stale_after:
            logger.info("nothing heard from %s for %.1f s: dialing it again", self._address, silent)
            self._shut()
            try:
                self._open()
            except (pynng.NNGException, OSError) as error:
                # Left without a socket, it tries again next round rather than go deaf for good
                logger.warning("could not dial %s again (%s): retrying", self._address, error)
        self._watchdog = self._loop.call_later(self._stale_after / 2, self._check_stale)

    def _on_readable(self) -> None:
        for _ in range(_nng.MAX_RECV_PER_WAKEUP):
            if self._closed:
                return
            data = self._receiver.socket_message(self._socket)
            if data is None:
                return
            self._last_message = self._loop.time()
            try:
                self._on_message(data)
            except Exception:
                logger.exception("subscription handler failed")
            if self._closed or not _nng.readable(self._fd):  # (the handler may have closed it)
                return

    def close(self) -> None:
        """Stop receiving and close the socket."""
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._shut()
