"""``SyncClient``: the blocking twin of ``Client``, for code without an event loop.

It runs one ``Client`` on a private event loop in a daemon thread, so it keeps the async
client's single connection, coalescing and correctness, and is safe to share across threads.
``with SyncClient(...)`` makes it the current client of sync typed calls (``add.delay_sync(...)``)
inside the block, as ``async with Client(...)`` does for ``await add.delay(...)``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

# pynng registers its at-exit nng_fini on import: imported first, so that _close_at_exit (registered
# below) runs before it (at-exit hooks run last registered first).
import pynng  # noqa: F401  (imported for that order)

from fastworker.client import handles
from fastworker.client._async import Client
from fastworker.client.errors import ClientClosed, ForkedProcessError
from fastworker.client.tls import TlsFiles
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE

if TYPE_CHECKING:
    from fastworker.client.models import TaskInfo
    from fastworker.client.workflows import SyncWorkflowHandle, Workflow
    from fastworker.protocol.auth import Secret

T = TypeVar("T")
P = ParamSpec("P")

logger = logging.getLogger(__name__)

#: Longest the interpreter's exit waits for the SyncClients still open to close, all together, in seconds.
EXIT_CLOSE_BOUND = 5.0

#: Each SyncClient's loop, by id, with its thread and client, until that thread ends (closed at exit).
_open_loops: dict[int, tuple[asyncio.AbstractEventLoop, threading.Thread, Client]] = {}
#: The close under way of each collected SyncClient's client, by its loop's id (waited for at exit).
_closing: dict[int, concurrent.futures.Future[None]] = {}


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncClient, P], T]:
    """A Client coroutine method as a SyncClient method with the same parameters, run on the client's loop.

    So a method added to ``Client`` is mirrored by one line here, and its signature cannot drift.
    """

    @functools.wraps(method)
    def blocking(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._client, *args, **kwargs))

    return blocking


class SyncClient:
    """Blocking client with the same methods as :class:`Client` (``close`` instead of ``aclose``)."""

    def __init__(
        self,
        address: str | None = None,
        *,
        secret: Secret | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        allow_pickle: bool = False,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        tls: TlsFiles | None = None,
    ) -> None:
        self._client = Client(
            address,
            secret=secret,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            allow_pickle=allow_pickle,
            max_frame_size=max_frame_size,
            tls=tls,
        )
        self._loop = asyncio.new_event_loop()
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=_serve_until_stopped, args=(self._loop,), name="fastworker-sync-client", daemon=True
        )
        _open_loops[id(self._loop)] = (self._loop, self._thread, self._client)
        self._thread.start()
        # Dropped unclosed, its thread and loop (which hold neither this object nor, once closed,
        # the client) would run for the life of the process: they stop when it is collected.
        finalizer = weakref.finalize(self, _stop_when_collected, self._loop, self._client)
        finalizer.atexit = False
        self._closed = False
        #: Calls waiting on the loop: failed by ``close`` (the loop stops; they would wait for ever).
        self._pending: set[concurrent.futures.Future[Any]] = set()
        # Tokens of `with` blocks that made this the current sync client (handles.current_sync_client).
        self._current_tokens: list[contextvars.Token[Any]] = []

    def __repr__(self) -> str:
        return f"<SyncClient {self.address} {'closed' if self._closed else 'open'}>"

    @property
    def address(self) -> str:
        """The discovery address in use."""
        return self._client.address

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: every call raises ``ClientClosed`` (a ``RuntimeError``) then."""
        return self._closed

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise ClientClosed("the SyncClient is closed")
        if self._pid != os.getpid():  # its loop's thread stayed in the parent: the call would wait for ever
            coroutine.close()
            raise ForkedProcessError(
                f"this SyncClient was made in process {self._pid}, which process {os.getpid()} was forked from:"
                " its thread did not survive the fork; make a SyncClient in this process (after the fork)"
            )
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError(
                "a SyncClient method was called on the client's own event loop (from an async on_complete"
                " callback?): it would wait for ever; use a plain callback, or an async Client"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        self._pending.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise ClientClosed("the client was closed") from None
            raise
        finally:
            self._pending.discard(future)

    def __enter__(self) -> SyncClient:
        """Connect, and make this the current client of sync typed calls (``add.delay_sync(...)``) in the block."""
        self.connect()
        self._current_tokens.append(handles._push_sync(self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._current_tokens:
            handles._reset_sync(self._current_tokens.pop())
        self.close()

    def connect(self) -> None:
        """Find the control plane and connect (done lazily by every call)."""
        self._run(self._client.connect())

    def close(self) -> None:
        """Close the connection and stop the background loop."""
        if self._closed:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result()
        finally:
            self._closed = True
            for future in list(self._pending):
                future.cancel()  # its caller gets ControlPlaneUnavailable, as an async call would
            with contextlib.suppress(Exception):  # let the loop run those cancellations before it stops
                asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result(timeout=1)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    # Every method below is the Client's, blocking: one line each, typed from the Client's signature.
    delay = _blocking(Client.delay)
    send = _blocking(Client.send)
    delay_many = _blocking(Client.delay_many)
    submit = _blocking(Client.submit)
    send_and_wait = _blocking(Client.send_and_wait)
    status = _blocking(Client.status)
    result = _blocking(Client.result)
    wait = _blocking(Client.wait)
    wait_many = _blocking(Client.wait_many)
    results = _blocking(Client.results)
    events = _blocking(Client.events)
    cancel = _blocking(Client.cancel)
    retry = _blocking(Client.retry)
    stats = _blocking(Client.stats)
    queues = _blocking(Client.queues)
    workers = _blocking(Client.workers)
    tasks = _blocking(Client.tasks)
    list_tasks = _blocking(Client.list_tasks)
    task_detail = _blocking(Client.task_detail)
    purge = _blocking(Client.purge)
    pause = _blocking(Client.pause)
    resume = _blocking(Client.resume)
    drain_worker = _blocking(Client.drain_worker)
    limits = _blocking(Client.limits)
    set_limits = _blocking(Client.set_limits)
    workflow = _blocking(Client.workflow)
    cancel_workflow = _blocking(Client.cancel_workflow)

    def watch(self, task_id: str, *, timeout: float | None = None) -> Iterator[TaskInfo]:
        """Yield the task's info at once and then at every state change, ending with its final state.

        The blocking twin of :meth:`Client.watch` (same errors); each step waits on the client's loop.
        """
        changes = self._client.watch(task_id, timeout=timeout)
        try:
            while True:
                try:
                    yield self._run(_next_of(changes))
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(changes.aclose())

    def on_complete(
        self, task_id: str, callback: Callable[[TaskInfo], Any], *, timeout: float | None = None
    ) -> concurrent.futures.Future[None]:
        """Call ``callback(info)`` once the task is final; returns a future done once it ran (cancel it to stop waiting).

        A plain function runs in a thread of its own, so it may call this client's methods (even
        wait on another ``on_complete``); a coroutine function runs on the client's loop and must
        not call this client's blocking methods. As with :meth:`Client.on_complete`, errors of the
        wait (unknown id, timeout) and of the callback, ``SystemExit`` included, are logged, not raised.

        Raises:
            TypeError: ``callback`` is not callable.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if inspect.iscoroutinefunction(callback):

            async def run(info: TaskInfo) -> None:
                try:
                    await callback(info)
                except asyncio.CancelledError:
                    raise
                except BaseException:  # SystemExit too: it would end the client's loop thread
                    logger.exception("on_complete callback for task %s failed", info.id)

        else:

            async def run(info: TaskInfo) -> None:
                done: concurrent.futures.Future[None] = concurrent.futures.Future()

                def call() -> None:
                    try:
                        callback(info)
                    except BaseException:  # SystemExit too: it would end the client's loop thread
                        logger.exception("on_complete callback for task %s failed", info.id)
                    finally:
                        done.set_result(None)

                threading.Thread(target=call, name="fastworker-on-complete", daemon=True).start()
                await asyncio.wrap_future(done)

        async def watcher() -> None:
            await self._client.on_complete(task_id, run, timeout=timeout)

        self._run(_nothing())  # the checks of every call: not closed, not a forked copy
        return asyncio.run_coroutine_threadsafe(watcher(), self._loop)

    def delay_workflow(self, workflow: Workflow) -> SyncWorkflowHandle:
        """Queue a workflow (see :meth:`Client.delay_workflow`); the handle's methods block."""
        from fastworker.client.workflows import SyncWorkflowHandle  # loaded with the canvas: nothing before

        return SyncWorkflowHandle(self._run(self._client.delay_workflow(workflow)), self)


async def _next_of(changes: AsyncIterator[TaskInfo]) -> TaskInfo:
    return await anext(changes)


async def _nothing() -> None:
    return None


def _serve_until_stopped(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's thread: run it until stopped (by close, or once its SyncClient is collected), then close it."""
    try:
        loop.run_forever()
    finally:
        loop.close()
        _open_loops.pop(id(loop), None)
        _closing.pop(id(loop), None)


def _close_at_exit() -> None:
    """Close the SyncClients still open, and wait for their threads, before nng shuts down at exit.

    A SyncClient dropped just before the interpreter exits closes on its own thread meanwhile, and
    pynng's at-exit ``nng_fini`` pulled nng from under it: the process aborted (``panic:
    pthread_mutex_lock``) or crashed in about one exit in seven. Registered after pynng's hook (its
    import comes first), so it runs before it; bounded by EXIT_CLOSE_BOUND in all.
    """
    deadline = time.monotonic() + EXIT_CLOSE_BOUND
    for loop, thread, client in list(_open_loops.values()):
        if time.monotonic() >= deadline:
            return
        with contextlib.suppress(Exception):  # closed or stopping meanwhile: its thread ends anyway
            # A collected client's close is under way already (a second one, on a loop that stops
            # after the first, would never run: "coroutine was never awaited" at exit).
            closing = _closing.get(id(loop))
            if closing is None and loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
                closing.add_done_callback(functools.partial(_stop_soon, loop))
            if closing is not None:
                closing.result(max(0.0, deadline - time.monotonic()))
        thread.join(max(0.0, deadline - time.monotonic()))


def _stop_soon(loop: asyncio.AbstractEventLoop, _: object = None) -> None:
    """Stop a loop from any thread (a done callback); one closed meanwhile is left as it is."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(loop.stop)


def _forget_all() -> None:
    """In a forked child: none of the parent's client threads exist there, nothing to close."""
    _open_loops.clear()
    _closing.clear()


def _stop_when_collected(loop: asyncio.AbstractEventLoop, client: Client) -> None:
    """Close a collected SyncClient's client on its loop, then stop that loop (its thread ends; never waited for here)."""
    if loop.is_closed():
        return  # closed by close()

    def stop(_: object) -> None:
        loop.stop()  # on the loop's thread: the future is completed there

    try:
        closing = _closing[id(loop)] = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
        closing.add_done_callback(stop)
    except RuntimeError:  # the loop closed meanwhile
        pass


atexit.register(_close_at_exit)
if hasattr(os, "register_at_fork"):  # a forked child has none of these threads: nothing to close there
    os.register_at_fork(after_in_child=_forget_all)
