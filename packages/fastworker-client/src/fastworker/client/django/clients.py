"""The clients typed calls use in a Django project: made from the ``FASTWORKER`` setting on first use.

The app installs two stand-ins as the process defaults (:func:`~fastworker.client.set_default_sync_client`
and :func:`~fastworker.client.set_default_client`). Each call asks, at that moment, for the
backend the settings describe, so that nothing connects while Django starts and
``override_settings(FASTWORKER=...)`` in a test takes effect at once:

- normally one :class:`~fastworker.client.SyncClient` made from the settings, shared by every
  thread, closed at interpreter exit and made afresh in a forked child (a pre-forking server's
  workers each get their own). Async views use the same connection: their calls run on the
  SyncClient's own event loop and are awaited from whichever loop the view runs on, because
  Django may give each async view under WSGI a loop of its own, which a ``Client`` cannot follow;
- with ``"EAGER": True`` (or inside :func:`fastworker.client.django.testing.eager_tasks`) an
  ``EagerClient`` from fastworker-controlplane that runs each task in this process, at once.
  A sync task runs in the calling thread with no event loop running, so that it can use the ORM
  and sees the caller's transaction, as Django's own test tools expect; from async code a sync task
  runs where Django runs the ORM for that code (``sync_to_async(thread_sensitive=True)``).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, cast

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured

from fastworker.client._eagersync import EagerBackend, EagerSyncBackend
from fastworker.client._lazysync import LazySyncClient
from fastworker.client.django.conf import SETTING, FastWorkerSettings, parse_settings
from fastworker.client.errors import ClientClosed
from fastworker.client.handles import SyncTaskBackend, TaskBackend
from fastworker.client.home import home
from fastworker.client.models import CancelResult, TaskInfo
from fastworker.client.options import SubmitOptionArgs

if TYPE_CHECKING:
    from fastworker.client._async import Client
    from fastworker.client._sync import SyncClient

__all__ = [
    "DjangoClient",
    "DjangoSyncClient",
    "EagerBackend",
    "async_backend",
    "current_settings",
    "reset",
    "sync_backend",
]


T = TypeVar("T")

#: The module that holds EagerClient, imported by name: it ships with fastworker-controlplane, a
#: layer above the client, which the client does not depend on.
EAGER_MODULE = "fastworker.controlplane.eager"


def new_eager_client(task_modules: Sequence[str] = ()) -> EagerBackend:
    """A fresh ``EagerClient`` for every imported task (or only those of task_modules).

    Raises:
        ImproperlyConfigured: fastworker-controlplane is not installed (the message names it).
    """
    try:
        module = importlib.import_module(EAGER_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in ("fastworker.controlplane", EAGER_MODULE):
            raise
        raise ImproperlyConfigured(
            f'eager mode ({SETTING}["EAGER"] or eager_tasks()) runs tasks in this process with the '
            f"EagerClient of fastworker-controlplane, which is not installed: pip install fastworker-controlplane "
            f"(a test dependency; the web process itself needs only fastworker-client[django])"
        ) from exc
    return cast(EagerBackend, module.EagerClient(task_modules=list(task_modules)))


# ------------------------------------------------------------------------------------ eager backends


class EagerAsyncBackend:
    """The async face of an EagerClient for a Django project: sync tasks run where Django runs the ORM.

    ``EagerClient`` itself would run a sync task on the event loop's thread, where the ORM refuses
    to work; here it goes through ``sync_to_async(thread_sensitive=True)`` to the sync path.
    """

    def __init__(self, eager: EagerBackend, sync: EagerSyncBackend) -> None:
        self.eager = eager
        self.sync = sync

    def _runs_sync(self, name: str) -> bool:
        task = self.eager.registry.get(name)
        return task is not None and not task.is_async

    async def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> str:
        """Run the task now; returns its id."""
        if self._runs_sync(name):
            send = sync_to_async(self.sync.send, thread_sensitive=True)
            return await send(name, args, kwargs, **options)
        return await self.eager.send(name, args, kwargs, **options)

    async def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> Any:
        """Run the task now and return its value."""
        if self._runs_sync(name):
            call = sync_to_async(self.sync.send_and_wait, thread_sensitive=True)
            return await call(name, args, kwargs, timeout=timeout, **options)
        return await self.eager.send_and_wait(name, args, kwargs, timeout=timeout, **options)

    async def status(self, task_id: str) -> TaskInfo:
        """The task's final info."""
        return await self.eager.status(task_id)

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """The task's value."""
        return await self.eager.result(task_id, timeout=timeout)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """The task's final info."""
        return await self.eager.wait(task_id, timeout=timeout)

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancels nothing: the task is final already."""
        return await self.eager.cancel(task_id)


@dataclass(frozen=True, slots=True)
class Eager:
    """One EagerClient and its two faces."""

    client: EagerBackend
    sync: EagerSyncBackend
    async_: EagerAsyncBackend

    @classmethod
    def new(cls, task_modules: Sequence[str] = ()) -> Eager:
        """A fresh EagerClient with its faces (ImproperlyConfigured without fastworker-controlplane)."""
        client = new_eager_client(task_modules)
        sync = EagerSyncBackend(client)
        return cls(client, sync, EagerAsyncBackend(client, sync))


# ------------------------------------------------------------------------------ async over SyncClient


class SyncClientAsyncBackend:
    """Async calls through the shared SyncClient's connection, awaitable from any event loop.

    Each call runs on the SyncClient's own loop and is awaited here through a future, so no thread
    is held while a view awaits a result.
    """

    def __init__(self, get: Callable[[], SyncClient]) -> None:
        self._get = get

    async def _call(self, call: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
        sync = self._get()
        if sync.closed:
            raise ClientClosed("the SyncClient is closed")
        future = asyncio.run_coroutine_threadsafe(call(sync._client), sync._loop)
        return await asyncio.wrap_future(future)

    async def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> str:
        """Queue a task; returns its id."""
        return await self._call(lambda client: client.send(name, args, kwargs, **options))

    async def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> Any:
        """Queue a task and return its value once it finished."""
        return await self._call(lambda client: client.send_and_wait(name, args, kwargs, timeout=timeout, **options))

    async def status(self, task_id: str) -> TaskInfo:
        """The task's current state."""
        return await self._call(lambda client: client.status(task_id))

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the task's value."""
        return await self._call(lambda client: client.result(task_id, timeout=timeout))

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is final."""
        return await self._call(lambda client: client.wait(task_id, timeout=timeout))

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel the task."""
        return await self._call(lambda client: client.cancel(task_id))


