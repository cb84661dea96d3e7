"""The raw nng calls FastWorker's event-loop transports need and pynng does not wrap: the one place they live.

Private, and shared by FastWorker's own distributions only (the client's request channel and
subscriptions, the control plane's reply server; see ``SHARED_INTERNALS`` in
``scripts/check_layout.py``): no compatibility promise.

pynng 0.9.0 (checked against 0.9.0, bundling nng 1.x; pinned ``<0.10`` for this module) has no
non-blocking receive on a context, no send that completes without a callback and a thread hop,
and its non-blocking socket receive raises (and builds) ``TryAgain`` on every empty read, which
on a descriptor-driven path is every other call. Its asyncio layer costs ~200-250 µs of CPU per
message (measured: 373 µs p50 echo round trip versus 261 µs with the calls below). So these use
nng's C API through the cffi binding that pynng exports as ``pynng.lib`` / ``pynng.ffi``; every
other nng need goes through pynng's public API.
"""

from __future__ import annotations

import atexit
import os
import select
import weakref
from collections.abc import Callable
from typing import TypeVar

import pynng
from pynng import ffi, lib

from fastworker.client.errors import ForkedProcessError

#: Slack over the frame limit for nng's receive limit (nng drops larger messages at the transport).
_RECV_SLACK = 1024
#: Messages taken from a socket per loop callback, so one flood cannot starve other work.
MAX_RECV_PER_WAKEUP = 256

_EAGAIN = lib.NNG_EAGAIN
_NONBLOCK = lib.NNG_FLAG_NONBLOCK

#: An nng aio carrying one send (a cffi pointer): opaque outside this module.
SendAio = object


#: True once this process (or the one it was forked from) opened an nng socket.
_nng_started = False
#: True in a child forked after that: nng refuses to run there, aborting the whole process.
_forked_after_start = False
#: The nng sockets and contexts this process opened (weakly), for a forked child to disown.
_opened: weakref.WeakSet[pynng.Socket | pynng.Context] = weakref.WeakSet()

Opened = TypeVar("Opened", pynng.Socket, pynng.Context)


def opened(thing: Opened) -> Opened:
    """Note an nng socket or context this process opened (a child forked later must never close it); returns it."""
    _opened.add(thing)
    return thing


def _after_fork_in_child() -> None:
    global _forked_after_start
    _forked_after_start = _forked_after_start or _nng_started
    if _forked_after_start:
        _disown()


def _disown() -> None:
    """In a child forked after nng started: make sure nothing calls nng again, at exit either.

    The child has none of nng's threads, and nng's locks may be held by threads that stayed in the
    parent: shutting nng down (pynng's at-exit ``nng_fini``) hangs the child's exit for ever, and
    closing a socket shuts down the TCP connections it shares with the parent, whose requests then
    go unanswered for seconds. So pynng's at-exit hook is withdrawn, the sockets and contexts opened
    before the fork close nothing when collected, and this module's own calls do nothing. pynng
    0.9 has no public way to do the first two: its hook is ``pynng.nng._pynng_atexit``, its
    ``Socket.close`` skips a socket without ``_socket`` and ``Context.close`` a context whose
    ``_context`` is None (pinned ``<0.10``; tests/integration/test_sync_client.py forks a client's process).
    """
    atexit.unregister(pynng.nng._pynng_atexit)
    for thing in list(_opened):
        if isinstance(thing, pynng.Socket):
            thing.__dict__.pop("_socket", None)
        else:
            thing._context = None
    _opened.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def check_not_forked(what: str) -> None:
    """Raise ForkedProcessError in a child forked after nng started in its parent (nng would abort it).

    Call before opening an nng socket (marks nng as started) or using one made before a fork.
    """
    global _nng_started
    if _forked_after_start:
        raise ForkedProcessError(
            f"{what} in process {os.getpid()}, which was forked from a process that had already used FastWorker's"
            " client: nng, its transport, cannot run after such a fork. Make the first call after the fork"
            " (gunicorn without --preload, no submission at import time) or start the children with the"
            " 'spawn' or 'forkserver' method"
        )
    _nng_started = True


def recv_max_size(max_frame_size: int) -> int:
    """The ``recv_max_size`` for a socket that carries frames up to ``max_frame_size`` bytes."""
    return max_frame_size + _RECV_SLACK


#: A server reads frames up to its limit plus this fraction of it (at least REFUSED_FRAMES_READ_MIN more
#: bytes) to refuse them with a typed error; larger ones are cut off by the transport, which closes the
#: connection unbuffered. Every connection may hold one such frame in nng's buffers at a time, so the
#: worst case is --max-connections times this: kept near the limit (4x let 30 peers hold 1.6 GB).
REFUSED_FRAMES_READ_OVER = 0.25
REFUSED_FRAMES_READ_MIN = 1024 * 1024


