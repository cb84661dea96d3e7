"""``SyncClient``: the blocking twin of ``Client``, for code without an event loop.

It runs one ``Client`` on a private event loop in a daemon thread, so it keeps the async
client's single connection, coalescing and correctness, and is safe to share across threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from fastworker.client._async import Client
from fastworker.client.models import CancelResult, EventBatch, Priority, TaskDetail, TaskInfo, TaskPage, TaskState
from fastworker.client.tls import TlsFiles
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE

T = TypeVar("T")


class SyncClient:
    """Blocking client with the same methods as :class:`Client` (``close`` instead of ``aclose``)."""

    def __init__(
        self,
        address: str | None = None,
        *,
        secret: str | None = None,
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
        self._thread = threading.Thread(target=self._loop.run_forever, name="fastworker-sync-client", daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def address(self) -> str:
        """The discovery address in use."""
        return self._client.address

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise RuntimeError("the SyncClient is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> SyncClient:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
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
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def delay(
        self,
        name: str,
        /,
        *args: Any,
        priority: Priority | str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: datetime | float | None = None,
        task_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """See :meth:`Client.delay`."""
        return self._run(
            self._client.delay(
                name, *args, priority=priority, countdown=countdown, eta=eta, expires=expires, task_id=task_id, **kwargs
            )
        )

    def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """See :meth:`Client.send`."""
        return self._run(self._client.send(name, args, kwargs, **options))

    def delay_many(
        self,
        calls: Iterable[tuple[str, Sequence[Any]] | tuple[str, Sequence[Any], Mapping[str, Any]]],
        *,
        priority: Priority | str | None = None,
    ) -> list[str]:
        """See :meth:`Client.delay_many`."""
        return self._run(self._client.delay_many(list(calls), priority=priority))

    def submit(
        self,
        name: str,
        /,
        *args: Any,
        timeout: float | None = None,
        priority: Priority | str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: datetime | float | None = None,
        task_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """See :meth:`Client.submit`."""
        return self._run(
            self._client.submit(
                name,
                *args,
                timeout=timeout,
                priority=priority,
                countdown=countdown,
                eta=eta,
                expires=expires,
                task_id=task_id,
                **kwargs,
            )
        )

    def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        """See :meth:`Client.send_and_wait`."""
        return self._run(self._client.send_and_wait(name, args, kwargs, timeout=timeout, **options))

    def status(self, task_id: str) -> TaskInfo:
        """See :meth:`Client.status`."""
        return self._run(self._client.status(task_id))

    def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """See :meth:`Client.result`."""
        return self._run(self._client.result(task_id, timeout=timeout))

    def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """See :meth:`Client.wait`."""
        return self._run(self._client.wait(task_id, timeout=timeout))

    def wait_many(self, task_ids: Sequence[str], *, timeout: float | None = None) -> list[TaskInfo]:
        """See :meth:`Client.wait_many`."""
        return self._run(self._client.wait_many(list(task_ids), timeout=timeout))

    def results(self, task_ids: Sequence[str], *, timeout: float | None = None) -> list[Any]:
        """See :meth:`Client.results`."""
        return self._run(self._client.results(list(task_ids), timeout=timeout))

    def events(
        self, after: int = 0, *, timeout: float = 5.0, task_ids: Sequence[str] = (), limit: int = 1000
    ) -> EventBatch:
        """See :meth:`Client.events`."""
        return self._run(self._client.events(after, timeout=timeout, task_ids=task_ids, limit=limit))

    def cancel(self, task_id: str) -> CancelResult:
        """See :meth:`Client.cancel`."""
        return self._run(self._client.cancel(task_id))

    def retry(self, task_id: str) -> TaskState:
        """See :meth:`Client.retry`."""
        return self._run(self._client.retry(task_id))

    def stats(self) -> dict[str, Any]:
        """See :meth:`Client.stats`."""
        return self._run(self._client.stats())

    def queues(self) -> list[dict[str, Any]]:
        """See :meth:`Client.queues`."""
        return self._run(self._client.queues())

    def workers(self) -> list[dict[str, Any]]:
        """See :meth:`Client.workers`."""
        return self._run(self._client.workers())

    def tasks(self) -> list[dict[str, Any]]:
        """See :meth:`Client.tasks`."""
        return self._run(self._client.tasks())

    def list_tasks(
        self,
        *,
        states: Iterable[TaskState | str] = (),
        name: str = "",
        priority: Priority | str | None = None,
        worker: str = "",
        search: str = "",
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPage:
        """See :meth:`Client.list_tasks`."""
        return self._run(
            self._client.list_tasks(
                states=states, name=name, priority=priority, worker=worker, search=search, offset=offset, limit=limit
            )
        )

    def task_detail(self, task_id: str) -> TaskDetail:
        """See :meth:`Client.task_detail`."""
        return self._run(self._client.task_detail(task_id))

    def purge(self, priority: Priority | str) -> int:
        """See :meth:`Client.purge`."""
        return self._run(self._client.purge(priority))

    def pause(self, priority: Priority | str) -> bool:
        """See :meth:`Client.pause`."""
        return self._run(self._client.pause(priority))

    def resume(self, priority: Priority | str) -> bool:
        """See :meth:`Client.resume`."""
        return self._run(self._client.resume(priority))

    def drain_worker(self, worker_id: str, *, timeout: float = 30.0) -> bool:
        """See :meth:`Client.drain_worker`."""
        return self._run(self._client.drain_worker(worker_id, timeout=timeout))
