"""Typed task handles, and the "current client" that typed submissions such as ``add.delay(1, 2)`` go through.

``await add.delay(1, 2)`` needs a client without naming one. It uses, in this order:

1. the client given explicitly (``add.with_options(client=c)``);
2. the *current* client of this context: the innermost ``async with Client(...)`` or
   ``with use_client(c):`` block (a :mod:`contextvars` variable, so concurrent tasks each see
   their own);
3. the process default set by :func:`set_default_client` (``FastWorker(app)`` sets it for a
   FastAPI app, whose request handlers run outside the lifespan's context).

4. inside a FastWorker daemon (a task running on the control plane or a subworker, or in their
   child processes), a client of the control plane that runs the task
   (:mod:`fastworker.client.home`), one per event loop.

Otherwise :func:`current_client` raises :class:`~fastworker.client.ClientError`.

Sync code (a Django or Flask view, a script) calls ``add.delay_sync(1, 2)``, which blocks and
returns a :class:`SyncTaskHandle`. It uses, in this order: the client given explicitly (a
``SyncClient`` in ``with_options(client=...)``); the innermost ``with SyncClient(...)`` or
``with use_sync_client(c):`` block; the process default set by :func:`set_default_sync_client`;
else one ``SyncClient`` made on first use, shared by every thread and closed when the interpreter
exits (:func:`current_sync_client`): of the control plane that runs the task inside a daemon, else
from the environment (``FASTWORKER_CONTROL_PLANE``, the secret and TLS variables, as
``SyncClient()`` reads them).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, Unpack, cast, overload

from fastworker.client._lazysync import LazySyncClient
from fastworker.client.errors import ClientError
from fastworker.client.home import home, home_client
from fastworker.client.models import CancelResult, TaskInfo
from fastworker.client.options import SubmitOptionArgs

if TYPE_CHECKING:  # SyncClient loads its thread and asyncio on first use, not with the package
    from fastworker.client._sync import SyncClient

__all__ = [
    "SyncTaskBackend",
    "SyncTaskHandle",
    "TaskBackend",
    "TaskHandle",
    "current_client",
    "current_sync_client",
    "set_default_client",
    "set_default_sync_client",
    "use_client",
    "use_sync_client",
]


R = TypeVar("R")


class TaskBackend(Protocol):
    """What typed task functions and handles talk to.

    :class:`~fastworker.client.Client` implements it; so does
    ``fastworker.controlplane.eager.EagerClient``, which runs tasks in-process for unit tests.
    """

    async def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> str:
        """Queue a task with explicit arguments; returns its id."""
        ...

    async def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> Any:
        """Queue a task with explicit arguments and return its value once it finished."""
        ...

    async def status(self, task_id: str) -> TaskInfo:
        """The task's current state."""
        ...

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the task's value."""
        ...

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is final and return its info."""
        ...

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel the task."""
        ...