# ------------------------------------------------------------------------------------------- state

_lock = threading.RLock()
_settings: FastWorkerSettings | None = None
#: The SyncClient the settings describe, made on first use.
_sync_client = LazySyncClient("FastWorker's SyncClient")
_settings_eager: Eager | None = None
#: eager_tasks() blocks, innermost last: they win over the settings, in every thread.
_overrides: list[Eager] = []
_hooks_installed = False


def current_settings() -> FastWorkerSettings:
    """The ``FASTWORKER`` setting, checked (cached until it changes).

    Raises:
        ImproperlyConfigured: the setting has problems; the message names each bad key.
    """
    parsed = _settings
    if parsed is not None:
        return parsed
    from django.conf import settings

    parsed, problems = parse_settings(getattr(settings, SETTING, None))
    if problems:
        raise ImproperlyConfigured("; ".join(problems))
    return _cache_settings(parsed)


def _cache_settings(parsed: FastWorkerSettings) -> FastWorkerSettings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = parsed
        return _settings


def _settings_client(parsed: FastWorkerSettings) -> SyncClient:
    """The SyncClient the settings describe, made once (thread-safe)."""

    def make() -> SyncClient:
        try:
            options = parsed.client_options()
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from None
        place = home()
        if parsed.control_plane is None and place is not None:
            # In a daemon, with no CONTROL_PLANE set: the control plane that runs the task, as every
            # typed call there goes to (fastworker.client.home), not the environment's default one.
            options["address"] = place.address
            if place.secret is not None and parsed.secret is None and parsed.secret_file is None:
                options["secret"] = place.secret
            if place.tls is not None and "tls" not in options:
                options["tls"] = place.tls
        from fastworker.client._sync import SyncClient

        return SyncClient(**options)

    return _sync_client.get(make)


