"""One upstream poller per dashboard, shared by every live viewer.

While at least one browser watches, :class:`LiveFeed` takes a stats/queues/workers/limits snapshot every
``interval`` seconds and follows the control plane's event stream, only to learn *that* tasks
changed (and which tasks did). Viewers wait on its version number; task pages are fetched once per
change, a task's detail once per change *of that task*, and each panel is rendered once per change
and shared by every viewer of the same page (:meth:`LiveFeed.rendered`), so a thousand viewers of a
task with a 7 MB argument cost one read and one render. With nobody watching it makes no requests
at all. Page loads share in-flight detail reads too (:meth:`LiveFeed.read_task_detail`).
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

from fastworker.client import FastworkerError, TaskInfo, TaskLimits, WorkflowInfo
from fastworker.dashboard.source import AdminClient, TaskDetailView, TaskPageView, read_limits
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
#: Most task ids whose last change is remembered (beyond it, every detail counts as changed).
_CHANGED_IDS = 10_000
#: Most rendered panel sets kept (one per page, filters and viewer kind).
_RENDERED_SIZE = 256


class FeedClosed(Exception):
    """The feed was closed (the server is stopping): live streams end."""


@dataclass(frozen=True)
class Snapshot:
    """The latest stats, queues, workers and limits; ``error`` says why the newest refresh failed (data is then stale)."""

    stats: dict[str, Any] = field(default_factory=dict)
    queues: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    taken_at: float = 0.0
    error: str | None = None
    limits: list[TaskLimits] = field(default_factory=list)
    #: Why the limits could not be read (the rest of the snapshot is fresh all the same).
    limits_error: str | None = None


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
        #: Task id -> tasks_version when an event last named it; details epoch bumps on gaps.
        self._task_changed_at: dict[str, int] = {}
        self._details_epoch = 0
        self._details: dict[str, tuple[tuple[int, int], float, asyncio.Task[Any]]] = {}
        self._in_flight: dict[Hashable, asyncio.Task[Any]] = {}
        self._rendered: dict[Hashable, tuple[int, asyncio.Task[Any]]] = {}

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

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        """A workflow with its steps, read once per task change (any step's) and shared between viewers."""
        return await self._shared(("workflow", workflow_id), lambda: self.client.workflow(workflow_id))

    async def read_workflow(self, workflow_id: str) -> WorkflowInfo:
        """A fresh read of a workflow (a page load); callers asking while one is under way share it."""
        return await self._single_flight(("workflow", workflow_id), lambda: self.client.workflow(workflow_id))

    async def task_detail(self, task_id: str) -> TaskDetailView:
        """``task_detail`` for one id, read again only when an event named that task (or events were missed).

        A safety net re-reads it after ``MEMO_MAX_AGE`` seconds anyway.
        """
        stamp = (self._details_epoch, self._task_changed_at.get(task_id, -1))
        cached = self._details.get(task_id)
        now = time.monotonic()
        if cached is not None and cached[0] == stamp and now - cached[1] <= MEMO_MAX_AGE:
            task = cached[2]
        else:
            if len(self._details) >= _MEMO_SIZE:
                self._details.clear()
            task = asyncio.get_running_loop().create_task(self.read_task_detail(task_id))
            self._details[task_id] = (stamp, now, task)
            task.add_done_callback(functools.partial(self._forget_failed_detail, task_id))
        result: TaskDetailView = await asyncio.shield(task)
        return result

    def _forget_failed_detail(self, task_id: str, task: asyncio.Task[Any]) -> None:
        cached = self._details.get(task_id)
        if (task.cancelled() or task.exception() is not None) and cached is not None and cached[2] is task:
            del self._details[task_id]

    async def page_task_detail(self, task_id: str) -> TaskDetailView:
        """The detail a page load shows: the live cache while the feed follows events, else a fresh (shared) read.

        While viewers watch, the cache is re-read whenever an event names the task, so many page
        loads of a task with huge arguments cost one read, not one each.
        """
        if self._viewers > 0 and not self.closed:
            return await self.task_detail(task_id)
        return await self.read_task_detail(task_id)

    def forget_task(self, task_id: str | None = None) -> None:
        """Drop the cached detail of one task (or of all, for None): this dashboard just changed it."""
        if task_id is None:
            self._details_epoch += 1
            self._details.clear()
        else:
            self._details.pop(task_id, None)

    async def read_status(self, task_id: str) -> TaskInfo:
        """A fresh ``status`` of one task (its result with it); callers asking meanwhile share it."""
        return await self._single_flight(("status", task_id), lambda: self.client.status(task_id))

    async def read_task_detail(self, task_id: str) -> TaskDetailView:
        """A fresh ``task_detail``; callers asking while one read for that id is under way share it."""
        return await self._single_flight(("detail", task_id), lambda: self.client.task_detail(task_id))

    async def _single_flight(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        task = self._in_flight.get(key)
        if task is None:

            async def run() -> T:
                try:
                    return await read()
                finally:
                    self._in_flight.pop(key, None)

            task = asyncio.get_running_loop().create_task(run())
            self._in_flight[key] = task
        result: T = await asyncio.shield(task)
        return result

    async def rendered(self, key: Hashable, render: Callable[[], Awaitable[T]]) -> T:
        """``render()``'s output for this :attr:`version`, computed once and shared by every viewer with ``key``.

        ``key`` must capture everything the output depends on besides the feed (page, filters, the
        viewer's Ui).
        """
        version = self.version
        cached = self._rendered.get(key)
        if cached is None or cached[0] != version:
            if len(self._rendered) >= _RENDERED_SIZE:
                self._rendered = {k: v for k, v in self._rendered.items() if v[0] == version}
                if len(self._rendered) >= _RENDERED_SIZE:
                    self._rendered.clear()

            async def run() -> T:
                return await render()

            task = asyncio.get_running_loop().create_task(run())
            self._rendered[key] = (version, task)
            task.add_done_callback(functools.partial(self._forget_failed_render, key))
        else:
            task = cached[1]
        result: T = await asyncio.shield(task)
        return result

    def _forget_failed_render(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        cached = self._rendered.get(key)
        if (task.cancelled() or task.exception() is not None) and cached is not None and cached[1] is task:
            del self._rendered[key]

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
                stats, queues, workers, (limits, limits_error) = await asyncio.gather(
                    self.client.stats(), self.client.queues(), self.client.workers(), read_limits(self.client)
                )
                self.snapshot = Snapshot(stats, queues, workers, time.time(), limits=limits, limits_error=limits_error)
            except Exception as exc:  # FastworkerError mostly; anything else must not kill the poller
                if not isinstance(exc, FastworkerError):
                    logger.exception("reading a dashboard snapshot failed")
                previous = self.snapshot or Snapshot()
                self.snapshot = Snapshot(
                    previous.stats,
                    previous.queues,
                    previous.workers,
                    previous.taken_at,
                    error=str(exc) or repr(exc),
                    limits=previous.limits,
                    limits_error=previous.limits_error,
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
            # Skip straight to the newest event; remember which tasks changed, so only their details are re-read.
            missed = batch.gap or (bool(batch.events) and batch.events[-1].sequence < batch.last_sequence)
            after = batch.last_sequence
            if batch.events or batch.gap:
                self._bump(tasks=True)
                self._note_changed_tasks(batch, missed=missed)
                await asyncio.sleep(self.interval)  # a busy stream costs one read per interval

    def _note_changed_tasks(self, batch: Any, *, missed: bool) -> None:
        if missed or len(self._task_changed_at) > _CHANGED_IDS:
            self._details_epoch += 1
            self._task_changed_at.clear()
            return
        for event in batch.events:
            if event.task is not None:
                self._task_changed_at[event.task.id] = self.tasks_version
            elif event.kind == "task_state":  # a task changed but the event does not say which
                self._details_epoch += 1

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
        for _, _, detail in self._details.values():
            detail.cancel()
        self._details.clear()
        for _, rendered in self._rendered.values():
            rendered.cancel()
        self._rendered.clear()