class SyncTaskBackend(Protocol):
    """What sync typed calls (``add.delay_sync(...)``) and :class:`SyncTaskHandle` talk to: :class:`TaskBackend`, blocking.

    :class:`~fastworker.client.SyncClient` implements it.
    """

    def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> str:
        """Queue a task with explicit arguments; returns its id."""
        ...

    def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> Any:
        """Queue a task with explicit arguments and return its value once it finished."""
        ...

    def status(self, task_id: str) -> TaskInfo:
        """The task's current state."""
        ...

    def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the task's value."""
        ...

    def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is final and return its info."""
        ...

    def cancel(self, task_id: str) -> CancelResult:
        """Cancel the task."""
        ...


#: The backend ``use_client``/``use_sync_client`` are given, and yield back with its own type.
BackendT = TypeVar("BackendT", bound=TaskBackend)
SyncBackendT = TypeVar("SyncBackendT", bound="SyncTaskBackend")

_current: contextvars.ContextVar[TaskBackend | None] = contextvars.ContextVar("fastworker_current_client", default=None)
_default: TaskBackend | None = None

_NO_CLIENT = (
    "no client: submit inside `async with Client(...)` or `with use_client(client):`, "
    "call fastworker.client.set_default_client(client) once at startup (FastWorker(app) does that "
    "for a FastAPI app), or pass one with task.with_options(client=client)"
)


def current_client() -> TaskBackend:
    """The client typed submissions use here: the context's current client, else the process default.

    Inside a daemon (:mod:`fastworker.client.home`), else a client of the control plane that runs the task.

    Raises:
        ClientError: none of them is set.
    """
    client = _current.get()
    if client is None:
        client = _default
    if client is None:
        client = home_client()
    if client is None:
        if _default_sync is not None:  # set_default_client was given a SyncClient
            raise ClientError(
                "no client for async code: the default client is a SyncClient, for sync calls"
                " (add.delay_sync(...)); await add.delay(...) needs a Client: " + _NO_CLIENT.removeprefix("no client: ")
            )
        raise ClientError(_NO_CLIENT)
    return client


@overload
def set_default_client(client: TaskBackend | None) -> TaskBackend | None: ...
@overload
def set_default_client(client: SyncTaskBackend) -> SyncTaskBackend | None: ...
def set_default_client(client: TaskBackend | SyncTaskBackend | None) -> TaskBackend | SyncTaskBackend | None:
    """Make client the process-wide default for typed submissions (None clears it); returns the previous one.

    A client made current by ``async with`` or :func:`use_client` still wins inside its block.
    Given a ``SyncClient`` (blocking methods), it becomes the default of sync typed calls
    (``add.delay_sync(...)``) instead, as :func:`set_default_sync_client` makes it.
    """
    global _default
    send = getattr(client, "send", None)
    if send is not None and not inspect.iscoroutinefunction(send):  # a SyncClient: blocking methods
        return set_default_sync_client(cast(SyncTaskBackend, client))
    previous, _default = _default, cast(TaskBackend | None, client)
    return previous


@contextlib.contextmanager
def use_client(client: BackendT) -> Iterator[BackendT]:
    """Make client the current one inside the ``with`` block (and the tasks started in it)."""
    token = _current.set(client)
    try:
        yield client
    finally:
        _reset(token)


def _push(client: TaskBackend) -> contextvars.Token[TaskBackend | None]:
    """Make client current (``Client.__aenter__``); give the token back to :func:`_reset`."""
    return _current.set(client)


def _reset(token: contextvars.Token[TaskBackend | None]) -> None:
    """Undo a :func:`_push`; a token from another context (exit in a different task) is dropped."""
    with contextlib.suppress(ValueError):
        _current.reset(token)


# ------------------------------------------------------------------------------- sync code's client

_current_sync: contextvars.ContextVar[SyncTaskBackend | None] = contextvars.ContextVar(
    "fastworker_current_sync_client", default=None
)
_default_sync: SyncTaskBackend | None = None
#: The SyncClient made from the environment on first use (see current_sync_client).
_from_env = LazySyncClient("the environment's SyncClient")


def current_sync_client() -> SyncTaskBackend:
    """The client sync typed calls (``add.delay_sync(...)``) use here.

    The innermost ``with SyncClient(...)`` or :func:`use_sync_client` block's, else the process
    default (:func:`set_default_sync_client`), else one ``SyncClient()`` made from the environment
    on first use (``FASTWORKER_CONTROL_PLANE``, else ``tcp://127.0.0.1:5550``; the secret from
    ``FASTWORKER_SECRET_FILE`` or ``FASTWORKER_SECRET``; TLS from ``FASTWORKER_TLS_*``): made once
    whichever thread asks first, shared by all, closed at interpreter exit, made again in a
    forked child.

    Raises:
        ValueError: the environment names a secret file or TLS files that cannot be used.
    """
    client = _current_sync.get()
    if client is None:
        client = _default_sync
    if client is None:
        client = _environment_sync_client()
    return client


def _chosen_sync_client() -> SyncTaskBackend | None:
    """The sync client the code made current (``with SyncClient(...)``, the default), or None: never the environment's.

    Typed awaitable calls in sync code (``add.delay(...)`` without ``await``) submit through it and
    are refused without one: a client made up for them from the environment would hide the
    missing ``await`` of code that meant to be async.
    """
    client = _current_sync.get()
    return client if client is not None else _default_sync


def set_default_sync_client(client: SyncTaskBackend | None) -> SyncTaskBackend | None:
    """Make client the process-wide default for sync typed calls (None clears it); returns the previous one.

    Without one, they use a ``SyncClient`` made from the environment. A client made current by
    ``with SyncClient(...)`` or :func:`use_sync_client` still wins inside its block.
    """
    global _default_sync
    previous, _default_sync = _default_sync, client
    return previous


@contextlib.contextmanager
def use_sync_client(client: SyncBackendT) -> Iterator[SyncBackendT]:
    """Make client the current one for sync typed calls inside the ``with`` block (this thread only)."""
    token = _current_sync.set(client)
    try:
        yield client
    finally:
        _reset_sync(token)


def _push_sync(client: SyncTaskBackend) -> contextvars.Token[SyncTaskBackend | None]:
    """Make client current for sync typed calls (``SyncClient.__enter__``); give the token to :func:`_reset_sync`."""
    return _current_sync.set(client)


def _reset_sync(token: contextvars.Token[SyncTaskBackend | None]) -> None:
    """Undo a :func:`_push_sync`; a token from another context is dropped."""
    with contextlib.suppress(ValueError):
        _current_sync.reset(token)


def _environment_sync_client() -> SyncClient:
    """The process's SyncClient made from the environment, made on first use (thread-safe)."""
    return _from_env.get(_new_environment_sync_client)