def _eager_from_settings() -> Eager:
    global _settings_eager
    with _lock:
        if _settings_eager is None:
            _settings_eager = Eager.new()
        return _settings_eager


def _client_from_settings() -> SyncClient:
    return _settings_client(current_settings())


def sync_backend() -> SyncTaskBackend:
    """What sync typed calls go to now: an eager_tasks() block's, else what the settings describe."""
    if _overrides:
        return _overrides[-1].sync
    parsed = current_settings()
    if parsed.eager:
        return _eager_from_settings().sync
    return _settings_client(parsed)


_async_over_sync = SyncClientAsyncBackend(_client_from_settings)


def async_backend() -> TaskBackend:
    """What async typed calls go to now: an eager_tasks() block's, else what the settings describe."""
    if _overrides:
        return _overrides[-1].async_
    if current_settings().eager:
        return _eager_from_settings().async_
    return _async_over_sync


def push_eager(task_modules: Sequence[str] = ()) -> Eager:
    """Start an eager_tasks() block: a fresh EagerClient that every typed call uses until :func:`pop_eager`."""
    eager = Eager.new(task_modules)
    with _lock:
        _overrides.append(eager)
    return eager


def pop_eager(eager: Eager) -> None:
    """End the eager_tasks() block of eager (and any left open inside it)."""
    with _lock:
        if eager in _overrides:
            del _overrides[_overrides.index(eager) :]


def eager_client() -> EagerBackend | None:
    """The EagerClient typed calls use now (an eager_tasks() block's, or the settings'), or None when not eager."""
    if _overrides:
        return _overrides[-1].client
    if current_settings().eager:
        return _eager_from_settings().client
    return None


def reset() -> None:
    """Forget the settings and close the SyncClient made from them (the setting changed, or a test ends).

    The next call reads the settings again and makes what they describe.
    """
    global _settings, _settings_eager
    with _lock:
        _settings = None
        _settings_eager = None
    _sync_client.close()


def _new_lock_after_fork() -> None:
    """In a forked child: a lock another thread of the parent held would stay held for good."""
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


# ------------------------------------------------------------------------------- the process defaults


class DjangoSyncClient:
    """The process default for sync typed calls in a Django project: each call goes to :func:`sync_backend`.

    Other ``SyncClient`` methods (``delay``, ``submit``, ``stats``, ...) are passed on to the
    backend in use, so ``current_sync_client()`` can submit by name too.
    """

    def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> str:
        """Queue a task with explicit arguments; returns its id."""
        return sync_backend().send(name, args, kwargs, **options)

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
        return sync_backend().send_and_wait(name, args, kwargs, timeout=timeout, **options)

    def status(self, task_id: str) -> TaskInfo:
        """The task's current state."""
        return sync_backend().status(task_id)

    def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the task's value."""
        return sync_backend().result(task_id, timeout=timeout)

    def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is final and return its info."""
        return sync_backend().wait(task_id, timeout=timeout)

    def cancel(self, task_id: str) -> CancelResult:
        """Cancel the task."""
        return sync_backend().cancel(task_id)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(sync_backend(), name)

    def __repr__(self) -> str:
        return f"<DjangoSyncClient: settings.{SETTING}>"


class DjangoClient:
    """The process default for async typed calls (``await add.delay(...)`` in an async view): see :func:`async_backend`."""

    async def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> str:
        """Queue a task with explicit arguments; returns its id."""
        return await async_backend().send(name, args, kwargs, **options)

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
        return await async_backend().send_and_wait(name, args, kwargs, timeout=timeout, **options)

    async def status(self, task_id: str) -> TaskInfo:
        """The task's current state."""
        return await async_backend().status(task_id)

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the task's value."""
        return await async_backend().result(task_id, timeout=timeout)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is final and return its info."""
        return await async_backend().wait(task_id, timeout=timeout)

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel the task."""
        return await async_backend().cancel(task_id)

    def __repr__(self) -> str:
        return f"<DjangoClient: settings.{SETTING}>"


#: The two defaults the app installs.
DEFAULT_SYNC_CLIENT = DjangoSyncClient()
DEFAULT_CLIENT = DjangoClient()
