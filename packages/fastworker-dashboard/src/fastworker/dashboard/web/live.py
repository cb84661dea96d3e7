"""One upstream poller per dashboard, shared by every live viewer.

While at least one browser watches, :class:`LiveFeed` takes a stats/queues/workers snapshot every
``interval`` seconds and follows the control plane's event stream, only to learn *that* tasks
changed. Viewers wait on its version number and re-render; task pages and details are fetched once
per change and shared by all viewers with the same filters. With nobody watching it makes no
requests at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastworker.client import FastworkerError
from fastworker.dashboard.source import AdminClient, TaskDetailView, TaskPageView
from fastworker.dashboard.web.query import TaskFilters

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds one event long poll may wait.
EVENT_WAIT = 5.0
#: Events read per poll; the feed only needs to know that something changed.
EVENT_LIMIT = 100
#: Shared task pages are re-read at least this often even without events (a safety net).
MEMO_MAX_AGE = 5.0
#: Most cached pages/details per version.
_MEMO_SIZE = 256


class FeedClosed(Exception):
    """The feed was closed (the server is stopping): live streams end."""


@dataclass(frozen=True)
class Snapshot:
    """The latest stats, queues and workers; ``error`` says why the newest refresh failed (data is then stale)."""

    stats: dict[str, Any] = field(default_factory=dict)
    queues: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    taken_at: float = 0.0
    error: str | None = None


class LiveFeed:
    """Polls the control plane on behalf of all live viewers of one app.

    Args:
        client: The app's shared admin client.
        interval: Seconds between snapshots; also the pacing of event-driven changes.
        event_wait: Seconds one event long poll may wait.
    """

    def __init__(self, client: AdminClient, *, interval: float = 1.0, event_wait: float = EVENT_WAIT) -> None:
        self.client = client
        self.interval = interval
        self.event_wait = event_wait
        #: Grows with every change a viewer may want to redraw for.
        self.version = 0
        #: Grows when tasks changed (events arrived, or the event stream had a gap).
        self.tasks_version = 0
        self.snapshot: Snapshot | None = None
        self.closed = False
        self._viewers = 0
        self._active = asyncio.Event()
        self._changed = asyncio.Event()
        self._first_snapshot = asyncio.Event()
        self._runners: list[asyncio.Task[None]] = []
        self._memo: dict[Hashable, asyncio.Task[Any]] = {}
        self._memo_key = (-1, 0.0)

    @property
    def viewers(self) -> int:
        """How many live streams are watching now."""
        return self._viewers

    # ------------------------------------------------------------------------------------ viewers

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[LiveFeed]:
        """Count a viewer for the duration of the block; polling runs while anyone watches.

        Raises:
            FeedClosed: the feed is closed.
        """
        if self.closed:
            raise FeedClosed
        self._start()
        self._viewers += 1
        self._active.set()
        try:
            yield self
        finally:
            self._viewers -= 1
            if self._viewers == 0:
                self._active.clear()

    async def wait_for_change(self, seen: int, timeout: float) -> int:
        """Wait until :attr:`version` differs from ``seen`` (or ``timeout`` passes); returns the version then.

        Raises:
            FeedClosed: the feed was closed.
        """
        if self.closed:
            raise FeedClosed
        if self.version == seen:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await changed.wait()
        if self.closed:
            raise FeedClosed
        return self.version

    async def current_snapshot(self, timeout: float) -> Snapshot:
        """The latest snapshot, waiting up to ``timeout`` for the first one (an empty snapshot if none came)."""
        if self.snapshot is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._first_snapshot.wait()
        return self.snapshot or Snapshot(error="no data from the control plane yet")

    # --------------------------------------------------------------------------------- shared reads

    async def task_page(self, filters: TaskFilters) -> TaskPageView:
        """``list_tasks`` for these filters, read once per task change and shared between viewers."""
        return await self._shared(("page", filters), lambda: self.client.list_tasks(**filters.client_kwargs()))

    async def task_detail(self, task_id: str) -> TaskDetailView:
        """``task_detail`` for one id, read once per task change and shared between viewers."""
        return await self._shared(("detail", task_id), lambda: self.client.task_detail(task_id))

    async def _shared(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        version, since = self._memo_key
        if version != self.tasks_version or now - since > MEMO_MAX_AGE or len(self._memo) > _MEMO_SIZE:
            self._memo.clear()
            self._memo_key = (self.tasks_version, now)
        task = self._memo.get(key)
        if task is None:

            async def run() -> T:
                return await read()

            task = asyncio.get_running_loop().create_task(run())
            task.add_done_callback(functools.partial(self._forget_failure, key))
            self._memo[key] = task
        result: T = await asyncio.shield(task)
        return result

    def _forget_failure(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._memo.get(key) is task:
            del self._memo[key]

    # ------------------------------------------------------------------------------------- polling

    def _start(self) -> None:
        if not self._runners:
            loop = asyncio.get_running_loop()
            self._runners = [
                loop.create_task(self._poll_snapshots(), name="fastworker-dashboard-snapshots"),
                loop.create_task(self._follow_events(), name="fastworker-dashboard-events"),
            ]

    def _bump(self, *, tasks: bool = False) -> None:
        if tasks:
            self.tasks_version += 1
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _poll_snapshots(self) -> None:
        while not self.closed:
            await self._active.wait()
            try:
                stats, queues, workers = await asyncio.gather(
                    self.client.stats(), self.client.queues(), self.client.workers()
                )
                self.snapshot = Snapshot(stats, queues, workers, time.time())
            except Exception as exc:  # FastworkerError mostly; anything else must not kill the poller
                if not isinstance(exc, FastworkerError):
                    logger.exception("reading a dashboard snapshot failed")
                previous = self.snapshot or Snapshot()
                self.snapshot = Snapshot(
                    previous.stats, previous.queues, previous.workers, previous.taken_at, error=str(exc) or repr(exc)
                )
            self._first_snapshot.set()
            self._bump()
            await asyncio.sleep(self.interval)  # pacing, not synchronisation

    async def _follow_events(self) -> None:
        after: int | None = None
        while not self.closed:
            await self._active.wait()
            try:
                if after is None:
                    after = (await self.client.events(0, timeout=0, limit=1)).last_sequence
                batch = await self.client.events(after, timeout=self.event_wait, limit=EVENT_LIMIT)
            except Exception as exc:  # FastworkerError mostly; anything else must not kill the follower
                if isinstance(exc, FastworkerError):
                    logger.debug("event stream unavailable: %s", exc)
                else:
                    logger.exception("following the event stream failed")
                after = None
                await asyncio.sleep(self.interval)
                continue
            # Only "something changed" matters here, so skip straight to the newest event.
            after = batch.last_sequence
            if batch.events or batch.gap:
                self._bump(tasks=True)
                await asyncio.sleep(self.interval)  # a busy stream costs one read per interval

    # ------------------------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """End every live stream and stop polling (safe to call more than once, from the feed's loop)."""
        if self.closed:
            return
        self.closed = True
        self._active.set()
        self._changed.set()
        for runner in self._runners:
            runner.cancel()

    async def aclose(self) -> None:
        """Close and wait for the pollers to finish."""
        self.close()
        for runner in self._runners:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        self._runners = []
        for task in self._memo.values():
            task.cancel()
        self._memo.clear()
