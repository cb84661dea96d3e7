"""Typed task handles, and the "current client" that typed submissions such as ``add.delay(1, 2)`` go through.

``await add.delay(1, 2)`` needs a client without naming one. It uses, in this order:

1. the client given explicitly (``add.with_options(client=c)``);
2. the *current* client of this context: the innermost ``async with Client(...)`` or
   ``with use_client(c):`` block (a :mod:`contextvars` variable, so concurrent tasks each see
   their own);
3. the process default set by :func:`set_default_client` (``FastWorker(app)`` sets it for a
   FastAPI app, whose request handlers run outside the lifespan's context).

Otherwise :func:`current_client` raises :class:`~fastworker.client.ClientError`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, Unpack, cast

from fastworker.client.errors import ClientError
from fastworker.client.models import CancelResult, TaskInfo
from fastworker.client.options import SubmitOptionArgs

__all__ = [
    "TaskBackend",
    "TaskHandle",
    "current_client",
    "set_default_client",
    "use_client",
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


_current: contextvars.ContextVar[TaskBackend | None] = contextvars.ContextVar("fastworker_current_client", default=None)
_default: TaskBackend | None = None

_NO_CLIENT = (
    "no client: submit inside `async with Client(...)` or `with use_client(client):`, "
    "call fastworker.client.set_default_client(client) once at startup (FastWorker(app) does that "
    "for a FastAPI app), or pass one with task.with_options(client=client)"
)


def current_client() -> TaskBackend:
    """The client typed submissions use here: the context's current client, else the process default.

    Raises:
        ClientError: neither is set.
    """
    client = _current.get()
    if client is None:
        client = _default
    if client is None:
        raise ClientError(_NO_CLIENT)
    return client


def set_default_client(client: TaskBackend | None) -> TaskBackend | None:
    """Make client the process-wide default for typed submissions (None clears it); returns the previous one.

    A client made current by ``async with`` or :func:`use_client` still wins inside its block.
    """
    global _default
    previous, _default = _default, client
    return previous


@contextlib.contextmanager
def use_client(client: TaskBackend) -> Iterator[TaskBackend]:
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