def server_recv_max_size(max_frame_size: int) -> int:
    """The ``recv_max_size`` of a listening socket: oversize frames up to a bound are read, to be answered.

    A frame over the limit gets ``FRAME_TOO_LARGE`` (logged, counted) when the transport let it
    through; beyond this bound, buffering it to say so would let one peer hold that much memory.
    """
    over = max(int(max_frame_size * REFUSED_FRAMES_READ_OVER), REFUSED_FRAMES_READ_MIN)
    return max_frame_size + over + _RECV_SLACK


def readable(fd: int) -> bool:
    """True if nng's receive descriptor says a message is waiting (nng keeps it level-triggered).

    poll, not select: select refuses descriptors from 1,024 up, which a process holding many
    connections reaches (measured: as cheap, ~1.3 µs).
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class Receiver:
    """Non-blocking receives into one reusable message slot (owned by one thread: the loop's)."""

    __slots__ = ("_msgp",)

    def __init__(self) -> None:
        self._msgp = ffi.new("nng_msg **")

    def socket_message(self, sock: pynng.Socket) -> bytes | None:
        """The next message waiting on the socket's default context, or None (none waiting, or none expected)."""
        if lib.nng_recvmsg(sock.socket, self._msgp, _NONBLOCK) != 0:
            return None
        return _take_body(self._msgp[0])

    def context_message(self, context: pynng.Context) -> tuple[bytes, int] | None:
        """The next request waiting for this context and the id of the pipe it came on, or None if none waits.

        Raises:
            pynng.NNGException: nng failed the receive for another reason than "nothing waiting".
        """
        rc = lib.nng_ctx_recvmsg(context.context, self._msgp, _NONBLOCK)
        if rc != 0:
            if rc != _EAGAIN:
                pynng.check_err(rc)
            return None
        msg = self._msgp[0]
        pipe_id: int = lib.nng_msg_get_pipe(msg).id
        return _take_body(msg), pipe_id


def _take_body(msg: object) -> bytes:
    """Copy an nng_msg's body into bytes and free the message."""
    try:
        data: bytes = ffi.buffer(lib.nng_msg_body(msg), lib.nng_msg_len(msg))[:]
        return data
    finally:
        lib.nng_msg_free(msg)


def send_on_socket(sock: pynng.Socket, data: bytes) -> SendAio:
    """Start sending data on the socket's default context; reap the returned aio with :func:`free_aio`.

    nng_send() would block this thread until nng's I/O thread took the message (~60 µs measured).
    """
    return _start_send(data, lambda aio: lib.nng_send_aio(sock.socket, aio))


def send_on_context(context: pynng.Context, data: bytes) -> SendAio:
    """Start sending data on a context (a reply); reap the returned aio with :func:`free_aio`."""
    return _start_send(data, lambda aio: lib.nng_ctx_send(context.context, aio))


def _start_send(data: bytes, start: Callable[[object], None]) -> SendAio:
    """Put data in a new callback-free aio, start the send with ``start(aio)``, return the aio to reap."""
    msgp = ffi.new("nng_msg **")
    rc = lib.nng_msg_alloc(msgp, len(data))
    if rc != 0:
        raise MemoryError(f"nng_msg_alloc failed ({rc})")
    msg = msgp[0]
    ffi.memmove(lib.nng_msg_body(msg), data, len(data))
    aiop = ffi.new("nng_aio **")
    rc = lib.nng_aio_alloc(aiop, ffi.NULL, ffi.NULL)
    if rc != 0:
        lib.nng_msg_free(msg)
        raise MemoryError(f"nng_aio_alloc failed ({rc})")
    aio = aiop[0]
    lib.nng_aio_set_msg(aio, msg)
    start(aio)
    return aio


def sending(aio: SendAio) -> bool:
    """True while nng has not finished the send (it has not written the message, nor given up)."""
    return bool(lib.nng_aio_busy(aio))


def withdraw_unsent(aio: SendAio) -> bool:
    """Cancel a send no connection has taken yet; False if one took it first (it may be answered).

    A Req0 send stays pending while no connection is up: withdrawn, it can no longer reach a
    control plane that comes back later. The aio is left to :func:`free_aio`.
    """
    if lib.nng_aio_busy(aio):
        lib.nng_aio_cancel(aio)
        lib.nng_aio_wait(aio)
    return bool(lib.nng_aio_result(aio) != 0)


def free_aio(aio: SendAio, *, abort: bool = False) -> None:
    """Release a finished (or, with abort, unfinished) send aio and any message nng left in it (not in a forked child)."""
    if _forked_after_start:
        return  # (a parent's transport collected in a forked child: see _disown)
    if abort:
        lib.nng_aio_stop(aio)
    if lib.nng_aio_result(aio) != 0:
        # nng leaves the message with the aio when the send failed (peer gone, cancelled).
        msg = lib.nng_aio_get_msg(aio)
        if msg != ffi.NULL:
            lib.nng_msg_free(msg)
    lib.nng_aio_free(aio)
