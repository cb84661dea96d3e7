"""The control plane's state machine: accept, queue, schedule, dispatch, finish, cancel, retry and wait.

Everything here runs on the event loop's thread except :meth:`Coordinator.take_local`, which the
local executor's slot threads call to take their next task. The priority queue and the
PENDING -> RUNNING/CANCELLED transitions are therefore guarded by one lock (``self.lock``); all
other state is touched by the loop only. Sockets live in ``server``; envelope translation lives in
``api``; this module only speaks records.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastworker.client.task import TaskFunction, TaskRegistry
from fastworker.controlplane.events import EventBus
from fastworker.controlplane.local import LocalExecutor
from fastworker.controlplane.queue import LEVELS, PriorityQueue, Schedule
from fastworker.controlplane.records import (
    CANCELLED,
    FAILURE,
    PENDING,
    RETRYING,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    ResultCache,
    TaskRecord,
)
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import error_pb2, events_pb2, task_pb2
from fastworker.worker.executor import Outcome

if TYPE_CHECKING:
    from fastworker.controlplane.journal import Journal, Recovered

logger = logging.getLogger(__name__)

#: Worker id reported for tasks the control plane ran itself (SPEC).
LOCAL_WORKER_ID = "controlplane"
#: Longest a wait may be held by the control plane, in seconds; clients re-ask after it.
MAX_WAIT = 30.0
#: How long a wait on several tasks keeps gathering once enough of them finished, in seconds.
GATHER_WINDOW = 0.005
#: How long it keeps gathering after a first finish while fewer than enough did, in seconds.
PATIENCE_WINDOW = 0.05
#: A wait on n tasks is answered early once n // ENOUGH_DIVISOR of them (at least one) are final.
ENOUGH_DIVISOR = 8
#: Throughput is measured over this many seconds.
THROUGHPUT_WINDOW = 60.0
#: Seconds of per-second finish counts kept for the stats history (charts).
HISTORY_WINDOW = 120
#: Seconds between checks for subworkers' running tasks while draining (shutdown only).
DRAIN_POLL = 0.05


def final_state(outcome: Outcome, cancelled: bool) -> int:
    """The state a local execution ends in."""
    if cancelled:
        return CANCELLED
    return SUCCESS if outcome.succeeded else FAILURE


@dataclass(frozen=True)
class RetryPolicy:
    """How a task is retried: re-runs allowed, first delay, cap, and the error types that qualify."""

    retries: int
    backoff: float
    backoff_max: float
    retry_on: frozenset[str]


#: Default cap of the retry delay in seconds (SPEC).
DEFAULT_RETRY_BACKOFF_MAX = 600.0
#: Errors another attempt cannot fix: never retried.
NOT_RETRIABLE = frozenset({"UnknownTask", "PayloadError", "TaskCancelled"})


class RequestRefused(Exception):
    """A request the coordinator will not carry out; ``code`` is the wire error code."""

    def __init__(self, code: error_pb2.ErrorCode.ValueType, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Counters:
    """Totals since start, for stats."""

    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    executed_locally: int = 0
    rejected_frames: int = 0
    #: Frames refused because they failed authentication (also counted in rejected_frames).
    auth_failures: int = 0
    #: Worker outcomes ignored because the task had been taken back from that worker.
    late_outcomes: int = 0
    #: Registrations refused because another live worker process holds the worker id.
    duplicate_worker_ids: int = 0
    #: Connections refused by --max-connections or --max-connections-per-peer.
    connections_refused: int = 0
    #: Connections closed for silence (--idle-connection-timeout) or to make room under a full cap.
    connections_idle_closed: int = 0
    #: Connections closed for holding too many replies they did not read.
    connections_dropped_unread: int = 0


#: Called with (records now final, ids still pending, ids unknown) when a wait ends.
WaitCallback = Callable[[list[TaskRecord], list[str], list[str]], None]
#: Called on a slot thread with (record, final state, outcome) to answer a one-task wait at once.
DirectCallback = Callable[[TaskRecord, int, Outcome], None]


class Waiter:
    """A pending wait for any of a set of tasks to reach a final state."""

    __slots__ = ("callback", "direct", "done", "enough", "finished", "gather", "ids", "pending", "remaining", "timer")

    def __init__(
        self, ids: list[str], pending: list[str], callback: WaitCallback, direct: DirectCallback | None = None
    ) -> None:
        self.ids = ids  # every id asked for, so unknown ones are still reported at the end
        self.pending = pending  # the ids this waiter listens on
        self.callback = callback
        self.direct = direct
        #: Set (under the coordinator's lock) by whoever answers: the loop, or a slot thread.
        self.done = False
        #: Listened-on tasks not final yet.
        self.remaining = len(pending)
        #: Asked-for tasks final so far, and how many make an early answer worth it.
        self.finished = 0
        self.enough = waits_enough(len(ids))
        self.timer: asyncio.TimerHandle | None = None
        self.gather: asyncio.TimerHandle | None = None


class Coordinator:
    """Owns every task record and decides what runs next."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        registry: TaskRegistry,
        *,
        local_concurrency: int,
        result_cache_size: int,
        result_ttl: float,
        result_cache_bytes: int = 0,
        max_queue: int = 0,
        allow_pickle: bool = False,
        clock: Callable[[], float] = time.time,
        task_modules: Sequence[str] = (),
        sys_path: Sequence[str] = (),
        journal: Journal | None = None,
    ) -> None:
        self._loop = loop
        #: Records every state change for replay after a restart (``--journal``); None: nothing is recorded.
        self.journal = journal
        self.registry = registry
        self.max_queue = max_queue
        self.clock = clock
        self.started_at = clock()
        self.active: dict[str, TaskRecord] = {}
        #: Unfinished tasks per name (the periodic scheduler's "is a run still going?").
        self.active_by_name: Counter[str] = Counter()
        self.cache = ResultCache(result_cache_size, result_ttl, result_cache_bytes)
        self.queue = PriorityQueue()
        self.schedule = Schedule()
        self.counters = Counters()
        #: Every state change, for the dashboard, the CLI and clients that watch tasks.
        self.events = EventBus()
        self.accepting = True
        #: Task names some registered subworker runs (kept current by the dispatcher).
        self.remote_task_names: frozenset[str] = frozenset()
        self.dispatcher: Any = None
        self.lock = threading.Lock()
        self._work_ready = threading.Condition(self.lock)
        self._slots_stopping = False
        self.running = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self.local = LocalExecutor(
            loop,
            local_concurrency,
            self.take_local,
            self._on_local_done,
            allow_pickle=allow_pickle,
            on_finished=self._answer_from_slot,
            task_modules=task_modules,
            sys_path=sys_path,
        )
        self.local.start()
        self._waiters: dict[str, list[Waiter]] = {}
        self._dispatch_scheduled = False
        self._schedule_timer: asyncio.TimerHandle | None = None
        self._schedule_timer_due: float | None = None
        #: [whole second, finished, of which SUCCESS, of which FAILURE] for the last HISTORY_WINDOW seconds.
        self._finish_buckets: deque[list[int]] = deque()
        self._expiry_timer = loop.call_later(min(60.0, result_ttl), self._expire_results)

    # ----------------------------------------------------------------------------------------- lookup

    def find(self, task_id: str) -> TaskRecord | None:
        """The record of a known task (active or in the result cache), or None."""
        record = self.active.get(task_id)
        if record is not None:
            return record
        return self.cache.get(task_id, self.clock())

    def _known(self, task_id: str) -> TaskRecord | None:
        """Like find, for de-duplication: does not count as a cache lookup."""
        return self.active.get(task_id) or self.cache.peek(task_id, self.clock())

    # ----------------------------------------------------------------------------------------- submit

    def submit(self, spec: task_pb2.TaskSpec) -> tuple[TaskRecord, bool]:
        """Accept a task spec; returns (record, duplicate). Idempotent by task id.

        Raises:
            RequestRefused: shutting down, bad spec, unknown task, or a full queue.
        """
        outcome = self.submit_many((spec,))[0]
        if isinstance(outcome, RequestRefused):
            raise outcome
        return outcome

    def submit_many(self, specs: Iterable[task_pb2.TaskSpec]) -> list[tuple[TaskRecord, bool] | RequestRefused]:
        """Accept many specs, each on its own (a refusal stops nothing else); one outcome per spec, in order.

        The accepted tasks enter the queue together, under one acquisition of the lock.
        """
        outcomes: list[tuple[TaskRecord, bool] | RequestRefused] = []
        ready: list[TaskRecord] = []
        for spec in specs:
            try:
                record, duplicate = self._accept(spec, len(ready))
            except RequestRefused as refused:
                outcomes.append(refused)
                continue
            outcomes.append((record, duplicate))
            if not duplicate and record.state == PENDING:
                ready.append(record)
        if ready:
            with self.lock:
                for record in ready:
                    self.queue.push(record)
                self._work_ready.notify(len(ready))
            if self.dispatcher is not None:
                self.dispatcher.schedule()
        for outcome in outcomes:
            if not isinstance(outcome, RequestRefused) and not outcome[1]:
                self.events.publish_task(outcome[0])
        return outcomes

    def _default_priority(self, name: str) -> int:
        task = self.registry.get(name)
        if task is not None:
            return task.options.priority.to_wire()
        if self.dispatcher is not None:
            definition = self.dispatcher.fleet.definition(name)
            if definition is not None and definition.priority:
                return int(definition.priority)
        return task_pb2.PRIORITY_NORMAL

    @property
    def running_total(self) -> int:
        """Tasks running now, locally and on subworkers."""
        fleet = self.dispatcher.fleet if self.dispatcher is not None else ()
        remote = sum(1 for w in fleet for r in w.leases.values() if not r.held)
        return self.running + remote

    def restore(self, recovered: Recovered) -> None:
        """Take in the tasks a journal replay recovered (at start, before serving; nothing is journaled again).

        Unfinished tasks are queued (in journal order: the ones that were running come first) or
        scheduled; finished ones go to the result cache; paused levels stay paused.
        """
        now = self.clock()
        queued: list[TaskRecord] = []
        finished: list[TaskRecord] = []
        for record in recovered.records:
            if record.is_final:
                finished.append(record)
                continue
            self.active[record.task_id] = record
            self.active_by_name[record.name] += 1
            if record.state == PENDING:
                queued.append(record)
            else:
                self.schedule.add(record, record.eta)
        for record in sorted(finished, key=lambda r: r.finished_at):
            self.cache.add(record, now)
        with self.lock:
            self.queue.paused.update(recovered.paused)
            for record in queued:
                self.queue.push(record)
            self._work_ready.notify(len(queued))
        self._arm_schedule_timer()
        if self.dispatcher is not None:
            self.dispatcher.schedule()

    def attach_dispatcher(self, dispatcher: Any) -> None:
        """Let subworkers take tasks too (see ``dispatcher``); local slots then run only what no free worker can."""
        self.dispatcher = dispatcher

    def _runnable_locally(self, record: TaskRecord) -> bool:
        if record.name not in self.registry:
            return False
        dispatcher = self.dispatcher
        return dispatcher is None or not dispatcher.fleet.has_free_slot_for(record.name)

    def wake_slots(self) -> None:
        """Let idle local slots look at the queue again (e.g. workers just filled up)."""
        with self.lock:
            if len(self.queue):
                self._work_ready.notify_all()

    def requeue_front(self, record: TaskRecord) -> None:
        """Put a task taken back from a worker at the front of its level, to run again next."""
        with self.lock:
            record.state = PENDING
            record.held = False
            record.worker = ""
            if self.journal is not None:
                self.journal.waiting(record)
            self.queue.push_front(record)
            self._work_ready.notify()
        self.counters.retried += 1
        self.events.publish_task(record)
        if self.dispatcher is not None:
            self.dispatcher.schedule()

    def fail_running(self, record: TaskRecord, error_type: str, message: str) -> None:
        """End a running task as FAILURE with a system error (e.g. WorkerLost)."""
        self._fail(record, error_type, message)

    def finish_remote(self, record: TaskRecord, state: int) -> None:
        """End a task a subworker reported (result or error already set on the record)."""
        self._finalize(record, state)

    def _accept(self, spec: task_pb2.TaskSpec, not_yet_queued: int) -> tuple[TaskRecord, bool]:
        """Validate one spec and create its record: PENDING (for the caller to queue) or SCHEDULED."""
        task_id = spec.task_id
        existing = self._known(task_id)
        if existing is not None:
            return existing, True
        if not self.accepting:
            raise RequestRefused(error_pb2.ERROR_CODE_SHUTTING_DOWN, "the control plane is shutting down")
        if not task_id or len(task_id) > 200:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, "task_id must be 1 to 200 characters")
        task = self.registry.get(spec.name)
        if task is None and spec.name not in self.remote_task_names:
            raise RequestRefused(error_pb2.ERROR_CODE_UNKNOWN_TASK, f"unknown task {spec.name!r}")
        if self.max_queue and len(self.queue) + len(self.schedule) + not_yet_queued >= self.max_queue:
            raise RequestRefused(
                error_pb2.ERROR_CODE_QUEUE_FULL, f"queue is full ({self.max_queue} tasks waiting); try again later"
            )
        priority = spec.priority or self._default_priority(spec.name)
        if priority not in LEVELS:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, f"unknown priority {spec.priority}")
        now = self.clock()
        record = TaskRecord(spec, priority, now)
        self.active[task_id] = record
        self.active_by_name[spec.name] += 1
        self.counters.submitted += 1
        if spec.eta > now:
            self._hold(record, spec.eta)
        if self.journal is not None:
            self.journal.accepted(record)
        return record, False

    def _enqueue(self, record: TaskRecord) -> None:
        """Put a PENDING record in the queue and wake a free slot."""
        with self.lock:
            record.state = PENDING
            self.queue.push(record)
            self._work_ready.notify()
        self.events.publish_task(record)
        if self.dispatcher is not None:
            self.dispatcher.schedule()

    def _hold(self, record: TaskRecord, due: float) -> None:
        record.state = SCHEDULED
        record.eta = due
        self.schedule.add(record, due)
        self._arm_schedule_timer()

    def _arm_schedule_timer(self) -> None:
        due = self.schedule.next_due()
        if due is None or (self._schedule_timer_due is not None and self._schedule_timer_due <= due):
            return
        if self._schedule_timer is not None:
            self._schedule_timer.cancel()
        delay = max(0.0, due - self.clock())
        self._schedule_timer = self._loop.call_later(delay, self._release_due)
        self._schedule_timer_due = due

    def _release_due(self) -> None:
        self._schedule_timer = None
        self._schedule_timer_due = None
        for record in self.schedule.pop_due(self.clock()):
            record.eta = 0.0
            self._enqueue(record)
        self._arm_schedule_timer()

    # --------------------------------------------------------------------------------------- dispatch

    def take_local(self) -> tuple[TaskRecord, TaskFunction[Any, Any]] | None:
        """Block until a task can run in a local slot, mark it RUNNING and return it (slot threads only).

        Returns None when the slots must stop.
        """
        with self.lock:
            while True:
                if self._slots_stopping:
                    return None
                record = self.queue.pop(None if self.dispatcher is None else self._runnable_locally)
                if record is not None and self._expired(record):
                    record.state = CANCELLED  # under the lock: nobody else takes it; the loop finishes it
                    self._loop.call_soon_threadsafe(self.expire, record)
                    continue
                if record is not None:
                    task = self.registry.get(record.name)
                    if task is None:  # registered locally at submit, so this cannot happen; fail loudly
                        record.state = RUNNING
                        self._loop.call_soon_threadsafe(
                            self._fail_running, record, "UnknownTask", f"no local task {record.name!r}"
                        )
                        continue
                    record.state = RUNNING
                    record.attempts += 1
                    record.worker = LOCAL_WORKER_ID
                    record.started_at = self.clock()
                    self.running += 1
                    self.counters.executed_locally += 1
                    if self.journal is not None:
                        self.journal.running(record)
                    return record, task
                self._work_ready.wait()

    def _answer_from_slot(self, record: TaskRecord, outcome: Outcome, cancelled: bool) -> None:
        if record.direct_waiter is None:
            return
        state = final_state(outcome, cancelled)
        if state == FAILURE and self.would_retry(record, outcome.error, outcome.retry_delay):
            return  # not final: the task will run again, so the waiter keeps waiting
        self.answer_directly(record, state, outcome)

    def _expired(self, record: TaskRecord) -> bool:
        expires = record.spec.expires
        return bool(expires) and self.clock() > expires

    def expire(self, record: TaskRecord) -> None:
        """End a task that was not started before its ``expires`` time as CANCELLED (reason: expired)."""
        record.error = task_pb2.TaskError(type="Expired", message="the task expired before it could start")
        self._finalize(record, CANCELLED)

    def _fail_running(self, record: TaskRecord, error_type: str, message: str) -> None:
        self._fail(record, error_type, message)

    def _on_local_done(self, record: TaskRecord, outcome: Outcome, cancelled: bool) -> None:
        with self.lock:
            self.running -= 1
            if self.running == 0:
                self._drained.set()
        if record.state == RUNNING:
            # The slot thread set RUNNING; the loop tells the stream now, before the outcome.
            self.events.publish_task(record)
            state = final_state(outcome, cancelled)
            if state == SUCCESS:
                record.result = outcome.result
                self._finalize(record, state)
            elif state == FAILURE:
                self.retry_or_fail(record, outcome.error, outcome.retry_delay)
            else:
                record.error = outcome.error
                self._finalize(record, state)

    # --------------------------------------------------------------------------------------- retries

    def _retry_policy(self, name: str) -> RetryPolicy:
        task = self.registry.get(name)
        if task is not None:
            o = task.options
            return RetryPolicy(o.retries, o.retry_backoff, o.retry_backoff_max, frozenset(o.retry_on_names))
        definition = self.dispatcher.fleet.definition(name) if self.dispatcher is not None else None
        if definition is not None:
            return RetryPolicy(
                definition.retries,
                definition.retry_backoff,
                definition.retry_backoff_max or DEFAULT_RETRY_BACKOFF_MAX,
                frozenset(definition.retry_on),
            )
        return RetryPolicy(0, 0.0, DEFAULT_RETRY_BACKOFF_MAX, frozenset())

    def submit_periodic(self, name: str, scheduled_for: float) -> str | None:
        """Queue one run of a periodic task (no arguments); its id, or None if refused (e.g. queue full)."""
        spec = task_pb2.TaskSpec(task_id=str(uuid.uuid4()), name=name, arguments=encode_arguments((), {}))
        spec.headers["periodic"] = f"{scheduled_for:.3f}"
        try:
            record, _ = self.submit(spec)
        except RequestRefused as refused:
            logger.warning("periodic run of %s refused: %s", name, refused.message)
            return None
        if self.journal is not None:
            self.journal.periodic_fired(name, scheduled_for)
        return record.task_id

    def is_active(self, name: str) -> bool:
        """True while some run of this task is unfinished (queued, scheduled, retrying or running)."""
        return self.active_by_name.get(name, 0) > 0

    def would_retry(self, record: TaskRecord, error: task_pb2.TaskError | None, retry_delay: float | None) -> bool:
        """True if this failed attempt gets another one (safe from slot threads: reads only)."""
        error_type = error.type if error is not None else ""
        if error_type in NOT_RETRIABLE:
            return False
        policy = self._retry_policy(record.name)
        retries = record.spec.retries if record.spec.HasField("retries") else policy.retries
        if record.attempts >= 1 + retries:
            return False
        if retry_delay is not None:
            return True  # the task raised Retry: asked for explicitly
        return not policy.retry_on or error_type in policy.retry_on

    def retry_or_fail(self, record: TaskRecord, error: task_pb2.TaskError | None, retry_delay: float | None) -> None:
        """End a failed attempt: RETRYING until its delay passes if the retry policy allows, else FAILURE.

        The delay is the one the task asked for with ``Retry(delay=...)``, else ``retry_backoff``
        doubled per attempt up to ``retry_backoff_max``, with +-20% jitter so that a burst of
        failures does not come back all at once.
        """
        record.error = error
        if not self.would_retry(record, error, retry_delay):
            self._finalize(record, FAILURE)
            return
        if retry_delay is None:
            policy = self._retry_policy(record.name)
            backoff = min(policy.backoff * 2 ** max(0, record.attempts - 1), policy.backoff_max)
            retry_delay = min(backoff * random.uniform(0.8, 1.2), policy.backoff_max)
        self.counters.retried += 1
        record.state = RETRYING
        due = self.clock() + retry_delay
        record.eta = due
        if self.journal is not None:
            self.journal.waiting(record)
        self.schedule.add(record, due)
        self._arm_schedule_timer()
        self.events.publish_task(record)

    # ---------------------------------------------------------------------------------------- finish

    def _fail(self, record: TaskRecord, error_type: str, message: str) -> None:
        record.error = task_pb2.TaskError(type=error_type, message=message)
        self._finalize(record, FAILURE)

    def _finalize(self, record: TaskRecord, state: int) -> None:
        now = self.clock()
        record.state = state
        record.held = False
        record.finished_at = now
        if self.journal is not None:
            self.journal.finished(record)
        if state == SUCCESS:
            self.counters.succeeded += 1
        elif state == FAILURE:
            self.counters.failed += 1
        else:
            self.counters.cancelled += 1
        second = int(now)
        buckets = self._finish_buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0, 0])
            if len(buckets) > HISTORY_WINDOW + 1:
                buckets.popleft()
        bucket = buckets[-1]
        bucket[1] += 1
        if state == SUCCESS:
            bucket[2] += 1
        elif state == FAILURE:
            bucket[3] += 1
        if self.active.pop(record.task_id, None) is not None:
            self.active_by_name[record.name] -= 1
            if self.active_by_name[record.name] <= 0:
                del self.active_by_name[record.name]
        self.cache.add(record, now)
        self.events.publish_task(record)
        record.direct_waiter = None
        waiters = self._waiters.pop(record.task_id, None)
        if waiters:
            for waiter in waiters:
                if waiter.done:
                    if waiter.timer is not None:
                        waiter.timer.cancel()  # answered by a slot thread already
                    continue
                waiter.remaining -= 1
                waiter.finished += 1
                if waiter.remaining <= 0:
                    if self._claim(waiter):
                        self._complete_wait(waiter)  # everything it waits for is final: answer now
                else:
                    self._gather(waiter)

    # ------------------------------------------------------------------------------------------ wait

    def _claim(self, waiter: Waiter) -> bool:
        """Mark a waiter answered; True for the one caller that may answer it."""
        with self.lock:
            if waiter.done:
                return False
            waiter.done = True
            return True

    def answer_directly(self, record: TaskRecord, state: int, outcome: Outcome) -> None:
        """Answer a one-task wait from the slot thread that just finished the task (slot threads only).

        Saves a hop through the event loop on the submit-and-wait path. The outcome is also on its
        way to the loop, which finalizes the record as usual; requests look at finished outcomes
        first, so a client that reads the task after this reply sees it final.
        """
        waiter = record.direct_waiter
        if waiter is None or waiter.direct is None or not self._claim(waiter):
            return
        try:
            waiter.direct(record, state, outcome)
        except Exception:
            logger.exception("direct reply failed for task %s", record.task_id)

    def wait(
        self, task_ids: list[str], timeout: float, callback: WaitCallback, *, direct: DirectCallback | None = None
    ) -> None:
        """Call back when any of the tasks is final (with all that are final then), or at timeout.

        ``direct``, for a wait on one task, may instead be called on the slot thread that ran it.
        """
        timeout = max(0.0, min(timeout, MAX_WAIT))
        finished, pending, missing = self._split(task_ids)
        if not pending or timeout == 0 or len(finished) >= waits_enough(len(task_ids)):
            callback(finished, pending, missing)
            return
        waiter = Waiter(task_ids, pending, callback, direct if len(pending) == 1 else None)
        for task_id in pending:
            self._waiters.setdefault(task_id, []).append(waiter)
        if waiter.direct is not None:
            record = self.active.get(pending[0])
            if record is not None and record.direct_waiter is None:
                record.direct_waiter = waiter
        waiter.timer = self._loop.call_later(timeout, self._expire_wait, waiter)
        if finished:
            waiter.finished = len(finished)
            self._gather(waiter)

    def _gather(self, waiter: Waiter) -> None:
        """Answer a partly finished wait a moment later with everything final by then.

        Tasks asked for together tend to finish together, and the asker re-asks for the rest, which
        costs a pass over every id still pending. So a wait answers GATHER_WINDOW after enough of its
        tasks finished (an eighth, or one of a few), and otherwise no later than PATIENCE_WINDOW after
        its first finish: a bulk wait takes a logarithmic number of rounds, not one per task.
        """
        gather = waiter.gather
        if waiter.finished >= waiter.enough:
            if gather is None or gather.when() > self._loop.time() + GATHER_WINDOW:
                if gather is not None:
                    gather.cancel()
                waiter.gather = self._loop.call_later(GATHER_WINDOW, self._expire_wait, waiter)
        elif gather is None:
            waiter.gather = self._loop.call_later(PATIENCE_WINDOW, self._expire_wait, waiter)

    def _split(self, task_ids: Iterable[str]) -> tuple[list[TaskRecord], list[str], list[str]]:
        finished: list[TaskRecord] = []
        pending: list[str] = []
        missing: list[str] = []
        active = self.active
        cached = self.cache.get
        now = self.clock()
        for task_id in task_ids:
            record = active.get(task_id) or cached(task_id, now)
            if record is None:
                missing.append(task_id)
            elif record.is_final:
                finished.append(record)
            else:
                pending.append(task_id)
        return finished, pending, missing

    def _expire_wait(self, waiter: Waiter) -> None:
        if self._claim(waiter):
            self._complete_wait(waiter)

    def _complete_wait(self, waiter: Waiter) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        if waiter.gather is not None:
            waiter.gather.cancel()
        for task_id in waiter.pending:
            listeners = self._waiters.get(task_id)
            if listeners is not None:
                try:
                    listeners.remove(waiter)
                except ValueError:
                    pass
                if not listeners:
                    del self._waiters[task_id]
        finished, pending, missing = self._split(waiter.ids)
        try:
            waiter.callback(finished, pending, missing)
        except Exception:
            logger.exception("wait callback failed")

    # ------------------------------------------------------------------------------- cancel / retry

    def cancel(self, task_id: str) -> tuple[bool, int]:
        """Cancel a task; returns (cancelled, previous state).

        Raises:
            RequestRefused: the task id is unknown.
        """
        record = self.find(task_id)
        if record is None:
            raise RequestRefused(error_pb2.ERROR_CODE_TASK_NOT_FOUND, f"task {task_id} is not known")
        with self.lock:
            previous = record.state
            shown = record.visible_state  # PENDING for a task held in a worker's prefetch queue
            if previous == PENDING:
                self.queue.discard(record)
                record.state = CANCELLED  # under the lock: no slot can take it any more
        if previous in (SCHEDULED, RETRYING):
            self.schedule.discard(record)
        elif previous == RUNNING:
            if record.worker != LOCAL_WORKER_ID and self.dispatcher is not None:
                # On a subworker: it stops the task (kills the child of a sync task, or drops it from
                # its prefetch queue) and reports CANCELLED.
                return self.dispatcher.cancel_running(record), shown
            # Async tasks are cancelled on the loop; their completion finalizes them as CANCELLED.
            task = self.registry.get(record.name)
            if task is None or not self.local.can_cancel_running(record, task):
                return False, previous  # a sync task on a slot thread cannot be interrupted safely
            return self.local.cancel_running(task_id), previous
        elif previous != PENDING:
            return False, previous
        record.error = task_pb2.TaskError(type="TaskCancelled", message="cancelled by request")
        self._finalize(record, CANCELLED)
        return True, previous

    def retry(self, task_id: str) -> TaskRecord:
        """Re-queue a FAILURE or CANCELLED task under its id with its original arguments and priority.

        Raises:
            RequestRefused: unknown id, or the task is not in FAILURE or CANCELLED.
        """
        record = self.find(task_id)
        if record is None:
            raise RequestRefused(error_pb2.ERROR_CODE_TASK_NOT_FOUND, f"task {task_id} is not known")
        if record.state not in (FAILURE, CANCELLED):
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST,
                f"only FAILURE or CANCELLED tasks can be retried (task is {task_pb2.TaskState.Name(record.state)})",  # type: ignore[arg-type]
            )
        if not self.accepting:
            raise RequestRefused(error_pb2.ERROR_CODE_SHUTTING_DOWN, "the control plane is shutting down")
        self.cache.remove(task_id)
        record.result = None
        record.error = None
        record.finished_at = 0.0
        record.queued_at = self.clock()
        self.active[task_id] = record
        self.active_by_name[record.name] += 1
        self.counters.retried += 1
        if self.journal is not None:
            self.journal.retried(record)
        self._enqueue(record)
        return record

    # --------------------------------------------------------------------------------- operator actions

    def purge(self, level: int) -> int:
        """Cancel every task waiting at one level (PENDING); returns how many. Running ones are untouched."""
        with self.lock:
            taken = self.queue.drain(level)
            for record in taken:
                record.state = CANCELLED  # under the lock: no slot can take it any more
        for record in taken:
            record.error = task_pb2.TaskError(type="TaskCancelled", message="purged by an operator")
            self._finalize(record, CANCELLED)
        self.events.publish(
            events_pb2.EVENT_KIND_QUEUE_CHANGED, detail=f"purged {len(taken)} {_level_name(level)} tasks"
        )
        logger.info("purged %d waiting %s tasks", len(taken), _level_name(level))
        return len(taken)

    def set_paused(self, level: int, paused: bool) -> bool:
        """Pause or resume dispatch of one level; returns the level's paused state afterwards.

        A paused level keeps accepting tasks; they wait (and count towards ``--max-queue``) until resumed.
        """
        with self.lock:
            changed = (level in self.queue.paused) != paused
            if paused:
                self.queue.paused.add(level)
            else:
                self.queue.paused.discard(level)
                self._work_ready.notify_all()
        if changed:
            if self.journal is not None:
                self.journal.paused(level, paused)
            self.events.publish(
                events_pb2.EVENT_KIND_QUEUE_CHANGED, detail=f"{_level_name(level)} {'paused' if paused else 'resumed'}"
            )
            logger.info("%s dispatch of %s tasks", "paused" if paused else "resumed", _level_name(level))
            if not paused and self.dispatcher is not None:
                self.dispatcher.schedule()
        return paused

    # ----------------------------------------------------------------------------------------- stats

    def throughput(self) -> float:
        """Tasks finished per second over the last minute (or since start, if shorter)."""
        now = self.clock()
        oldest = int(now - THROUGHPUT_WINDOW)
        finished = sum(bucket[1] for bucket in self._finish_buckets if bucket[0] > oldest)
        window = min(THROUGHPUT_WINDOW, max(now - self.started_at, 1e-9))
        return finished / window

    def history(self, seconds: int = HISTORY_WINDOW) -> list[tuple[int, int, int]]:
        """(second, succeeded, failed) for each of the last ``seconds`` whole seconds, oldest first."""
        now = int(self.clock())
        counts = {bucket[0]: (bucket[2], bucket[3]) for bucket in self._finish_buckets}
        return [(second, *counts.get(second, (0, 0))) for second in range(now - seconds + 1, now + 1)]

    def _expire_results(self) -> None:
        self.cache.expire(self.clock())
        self._expiry_timer = self._loop.call_later(min(60.0, self.cache.ttl), self._expire_results)

    # -------------------------------------------------------------------------------------- shutdown

    def stop_accepting(self) -> None:
        """Refuse new submissions from now on."""
        self.accepting = False

    async def drain(self, timeout: float) -> bool:
        """Wait for running tasks to finish, here and on subworkers, at most timeout seconds; True if all did.

        Remote ones count too: a task a worker still runs when this process exits would be re-run
        (or failed) by the next instance although it completes.
        """
        with self.lock:
            self.queue.paused.update(LEVELS)  # start nothing new
            if self.running:
                self._drained.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._drained.wait()
                while self.running_total:
                    await asyncio.sleep(DRAIN_POLL)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop timers and the local executor."""
        self._expiry_timer.cancel()
        if self._schedule_timer is not None:
            self._schedule_timer.cancel()
        for waiters in self._waiters.values():
            for waiter in waiters:
                for timer in (waiter.timer, waiter.gather):
                    if timer is not None:
                        timer.cancel()
        self._waiters.clear()
        self.events.close()
        with self.lock:
            self._slots_stopping = True
            self._work_ready.notify_all()
        self.local.close()


def _level_name(level: int) -> str:
    return task_pb2.Priority.Name(level).removeprefix("PRIORITY_").lower()  # type: ignore[arg-type]


def waits_enough(count: int) -> int:
    """How many of ``count`` asked-for tasks must be final for a wait to answer before all are."""
    return max(1, count // ENOUGH_DIVISOR)