def _new_environment_sync_client() -> SyncClient:
    from fastworker.client._sync import SyncClient

    place = home()
    if place is not None:
        return SyncClient(place.address, secret=place.secret, tls=place.tls)
    return SyncClient()


def _close_environment_sync_client() -> None:
    """Close the SyncClient made from the environment, if any (at exit; tests between environments)."""
    _from_env.close()


def event_loop_running() -> bool:
    """True when this thread is running an asyncio event loop.

    Without ``asyncio`` imported no loop can run, so a sync caller pays no asyncio import here.
    """
    if "asyncio" not in sys.modules:
        return False
    import asyncio

    # get_running_loop() without the RuntimeError: the same C function, cheaper on both paths.
    return asyncio._get_running_loop() is not None


@dataclass(frozen=True, slots=True)
class TaskHandle(Generic[R]):
    """One submitted task, typed by what its function returns: ``await add.delay(1, 2)`` is a ``TaskHandle[int]``.

    Build one for a known id with ``add.handle(task_id)`` (typed) or ``TaskHandle(task_id)``.

    Attributes:
        id: The task id.
        name: The task name ("" when unknown).
        client: The client it was submitted through; None means :func:`current_client` at each call.
    """

    id: str
    name: str = ""
    client: TaskBackend | None = field(default=None, repr=False, compare=False)

    def _backend(self) -> TaskBackend:
        return self.client if self.client is not None else current_client()

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the task to finish and return its value.

        Raises:
            TaskFailed: the task ended in FAILURE or CANCELLED.
            TaskTimeout: timeout passed first (the task goes on).
            TaskNotFound: the control plane does not know the id (never seen, or evicted).
        """
        return cast(R, await self._backend().result(self.id, timeout=timeout))

    async def status(self) -> TaskInfo:
        """The task's current state and, when final, its result or error.

        Raises:
            TaskNotFound: the control plane does not know the id.
        """
        return await self._backend().status(self.id)

    async def wait(self, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is final and return its TaskInfo (without raising for FAILURE).

        Raises:
            TaskTimeout: timeout passed first.
            TaskNotFound: the control plane does not know the id.
        """
        return await self._backend().wait(self.id, timeout=timeout)

    async def cancel(self) -> CancelResult:
        """Cancel the task (queued, scheduled or running); says whether it was cancelled.

        Raises:
            TaskNotFound: the control plane does not know the id.
        """
        return await self._backend().cancel(self.id)

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class SyncTaskHandle(Generic[R]):
    """One submitted task, for sync code: ``add.delay_sync(1, 2)`` is a ``SyncTaskHandle[int]``; its methods block.

    Build one for a known id with ``add.handle_sync(task_id)`` (typed) or ``SyncTaskHandle(task_id)``.

    Attributes:
        id: The task id.
        name: The task name ("" when unknown).
        client: The sync client it was submitted through; None means :func:`current_sync_client`
            at each call.
    """

    id: str
    name: str = ""
    client: SyncTaskBackend | None = field(default=None, repr=False, compare=False)

    def _backend(self) -> SyncTaskBackend:
        return self.client if self.client is not None else current_sync_client()

    def result(self, timeout: float | None = None) -> R:
        """Wait for the task to finish and return its value.

        Raises:
            TaskFailed: the task ended in FAILURE or CANCELLED.
            TaskTimeout: timeout passed first (the task goes on).
            TaskNotFound: the control plane does not know the id (never seen, or evicted).
        """
        return cast(R, self._backend().result(self.id, timeout=timeout))

    def status(self) -> TaskInfo:
        """The task's current state and, when final, its result or error.

        Raises:
            TaskNotFound: the control plane does not know the id.
        """
        return self._backend().status(self.id)

    def wait(self, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is final and return its TaskInfo (without raising for FAILURE).

        Raises:
            TaskTimeout: timeout passed first.
            TaskNotFound: the control plane does not know the id.
        """
        return self._backend().wait(self.id, timeout=timeout)

    def cancel(self) -> CancelResult:
        """Cancel the task (queued, scheduled or running); says whether it was cancelled.

        Raises:
            TaskNotFound: the control plane does not know the id.
        """
        return self._backend().cancel(self.id)

    def __str__(self) -> str:
        return self.id
