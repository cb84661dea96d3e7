"""The control plane's state machine: accept, queue, schedule, dispatch, finish, cancel, retry and wait.

Everything here runs on the event loop's thread except :meth:`Coordinator.take_local`, which the
local executor's slot threads call to take their next task. The priority queue, the
PENDING -> RUNNING/CANCELLED transitions and what a slot reads to choose (the fleet's workers and
their leases: is a subworker free for this task?) are therefore guarded by one lock
(``self.lock``); other state is changed by the loop only, except the cache of resolved task
policies, which a slot may fill (after the lock) and the loop clears when the fleet changes. Sockets live in ``server``; envelope translation lives in
``api``; waits in ``waits``; the finish history in ``history``; which options apply to a task in
``fastworker.worker.policy``; subworkers behind the ``remote.RemoteExecution`` seam. This module
only speaks records.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from fastworker.client.limits import UNSET, Rate, Unset
from fastworker.client.task import TaskRegistry
from fastworker.controlplane.adoption import OrphanRun
from fastworker.controlplane.duetimer import DueTimer
from fastworker.controlplane.events import EventBus
from fastworker.controlplane.expiry import ExpiryWatch
from fastworker.controlplane.flow import NO_LIMITS, Gate, GatedQueue, Limits
from fastworker.controlplane.history import FinishHistory
from fastworker.controlplane.local import LocalExecutor, LocalRun
from fastworker.controlplane.metrics import TaskMetrics
from fastworker.controlplane.periodic import SkipReason
from fastworker.controlplane.queue import LEVELS, Schedule, level_name
from fastworker.controlplane.records import (
    CANCELLED,
    FAILURE,
    LOCAL_WORKER_ID,
    PENDING,
    RETRYING,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    ResultCache,
    TaskRecord,
)
from fastworker.controlplane.waits import WaitCallback, Waits
from fastworker.controlplane.workflows import (
    MAX_DEPENDENCIES,
    TaskGraph,
    Workflow,
    dependency_error,
    unreleased_retry_refusal,
    workflow_from_steps,
)
from fastworker.protocol.errors import PayloadError
from fastworker.protocol.ids import shown, shown_id, task_id_problem
from fastworker.protocol.payload import decode_arguments, decode_value, encode_arguments
from fastworker.protocol.queues import DEFAULT_QUEUE, QueueNameError, check_queue_name
from fastworker.protocol.v1 import error_pb2, events_pb2, task_pb2
from fastworker.worker.executor import Outcome
from fastworker.worker.policy import TaskPolicy, definition_policy, effective_policy, options_policy, spec_problem

if TYPE_CHECKING:
    from fastworker.controlplane.journal import Journal, Recovered
    from fastworker.controlplane.remote import RemoteExecution

logger = logging.getLogger(__name__)

#: Seconds between checks for subworkers' running tasks while draining (shutdown only).
DRAIN_POLL = 0.05
#: How often a slot thread gives up the GIL waiting for the coordinator's lock before it blocks on it
#: (see :meth:`Coordinator._lock_for_slot`).
SLOT_LOCK_YIELDS = 50
#: Seconds a task waits in a served queue that no serving process defines it for before that is logged.
UNSERVABLE_AFTER = 10.0
#: Seconds before the same queue and task name are logged again.
UNSERVABLE_LOG_EVERY = 600.0


def final_state(outcome: Outcome, cancelled: bool) -> int:
    """The state a local execution ends in."""
    if cancelled:
        return CANCELLED
    return SUCCESS if outcome.succeeded else FAILURE


class RequestRefused(Exception):
    """A request the coordinator will not carry out; ``code`` is the wire error code."""

    def __init__(self, code: error_pb2.ErrorCode.ValueType, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: Most named queues :meth:`Coordinator.named_queues` lists: every served one, then waiting ones by name.
MAX_LISTED_QUEUES = 1000


class NamedQueueLevel(NamedTuple):
    """One priority level of one named queue, as operators see it (``fastworker queues``, /metrics)."""

    queue: str
    level: int
    depth: int
    oldest_age: float
    paused: bool
    #: Subworkers serving the queue, plus one when this process's own slots do.
    servers: int


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
    #: Subworkers dropped: heartbeats stopped, connection dropped, or replaced by a new process of the id.
    workers_lost: int = 0


class Coordinator:
    """Owns every task record and decides what runs next."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        registry: TaskRegistry,
        *,
        local_concurrency: int,
        local_pool: str = "threads",
        local_queues: Collection[str] = (DEFAULT_QUEUE,),
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
        #: Waiting tasks: the priority queue, with a flow-control gate in front of each limited name.
        self.queue = GatedQueue()
        self.schedule = Schedule()
        #: When each (queue, task name) that nobody serving the queue defines was last logged.
        self._unservable_logged: dict[tuple[str, str], float] = {}
        self.counters = Counters()
        #: Per task name totals and time histograms, for /metrics.
        self.metrics = TaskMetrics()
        #: Every state change, for the dashboard, the CLI and clients that watch tasks.
        self.events = EventBus()
        self.accepting = True
        #: The named queues this process's own slots take tasks from (``--queues``).
        self.local_queues = frozenset(local_queues)
        #: Task names some registered subworker runs (kept current by the dispatcher).
        self.remote_task_names: frozenset[str] = frozenset()
        self.dispatcher: RemoteExecution | None = None
        #: Tasks a journal replay found running on subworkers, with what it knows of each run, for the
        #: dispatcher to wait on (``fastworker.controlplane.adoption``); it takes them when it attaches.
        self.orphans: list[tuple[TaskRecord, OrphanRun]] = []
        #: Uniqueness keys held by live tasks submitted alone: key -> (record, held until), see ``_unique_key``.
        self._unique_keys: dict[str, tuple[TaskRecord, float]] = {}
        #: The same for workflow steps, apart: a step answers no other submission (its fate is its
        #: workflow's), so a plain submission of its key is queued as a task of its own.
        self._step_unique_keys: dict[str, tuple[TaskRecord, float]] = {}
        #: Each task name's policy from its definition (rule 2 of ``policy``); cleared when the fleet changes.
        self._defined_policies: dict[str, TaskPolicy] = {}
        #: Limits an operator set at run time, per name: the fields given (None: no limit), see ``set_limits``.
        self._limit_overrides: dict[str, Limits] = {}
        #: Tasks waiting for others (``depends_on``) and the workflows made of them.
        self.graph = TaskGraph()
        #: Final tasks whose dependants are being settled (a worklist: a chain of failures is not a recursion).
        self._settling: deque[TaskRecord] = deque()
        #: Accepted tasks whose dependencies were all final already, settled once the submission is in.
        self._settle_after_accept: list[TaskRecord] = []
        self.allow_pickle = allow_pickle
        self.lock = threading.Lock()
        self._work_ready = threading.Condition(self.lock)
        self._slots_stopping = False
        #: Local runs started (slot threads, under the lock) and ended (the loop only): apart, so
        #: that the loop's per-outcome bookkeeping takes no lock the slots contend for.
        self._local_started = 0
        self._local_ended = 0
        #: Ids of local runs whose start the event stream was told (their end must not tell it twice).
        self._running_told: set[str] = set()
        #: Local sync tasks ended CANCELLED while their thread was still inside a call (see
        #: :meth:`abandon_local_run`), until that run's own outcome arrives (and is dropped).
        self._abandoned: set[str] = set()
        #: The flow-control gates whose place such a run still holds, by task id.
        self._abandoned_gates: dict[str, Gate] = {}
        #: Local runs holding a place in the ``--local-concurrency`` bound (freed as each ends).
        self._local_places = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self.local = LocalExecutor(
            loop,
            local_concurrency,
            self.take_local,
            self._on_local_done,
            self._release_local_place,
            on_started=self._on_local_started,
            on_progress=self.report_progress,
            allow_pickle=allow_pickle,
            task_modules=task_modules,
            sys_path=sys_path,
            isolate_sync=local_pool == "processes",
        )
        self.local.start()
        self.waits = Waits(loop, self.active, self.cache.get, self.clock)
        self._schedule_timer = DueTimer(loop, self.clock, self._release_due)
        #: Tasks with an ``expires`` time: those still waiting then end at once (see ``expiry``).
        self.expiries = ExpiryWatch()
        #: Under ``--misfire-policy skip``, the misfire grace (else None): a periodic run released more than
        #: this past its slot (the control plane stalled, or restarted from its journal, while it waited
        #: for the slot) is a missed slot, and ends instead of running late (``_release_due``).
        self.periodic_missed_after: float | None = None
        self._waiting_expiry_timer = DueTimer(loop, self.clock, self._expire_waiting, late_by=0.001)
        self.history = FinishHistory(self.started_at)
        self._expiry_timer = loop.call_later(min(60.0, result_ttl), self._expire_results)
        self.refresh_limits()  # the limits of the tasks this process defines

    # ----------------------------------------------------------------------------------------- lookup

    def find(self, task_id: str) -> TaskRecord | None:
        """The record of a known task (active or in the result cache), or None."""
        record = self.active.get(task_id)
        if record is not None:
            return record
        return self.cache.get(task_id, self.clock())

    def find_quietly(self, task_id: str) -> TaskRecord | None:
        """Like find, for de-duplication: does not count as a cache lookup."""
        record = self.active.get(task_id)
        if record is None and task_id in self.cache:  # a new id (the common case) costs two lookups
            record = self.cache.peek(task_id, self.clock())
        return record

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
                # A copy without traceback or context: those hold this frame, whose ``specs`` hold the
                # whole request, in a cycle only the garbage collector frees (a flood of refusals
                # held ~100 MB of requests between collections).
                outcomes.append(RequestRefused(refused.code, refused.message))
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
        if self._settle_after_accept:
            settle, self._settle_after_accept = self._settle_after_accept, []
            for record in settle:
                self._dependencies_done(record)
        return outcomes

    # ----------------------------------------------------------------------------------------- policy

    def defined_policy(self, name: str) -> TaskPolicy:
        """A task name's policy from its definition: this process's registry, else the fleet's (see ``policy``)."""
        # The dict as it is now: a fleet change replaces it, so a policy a slot thread resolved from
        # the fleet before the change lands in the dropped dict, never in the new one.
        known = self._defined_policies
        policy = known.get(name)
        if policy is None:
            task = self.registry.get(name)
            if task is not None:
                policy = options_policy(task.options)
            else:
                fleet = self.dispatcher.fleet if self.dispatcher is not None else None
                policy = definition_policy(fleet.definition(name) if fleet is not None else None)
                if fleet is None or name not in self.remote_task_names:
                    return policy  # nobody defines it (yet): not worth remembering
            known[name] = policy
        return policy

    def policy_for(self, record: TaskRecord) -> TaskPolicy:
        """The effective policy of one task: its submission's values, else its definition's (see ``policy``)."""
        return effective_policy(record.spec, self.defined_policy(record.name))

    def fleet_changed(self, task_names: frozenset[str]) -> None:
        """The subworkers' task names changed: forget definitions resolved from the fleet."""
        self.remote_task_names = task_names
        self._defined_policies = {}  # replaced, not cleared: see defined_policy
        self.refresh_limits()

    # ---------------------------------------------------------------------------------- flow control

    def defined_limits(self, name: str) -> Limits:
        """A name's limits from its definition (``@task(rate_limit=..., max_concurrency=...)``)."""
        policy = self.defined_policy(name)
        if not policy.rate_limit and not policy.max_concurrency:
            return NO_LIMITS
        return Limits(Rate.parse(policy.rate_limit) if policy.rate_limit else None, policy.max_concurrency or None)

    def refresh_limits(self) -> None:
        """Apply every known name's limits: an operator's run-time values, else its definition's."""
        names = set(self.registry.names()) | self.remote_task_names | self._limit_overrides.keys()
        names |= self.queue.gates.keys()
        for name in sorted(names):
            self._apply_limits(name)

    def _apply_limits(self, name: str) -> Gate | None:
        override = self._limit_overrides.get(name)
        try:
            limits = override if override is not None else self.defined_limits(name)
        except ValueError as exc:  # a subworker sent a malformed rate: its definition's limit is ignored, loudly
            logger.warning("ignoring the limits of task %r: %s", name, exc)
            limits = NO_LIMITS
        gate = self.queue.gates.get(name)
        if gate is not None and gate.limits == limits and gate.overridden == (override is not None):
            return gate
        with self.lock:
            # Prefetched tasks (held) have not started: they take a place only if and when they do.
            running = (r for r in self.active.values() if r.name == name and r.state == RUNNING and not r.held)
            gate = self.queue.set_limits(name, limits, running, overridden=override is not None)
            self._work_ready.notify_all()
        if self.dispatcher is not None:
            self.dispatcher.schedule()
        return gate

    def set_limits(
        self,
        name: str,
        rate: Rate | None | Unset = UNSET,
        max_concurrency: int | None | Unset = UNSET,
        *,
        clear: bool = False,
    ) -> Gate | None:
        """Change a name's limits at run time (a value not given stays as it is); ``clear``: back to its definition.

        Takes effect at once: tasks waiting for a looser limit start in this loop turn.

        Raises:
            RequestRefused: nobody defines the name.
        """
        if name not in self.registry and name not in self.remote_task_names and name not in self._limit_overrides:
            raise RequestRefused(error_pb2.ERROR_CODE_UNKNOWN_TASK, f"unknown task {shown(name)}")
        if clear:
            self._limit_overrides.pop(name, None)
            if self.journal is not None:
                self.journal.limits(name, "", 0, cleared=True)
        if not isinstance(rate, Unset) or not isinstance(max_concurrency, Unset):
            if clear:  # the values not given come from the definition again
                current = self._definition_limits_or_none(name)
            else:
                current = self.queue.gates[name].limits if name in self.queue.gates else NO_LIMITS
            override = self._limit_overrides[name] = Limits(
                current.rate if isinstance(rate, Unset) else rate,
                current.max_concurrency if isinstance(max_concurrency, Unset) else max_concurrency,
            )
            if self.journal is not None:
                self.journal.limits(
                    name, override.rate.text if override.rate else "", override.max_concurrency or 0, cleared=False
                )
        gate = self._apply_limits(name)
        limits = gate.limits if gate is not None else NO_LIMITS
        logger.info(
            "limits of %s: rate %s, concurrency %s%s",
            name,
            limits.rate.text if limits.rate else "none",
            limits.max_concurrency or "none",
            "" if name in self._limit_overrides else " (its definition's)",
        )
        self.events.publish(events_pb2.EVENT_KIND_QUEUE_CHANGED, detail=f"limits of {name} changed")
        return gate

    def _definition_limits_or_none(self, name: str) -> Limits:
        try:
            return self.defined_limits(name)
        except ValueError:
            return NO_LIMITS

    def limits_overridden(self, name: str) -> bool:
        """True while an operator's run-time limits replace the definition's for ``name``."""
        return name in self._limit_overrides

    def overridden_limits(self) -> set[str]:
        """The names whose limits an operator set at run time."""
        return set(self._limit_overrides)

    def _release_gate(self, record: TaskRecord) -> None:
        """A limited task left RUNNING: free its place, and let what waits at its gate start."""
        with self.lock:
            waiting = self.queue.release(record)
            if waiting:
                self._work_ready.notify_all()
        if waiting and self.dispatcher is not None:
            self.dispatcher.schedule()

    @property
    def running(self) -> int:
        """Tasks running now on the control plane's own slots (and on its loop)."""
        return self._local_started - self._local_ended

    @property
    def running_total(self) -> int:
        """Tasks running now, locally and on subworkers (those waiting for their worker to adopt them too)."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return self.running
        remote = sum(1 for w in dispatcher.fleet for r in w.leases.values() if not r.held)
        return self.running + remote + dispatcher.awaiting_adoption

    def named_queues(self, now: float) -> list[NamedQueueLevel]:
        """Each named queue's levels: "default", the other served queues by name, then unserved ones tasks wait in.

        ``servers`` counts the subworkers serving the queue, plus one for this process's own slots:
        tasks of a queue nobody serves wait (PENDING) until a worker that serves it connects.
        """
        local = self.local_queues if self.local.concurrency > 0 else frozenset()
        servers = Counter(local)  # one pass over the fleet, however many queues are listed
        if self.dispatcher is not None:
            for worker in self.dispatcher.fleet:
                servers.update(worker.queues)
        served = servers.keys() | {DEFAULT_QUEUE}  # "default" always: it is where tasks go
        # Queue names come from submissions: past MAX_LISTED_QUEUES, the unserved ones are left out.
        waiting = sorted(self.queue.queue_names() - served)[: max(0, MAX_LISTED_QUEUES - len(served))]
        ordered = sorted(served, key=lambda name: (name != DEFAULT_QUEUE, name)) + waiting
        queue = self.queue
        levels: list[NamedQueueLevel] = []
        for name in ordered:
            count = servers[name]
            for level in LEVELS:
                levels.append(
                    NamedQueueLevel(
                        name,
                        level,
                        queue.queue_depth(name, level),
                        queue.oldest_age(level, now, name),
                        level in queue.paused,
                        count,
                    )
                )
        return levels

    def warn_unservable(self, now: float) -> None:
        """Log the tasks that wait in a queue some process serves, though none of those defines them.

        Such a task waits for ever, while ``queues`` counts servers for its queue (a worker started
        with ``--queues reports`` but without the module that defines the task). Checked from the
        oldest waiting task of each queue and level once it waited UNSERVABLE_AFTER seconds; logged
        once per queue and name every UNSERVABLE_LOG_EVERY seconds.
        """
        workers = list(self.dispatcher.fleet) if self.dispatcher is not None else []
        local_queues = self.local_queues if self.local.concurrency > 0 else frozenset()
        for record in self.queue.heads():
            if now - record.queued_at < UNSERVABLE_AFTER:
                continue
            queue, name = record.queue, record.name
            servers = [w for w in workers if queue in w.queues]
            local = queue in local_queues
            if not servers and not local:
                continue  # nobody serves the queue: `queues` shows that (servers 0)
            if (local and name in self.registry) or any(name in w.task_names for w in servers):
                continue
            key = (queue, name)
            if now - self._unservable_logged.get(key, float("-inf")) < UNSERVABLE_LOG_EVERY:
                continue
            self._unservable_logged[key] = now
            serving = [w.worker_id for w in servers] + (["this control plane's slots"] if local else [])
            logger.warning(
                "tasks %r wait in queue %r, which %s serve(s), but none of them defines %r: they wait until a "
                "process that defines it serves that queue (start a worker with its module and --queues %s)",
                name,
                queue,
                ", ".join(serving),
                name,
                queue,
            )

    def restore(self, recovered: Recovered) -> None:
        """Take in the tasks a journal replay recovered (at start, before serving; nothing is journaled again).

        Unfinished tasks are queued (in journal order: the ones that were running come first) or
        scheduled, or (running on a subworker) kept in :attr:`orphans` for the dispatcher; finished
        ones go to the result cache; paused levels stay paused.
        """
        now = self.clock()
        queued: list[TaskRecord] = []
        finished: list[TaskRecord] = []
        waiting: list[TaskRecord] = []
        for record in recovered.records:
            if record.is_final:
                finished.append(record)
                continue
            self.active[record.task_id] = record
            self.active_by_name[record.name] += 1
            self.counters.submitted += 1  # this process's tasks now: counted as the ones it finishes are
            self.metrics.submitted(record.name)  # in /metrics too, or its per-name ratios count them unsubmitted
            if record.expires:
                self._watch_expiry(record)
            self._rehold_unique_key(record, record.queued_at)
            if record.state == PENDING:
                queued.append(record)
            elif record.state == RUNNING:  # on a subworker: the dispatcher waits for it to adopt it
                self.orphans.append((record, recovered.orphans.get(record.task_id, OrphanRun(0, ""))))
            elif record.spec.HasField("dependencies") and not record.spec.dependencies_met:
                waiting.append(record)
            else:
                self.schedule.add(record, self._look_at(record, record.eta))
        for task_id in recovered.rerun:  # ran when the last process stopped, and runs again: a retry
            self.counters.retried += 1
            self.metrics.retried(self.active[task_id].name)
        lost = set(recovered.lost)
        for record in sorted(finished, key=lambda r: r.finished_at):
            if record.task_id in lost:
                # Failed by this replay (it was running when the last process stopped): this process's
                # failure to count, or stats and /metrics would never show that the tasks were lost.
                self.counters.submitted += 1
                self.counters.failed += 1
                self.metrics.submitted(record.name)
                self.metrics.failed(record.name, record.error.type if record.error is not None else "")
                self.history.record(now, False, True)
            # The TTL journaled with the result; else (an older journal, ControlPlaneLost) its definition's here.
            result_ttl = recovered.result_ttls.get(record.task_id)
            if result_ttl is None:
                result_ttl = self.defined_policy(record.name).result_ttl
            self.cache.add(record, now, result_ttl)
        self.graph.rebuild_workflows(recovered.records)
        for record in waiting:
            dependencies = [self.find_quietly(task_id) for task_id in record.spec.dependencies.task_ids]
            if any(dependency is None for dependency in dependencies) or not self.graph.hold(
                record, [d for d in dependencies if d is not None]
            ):
                self._settle_after_accept.append(record)
        for name, (rate, concurrency) in recovered.limits.items():
            try:
                self._limit_overrides[name] = Limits(Rate.parse(rate) if rate else None, concurrency or None)
            except ValueError as exc:
                logger.warning("ignoring the journaled limits of task %r: %s", name, exc)
        self.refresh_limits()
        for record in recovered.records:
            record.compact()  # read above; kept encoded from here on
        with self.lock:
            for record, _run in self.orphans:  # running on subworkers: they hold places under their limits
                self.queue.count_running(record)
            self.queue.paused.update(recovered.paused)
            for record in queued:
                self.queue.push(record)
            self._work_ready.notify(len(queued))
        self._arm_schedule_timer()
        if self.dispatcher is not None:
            self.dispatcher.schedule()
        settle, self._settle_after_accept = self._settle_after_accept, []
        for record in settle:
            self._dependencies_done(record)

    def attach_dispatcher(self, dispatcher: RemoteExecution) -> None:
        """Let subworkers take tasks too (see ``dispatcher``); local slots then run only what no free worker can."""
        self.dispatcher = dispatcher

    def _runnable_locally(self, record: TaskRecord) -> bool:
        if record.name not in self.registry:
            return False
        dispatcher = self.dispatcher
        return dispatcher is None or not dispatcher.fleet.has_free_slot_for(record)

    def wake_slots(self) -> None:
        """Let idle local slots look at the queue again (e.g. workers just filled up)."""
        with self.lock:
            if self.queue.startable():
                self._work_ready.notify_all()

    def requeue_front(self, record: TaskRecord, *, ran: bool) -> None:
        """Put a task taken back from a worker at the front of its level, to run again next.

        ``ran``: an attempt of it ran (or may have), so this is a retry and counted as one; a task
        that never started there (prefetched, handed back, never received) just goes back.
        """
        with self.lock:
            record.state = PENDING
            record.held = False
            record.worker = ""
            record.progress = None  # the next attempt starts fresh
            record.ready_at = self.clock()
            self.queue.release(record)
            if self.journal is not None:
                self.journal.waiting(record)
            self.queue.push_front(record)
            self._work_ready.notify()
        if ran:
            self.counters.retried += 1
            self.metrics.retried(record.name)
        self.events.publish_task(record)
        if self.dispatcher is not None:
            self.dispatcher.schedule()

    def mark_started(self, record: TaskRecord, now: float) -> None:
        """An attempt starts running now (call under ``lock``): its start time, counted for the metrics."""
        record.started_at = now
        self.metrics.started(record.name, now - record.ready_at)

    def end(self, record: TaskRecord, state: int, error_type: str, message: str) -> None:
        """End a task with a system error: FAILURE (``WorkerLost``, ``UnknownTask``) or CANCELLED (cancelled, expired).

        The one way a task ends without an outcome of its own.
        """
        record.error = task_pb2.TaskError(type=error_type, message=message)
        self._finalize(record, state)

    def finish_remote(self, record: TaskRecord, state: int) -> None:
        """End a task a subworker reported (result or error already set on the record)."""
        self._finalize(record, state)

    def _accept(self, spec: task_pb2.TaskSpec, not_yet_queued: int) -> tuple[TaskRecord, bool]:
        """Validate one spec and create its record: PENDING (for the caller to queue) or SCHEDULED."""
        task_id = spec.task_id
        existing = self.find_quietly(task_id)
        if existing is not None:
            return existing, True
        if not self.accepting:
            raise RequestRefused(error_pb2.ERROR_CODE_SHUTTING_DOWN, "the control plane is shutting down")
        if (problem := task_id_problem(task_id)) is not None:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, problem)
        name = spec.name  # read once: each read of a string field makes a new str
        if self.registry.get(name) is None and name not in self.remote_task_names:
            raise RequestRefused(error_pb2.ERROR_CODE_UNKNOWN_TASK, f"unknown task {shown(name)}")
        problem = spec_problem(spec)
        if problem is not None:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, problem)
        # HasField, not spec.dependencies.task_ids: reading an absent repeated field makes (and keeps) an empty one.
        dependencies = self._dependencies(spec) if spec.HasField("dependencies") and not spec.dependencies_met else None
        policy = self._defined_policies.get(name) or self.defined_policy(name)  # inline: every task
        unique_key = self._unique_key(spec, policy) if spec.unique_key or policy.unique else ""
        if unique_key and dependencies is not None and (problem := _piped_unique_problem(spec)) is not None:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, problem)
        step = bool(unique_key and spec.workflow_id)  # a workflow step: its key is held apart
        if unique_key:
            holder = self._unique_holder(unique_key, step=step)
            if holder is not None:
                return holder, True  # a live task holds the key: its id answers this submission
        if self.max_queue and self.waiting_count() + not_yet_queued >= self.max_queue:
            raise self._queue_full(1, not_yet_queued)
        priority = spec.priority or policy.priority
        if priority not in LEVELS:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, f"unknown priority {spec.priority}")
        queue = spec.queue  # read once: each read of a string field makes a new str
        if queue:
            try:
                queue = sys.intern(check_queue_name(queue))
            except QueueNameError as exc:
                raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, str(exc)) from None
        now = self.clock()
        record = TaskRecord(spec, priority, now, queue=queue or policy.queue, task_id=task_id, name=name)
        if not queue and policy.queue != DEFAULT_QUEUE:
            # The task's own queue, written into the spec so that a journal replay and the task's info keep it.
            record.edit_spec().queue = policy.queue
        self.active[task_id] = record
        name = record.name  # the interned one
        self.active_by_name[name] += 1
        self.counters.submitted += 1
        self.metrics.submitted(name)
        if unique_key:
            self._hold_unique_key(record, unique_key, now, policy.unique_ttl, step=step)
        if dependencies is not None:
            record.state = SCHEDULED  # waits in the graph, neither queued nor scheduled
            if not self.graph.hold(record, dependencies):
                self._settle_after_accept.append(record)
        elif spec.eta > now:
            self._hold(record, spec.eta)
        if self.journal is not None:
            self.journal.accepted(record)
        if record.expires:
            self._watch_expiry(record)
        record.compact()  # waiting tasks keep their spec encoded: a parsed one costs 4x the memory
        return record, False

    def waiting_count(self) -> int:
        """Tasks waiting to start (queued, scheduled, retrying, or waiting for dependencies): what ``--max-queue`` bounds."""
        return len(self.queue) + len(self.schedule) + len(self.graph)

    @property
    def scheduled_count(self) -> int:
        """Tasks SCHEDULED or RETRYING: held until a time (eta, countdown, retry) or until their dependencies end."""
        return len(self.schedule) + len(self.graph)

    def _queue_full(self, adding: int, accepted_with_it: int = 0) -> RequestRefused:
        """The refusal of ``adding`` more waiting tasks (``accepted_with_it``: earlier ones of the same request)."""
        waiting = self.waiting_count()
        what = "a task" if adding == 1 else f"{adding} tasks"
        besides = f" (and {accepted_with_it} accepted with it)" if accepted_with_it else ""
        return RequestRefused(
            error_pb2.ERROR_CODE_QUEUE_FULL,
            f"queue is full: {waiting} tasks wait{besides}, --max-queue is {self.max_queue}, no room for {what};"
            " try again later",
        )

    # ------------------------------------------------------------------------------------ unique tasks

    @staticmethod
    def _unique_key(spec: task_pb2.TaskSpec, policy: TaskPolicy) -> str:
        """The submission's uniqueness key: its own, else one over name and arguments for a unique task, else ""."""
        if spec.unique_key:
            if len(spec.unique_key) > 200:
                raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, "unique_key must be at most 200 characters")
            return spec.unique_key
        if not policy.unique:
            return ""
        digest = hashlib.sha256(spec.arguments.SerializeToString(deterministic=True)).hexdigest()
        return f"{spec.name}\x00{digest}"

    def _unique_holds(self, step: bool) -> dict[str, tuple[TaskRecord, float]]:
        """The keys held by workflow steps (``step``), or by tasks submitted alone."""
        return self._step_unique_keys if step else self._unique_keys

    def _unique_holder(self, key: str, *, step: bool = False) -> TaskRecord | None:
        """The live task holding a uniqueness key within its TTL, or None (an expired hold is dropped).

        ``step``: among workflow steps; else among tasks submitted alone, the only ones that answer
        a plain submission (a step that waits for its workflow would hand it that workflow's fate).
        """
        holds = self._unique_holds(step)
        held = holds.get(key)
        if held is None:
            return None
        record, until = held
        if record.is_final or self.clock() >= until:
            del holds[key]
            return None
        return record

    def _any_unique_holder(self, key: str) -> TaskRecord | None:
        """The live task, submitted alone or a workflow step, holding a key: what refuses a workflow step."""
        return self._unique_holder(key) or self._unique_holder(key, step=True)

    def _hold_unique_key(self, record: TaskRecord, key: str, since: float, ttl: float, *, step: bool) -> None:
        record.unique_key = key
        self._unique_holds(step)[key] = (record, since + ttl)

    def _record_unique_key(self, record: TaskRecord) -> tuple[str, TaskPolicy]:
        """The uniqueness key a known task would hold (``""``: none), with its policy."""
        policy = self.defined_policy(record.name)
        try:
            return self._unique_key(record.spec, policy), policy
        except RequestRefused:
            return "", policy

    def _key_holder_other_than(self, record: TaskRecord) -> TaskRecord | None:
        """The live task other than ``record`` whose hold of ``record``'s key keeps ``record`` from holding it.

        The rule of a new submission: a workflow step yields to any holder, a task submitted alone
        only to another such task.
        """
        key, _ = self._record_unique_key(record)
        if not key:
            return None
        holder = self._unique_holder(key)
        if holder is None and record.spec.workflow_id:
            holder = self._unique_holder(key, step=True)
        return holder if holder is not record else None

    def _rehold_unique_key(self, record: TaskRecord, since: float) -> None:
        """A task live again (replayed, retried) takes its key back unless another live task of its kind holds it.

        Kinds apart, as on submission: a replay gives back both holds of a key that a workflow step
        and a task submitted alone held together, in whatever order it finds them.
        """
        key, policy = self._record_unique_key(record)
        step = bool(record.spec.workflow_id)
        if key and self._unique_holder(key, step=step) is None:
            self._hold_unique_key(record, key, since, policy.unique_ttl, step=step)

    def _release_unique_key(self, record: TaskRecord) -> None:
        for holds in (self._unique_keys, self._step_unique_keys):
            held = holds.get(record.unique_key)
            if held is not None and held[0] is record:
                del holds[record.unique_key]

    def _enqueue(self, record: TaskRecord) -> None:
        """Put a PENDING record in the queue and wake a free slot."""
        with self.lock:
            record.state = PENDING
            record.ready_at = self.clock()
            self.queue.push(record)
            self._work_ready.notify()
        self.events.publish_task(record)
        if self.dispatcher is not None:
            self.dispatcher.schedule()

    def _hold(self, record: TaskRecord, due: float) -> None:
        record.state = SCHEDULED
        record.eta = due
        self.schedule.add(record, self._look_at(record, due))
        self._arm_schedule_timer()

    @staticmethod
    def _look_at(record: TaskRecord, due: float) -> float:
        """When a held task needs the schedule's attention: when due, or when it expires if that comes first.

        A task that never started and expires before its countdown or ETA ends at its expiry, not at
        its due time (it counted against ``--max-queue`` and read SCHEDULED meanwhile).
        """
        expires = record.expires
        return expires if expires and not record.attempts and expires < due else due

    def _arm_schedule_timer(self) -> None:
        self._schedule_timer.arm(self.schedule.next_due())

    def _release_due(self) -> None:
        now = self.clock()
        for record in self.schedule.pop_due(now):
            if record.expired(now):
                self.expire(record)
                continue
            if self.periodic_missed_after is not None and record.attempts == 0 and self._missed_slot(record, now):
                continue
            record.eta = 0.0
            self._enqueue(record)
        self._arm_schedule_timer()

    def _missed_slot(self, record: TaskRecord, now: float) -> bool:
        """End a periodic run released too long after its slot (misfire policy skip); True if it was one."""
        slot_text = record.spec.headers.get("periodic")
        grace = self.periodic_missed_after
        if not slot_text or grace is None:
            return False
        try:
            slot = float(slot_text)
        except ValueError:
            return False
        if now - slot <= grace:
            return False
        record.error = task_pb2.TaskError(
            type="Expired",
            message=f"its periodic slot passed {now - slot:.1f} s before the control plane could queue it"
            " (--misfire-policy skip: a missed slot does not run)",
        )
        self.metrics.periodic_slots_skipped(record.spec.name, SkipReason.MISSED, 1)
        self._finalize(record, CANCELLED)
        return True

    def _watch_expiry(self, record: TaskRecord) -> None:
        self.expiries.add(record.task_id, record.expires, self.active)
        self._arm_waiting_expiry_timer()

    def _arm_waiting_expiry_timer(self) -> None:
        self._waiting_expiry_timer.arm(self.expiries.next_due())

    def _expire_waiting(self) -> None:
        """End the tasks whose expiry passed while they waited (queued, or for their dependencies)."""
        now = self.clock()
        for task_id in self.expiries.pop_due(now):
            record = self.active.get(task_id)
            if record is None or not record.expired(now):
                continue  # ended meanwhile, another task under a retried id, or started once (its retries run)
            with self.lock:
                queued = record.state == PENDING
                if queued:
                    self.queue.discard(record)
                    record.state = CANCELLED  # under the lock: no slot can take it any more
            if queued:
                self.expire(record)
            elif record.state == SCHEDULED and self.graph.is_waiting(record):
                self.graph.left(record)
                self.expire(record)
            elif record.state == RUNNING and record.held and self.dispatcher is not None:
                self.dispatcher.expire_unstarted(record)  # in a worker's prefetch queue: not started
            # SCHEDULED for an eta: the schedule ends it at its expiry (``_look_at``); started: too late.
        self._arm_waiting_expiry_timer()

    # --------------------------------------------------------------------------------------- dispatch

    def take_local(self, ended_one: bool = False) -> LocalRun | None:
        """Block until a task can start locally, mark it RUNNING and return it (slot threads only).

        At most ``local.concurrency`` local tasks run at once, on threads or (async) on the loop.
        ``ended_one``: the calling slot just ended a run on its thread, whose place is freed here.
        Returns None when the slots must stop.
        """
        bound = self.local.concurrency
        if not self.lock.acquire(False):  # the common case inline: the lock is free
            self._lock_for_slot()
        try:
            if ended_one:
                self._local_places -= 1
            while True:
                if self._slots_stopping:
                    return None
                if self._local_places >= bound:
                    self._work_ready.wait()
                    continue
                # Always filtered: between a journal's replay and the dispatcher's start, the queue
                # holds tasks that only subworkers define.
                record = self.queue.pop(self._runnable_locally, queues=self.local_queues)
                if record is not None and record.expires and record.expired(self.clock()):
                    # Final from here (under the lock: nobody else takes it), and whole before its
                    # state says so: a wait or a status may read it before the loop finishes it.
                    record.error = _expired_error()
                    record.finished_at = self.clock()
                    record.state = CANCELLED
                    self._loop.call_soon_threadsafe(self.expire, record)
                    continue
                if record is not None:
                    task = self.registry.get(record.name)
                    if task is None:  # registered locally at submit, so this cannot happen; fail loudly
                        record.state = RUNNING
                        self._loop.call_soon_threadsafe(
                            self.end, record, FAILURE, "UnknownTask", f"no local task {record.name!r}"
                        )
                        continue
                    record.state = RUNNING
                    record.attempts += 1
                    record.worker = LOCAL_WORKER_ID
                    record.started_at = now = self.clock()  # mark_started, inline: every task
                    self.metrics.started(record.name, now - record.ready_at)
                    self._local_started += 1
                    self._local_places += 1
                    self.counters.executed_locally += 1
                    if self.journal is not None:
                        self.journal.running(record)
                    break
                self._work_ready.wait(self.queue.retry_after())  # a limited name's next token, if one waits
        finally:
            self.lock.release()
        if self.journal is not None:
            # Start only once the start is written (with the task's acceptance before it): a crash
            # then never replays as queued a task that already ran, which would run it twice.
            self.journal.ensure_written()
        # policy_for, inline (every task), outside the lock: slots contend for it.
        defined = self._defined_policies.get(record.name) or self.defined_policy(record.name)
        return LocalRun(record, task, effective_policy(record.spec, defined))

    def _lock_for_slot(self) -> None:
        """Take ``lock`` on a slot thread without blocking on it while a thread that can run holds it.

        A thread blocked on a lock takes it the moment it is released, before it has the GIL back, and
        holds it while it waits for the GIL: every other slot that wants the lock blocks behind it, and
        from then on each task costs GIL hand-overs between threads (measured: 8 slots ran trivial
        tasks at half the rate of 1). Giving up the GIL until the holder has released the lock keeps
        the lock with threads that run; a holder that stays longer (the loop queueing a large batch)
        is waited for.
        """
        lock = self.lock
        if lock.acquire(False):
            return
        for _ in range(SLOT_LOCK_YIELDS):
            time.sleep(0)  # gives up the GIL, so that the holder can finish
            if lock.acquire(False):
                return
        lock.acquire()

    def expire(self, record: TaskRecord) -> None:
        """End a task that was not started before its ``expires`` time as CANCELLED (reason: expired)."""
        record.error = _expired_error()
        self._finalize(record, CANCELLED)

    def _release_local_place(self) -> None:
        """A run on the loop ended: free its place, and wake a slot that may wait for it."""
        with self.lock:
            self._local_places -= 1
            if self.queue.startable():
                self._work_ready.notify()

    def _on_local_started(self, record: TaskRecord, attempt: int) -> None:
        """A run on this process's slots is under way: the event stream sees it RUNNING, once (unless it ended)."""
        if (
            record.state == RUNNING
            and record.attempts == attempt
            and record.worker == LOCAL_WORKER_ID
            and record.task_id not in self._running_told
        ):
            self._running_told.add(record.task_id)
            self.events.publish_task(record)

    def _on_local_done(self, record: TaskRecord, outcome: Outcome, cancelled: bool) -> None:
        told = self._running_told
        running_told = bool(told) and record.task_id in told
        if running_told:
            told.discard(record.task_id)
        self._local_ended += 1
        if self._local_ended == self._local_started:
            self._drained.set()
        if self._abandoned and record.task_id in self._abandoned:
            self._abandoned.discard(record.task_id)  # the end of a run already ended as CANCELLED
            gate = self._abandoned_gates.pop(record.task_id, None)
            if gate is not None:
                record.gate = gate
                self._release_gate(record)
            return
        if record.state == RUNNING:
            if outcome.progress is not None:
                record.progress = outcome.progress.to_wire()  # its last value, with the outcome
            if not running_told:  # (a cancel that raced its start)
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

    def submit_periodic(self, name: str, scheduled_for: float) -> str | None:
        """Queue one run of a periodic task (no arguments) for its slot; its id, or None if refused (e.g. queue full).

        A slot still ahead (the scheduler submits runs a little early) makes the run SCHEDULED until then.
        """
        spec = task_pb2.TaskSpec(task_id=str(uuid.uuid4()), name=name, arguments=encode_arguments((), {}))
        spec.headers["periodic"] = f"{scheduled_for:.3f}"
        if scheduled_for > self.clock():
            spec.eta = scheduled_for
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

    def retry_or_fail(self, record: TaskRecord, error: task_pb2.TaskError | None, retry_delay: float | None) -> None:
        """End a failed attempt: RETRYING until its delay passes if the retry policy allows, else FAILURE.

        The delay is the one the task asked for with ``Retry(delay=...)``, else the policy's backoff.
        """
        record.error = error
        policy = self.policy_for(record)
        if not policy.allows_retry(
            record.attempts,
            error.type if error is not None else "",
            retry_delay is not None,
            error.base_types if error is not None else (),
        ):
            if error is not None:
                policy.final_retry_error(error)
            self._finalize(record, FAILURE)
            return
        self._attempt_ran(record, self.clock())
        self.counters.retried += 1
        self.metrics.retried(record.name)
        if record.gate is not None:
            self._release_gate(record)
        record.state = RETRYING
        record.progress = None  # the next attempt starts fresh
        due = self.clock() + policy.retry_delay(record.attempts, retry_delay)
        record.eta = due
        if self.journal is not None:
            self.journal.waiting(record)
        self.schedule.add(record, due)
        self._arm_schedule_timer()
        self.events.publish_task(record)

    # ---------------------------------------------------------------------------------------- finish

    def _finalize(self, record: TaskRecord, state: int) -> None:
        if state == SUCCESS:
            record.error = None  # an earlier attempt's error is no part of a success
        if record.gate is not None:
            self._release_gate(record)
        now = self.clock()
        if record.state == RUNNING and not record.held and record.started_at:  # _attempt_ran, inline: every task
            self.metrics.ran(record.name, now - record.started_at)
        record.state = state
        record.held = False
        record.finished_at = now
        policy = self._defined_policies.get(record.name) or self.defined_policy(record.name)  # inline: every task
        result_ttl = policy.result_ttl  # its own, kept with the result (0: --result-ttl)
        if self.journal is not None:
            self.journal.finished(record, result_ttl)
        # Waiting clients are answered first (their answers read the record alone): the rest is
        # bookkeeping, done while the answer is on its way.
        self.waits.task_finished(record)
        if state == SUCCESS:
            self.counters.succeeded += 1
            self.metrics.succeeded(record.name)
        elif state == FAILURE:
            self.counters.failed += 1
            self.metrics.failed(record.name, record.error.type if record.error is not None else "")
        else:
            self.counters.cancelled += 1
            self.metrics.cancelled(record.name)
        self.history.record(now, state == SUCCESS, state == FAILURE)
        if record.unique_key:
            self._release_unique_key(record)
        if self.active.pop(record.task_id, None) is not None:
            self.active_by_name[record.name] -= 1
            if self.active_by_name[record.name] <= 0:
                del self.active_by_name[record.name]
        self.cache.add(record, now, result_ttl)
        if self.graph.workflows and record.linked:  # a workflow's step: its state outlives its record
            self.graph.step_ended(self.graph.workflows.get(record.spec.workflow_id), record)
        record.compact()
        self.events.publish_task(record)
        if self.graph.dependants:
            self._settle_dependants(record)

    def _attempt_ran(self, record: TaskRecord, now: float) -> None:
        """Observe the runtime of the attempt ending now, if it was running (not queued, held or waiting)."""
        if record.state == RUNNING and not record.held and record.started_at:
            self.metrics.ran(record.name, now - record.started_at)

    def report_progress(self, task_id: str, attempt: int, progress: task_pb2.Progress) -> bool:
        """Keep a running attempt's latest progress and publish it; False for a task not running that attempt.

        Senders rate-limit progress (a few per second per task), so each one is published.
        """
        record = self.active.get(task_id)
        if record is None or record.state != RUNNING or record.held or record.attempts != attempt:
            return False
        record.progress = task_pb2.Progress()
        record.progress.CopyFrom(progress)  # a copy: the message it came in may be large
        self.events.publish_task(record)
        return True

    def wait(self, task_ids: list[str], timeout: float, callback: WaitCallback, *, all_final: bool = False) -> None:
        """Call back when any of the tasks is final (with all that are final then), or at timeout (see ``waits``)."""
        self.waits.wait(task_ids, timeout, callback, all_final=all_final)

    # ------------------------------------------------------------------------------- dependencies

    def _dependencies(self, spec: task_pb2.TaskSpec) -> list[TaskRecord]:
        """The records of the tasks a spec depends on.

        Raises:
            RequestRefused: too many, a duplicate, itself, or one the control plane does not know.
        """
        ids = spec.dependencies.task_ids
        if len(ids) > MAX_DEPENDENCIES:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, f"at most {MAX_DEPENDENCIES} dependencies")
        if len(set(ids)) != len(ids) or spec.task_id in ids:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, "depends_on must name other tasks, each once")
        records: list[TaskRecord] = []
        for task_id in ids:
            record = self.find_quietly(task_id)
            if record is None:
                raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, f"depends on unknown task {task_id!r}")
            records.append(record)
        if spec.dependencies.input == task_pb2.DEPENDENCY_INPUT_RESULT and len(records) != 1:
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST,
                "a task that takes its dependency's result depends on exactly one task",
            )
        return records

    def _settle_dependants(self, record: TaskRecord) -> None:
        """A task is final: fail the tasks that wait for it if it did not succeed, release those it was the last for."""
        self._settling.append(record)
        if len(self._settling) > 1:
            return  # an outer call is draining the worklist
        while self._settling:
            done = self._settling[0]
            for dependant, last in self.graph.finished(done):
                if dependant.is_final:
                    continue
                if done.state != SUCCESS:
                    self.graph.left(dependant)
                    self._fail_dependant(dependant, dependency_error(done, done.task_id))
                elif last:
                    self._dependencies_done(dependant)
            self._settling.popleft()

    def _dependencies_done(self, record: TaskRecord) -> None:
        """Every dependency of a waiting task is final: queue it with their results applied, or fail it."""
        if record.is_final or record.state != SCHEDULED:
            return
        spec = record.edit_spec()  # the dependencies' results may be passed into its arguments
        graph = self.graph
        ids, given = spec.dependencies.task_ids, spec.dependencies.input
        dependencies = [graph.kept(task_id) or self.find_quietly(task_id) for task_id in ids]
        graph.left(record)  # what was kept for it is read: let go of it
        for task_id, dependency in zip(ids, dependencies, strict=True):
            if dependency is None or dependency.state != SUCCESS:
                self._fail_dependant(record, dependency_error(dependency, task_id))
                return
        if given != task_pb2.DEPENDENCY_INPUT_NONE:
            try:
                values = [self._result_value(d) for d in dependencies if d is not None]
                args, kwargs = decode_arguments(spec.arguments, allow_pickle=self.allow_pickle)
                passed = values[0] if given == task_pb2.DEPENDENCY_INPUT_RESULT else values
                spec.arguments.CopyFrom(encode_arguments((passed, *args), kwargs, allow_pickle=self.allow_pickle))
            except (PayloadError, TypeError, ValueError) as exc:
                record.error = task_pb2.TaskError(
                    type="PayloadError", message=f"cannot pass the dependencies' results on: {exc}"
                )
                self._finalize(record, FAILURE)
                return
        spec.dependencies_met = True
        now = self.clock()
        if spec.eta > now:
            self._hold(record, spec.eta)
            if self.journal is not None:
                self.journal.accepted(record)  # written again, with its inputs
            self.events.publish_task(record)
            return
        record.state = PENDING
        if self.journal is not None:
            self.journal.accepted(record)
        self._enqueue(record)

    def _result_value(self, record: TaskRecord) -> Any:
        if record.result is None:
            raise ValueError(f"step {record.task_id} kept no result")
        return decode_value(record.result, allow_pickle=self.allow_pickle)

    def _fail_dependant(self, record: TaskRecord, error: task_pb2.TaskError) -> None:
        record.error = error
        self._finalize(record, FAILURE)

    # ----------------------------------------------------------------------------------- workflows

    def submit_workflow(self, workflow_id: str, specs: Sequence[task_pb2.TaskSpec]) -> tuple[list[str], bool]:
        """Accept every step of a workflow or none; returns (the step ids in order, duplicate).

        Idempotent by workflow id. Each step may depend on earlier steps and on known tasks. Every
        reason to refuse a step is checked before any is accepted, and the accepted steps enter the
        queue together (``submit_many``), so no step of a refused workflow can start.

        Raises:
            RequestRefused: a bad workflow (empty, too big, a step refused); nothing was queued.
        """
        known = self.graph.workflows.get(workflow_id)
        if known is not None:
            if _completes(known.step_ids, specs):
                return self._complete_workflow(known, specs), True
            return list(known.step_ids), True
        if not workflow_id or len(workflow_id) > 200:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, "workflow_id must be 1 to 200 characters")
        if not specs or len(specs) > MAX_DEPENDENCIES:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, f"a workflow has 1 to {MAX_DEPENDENCIES} steps")
        accepted = self._accept_steps(workflow_id, specs, 1)
        self.graph.add_workflow(workflow_from_steps(workflow_id, accepted, accepted[0].queued_at))
        return [record.task_id for record in accepted], False

    def _accept_steps(self, workflow_id: str, specs: Sequence[task_pb2.TaskSpec], first: int) -> list[TaskRecord]:
        """Check, number (from ``first``) and accept a workflow's steps, all or none; their records in order.

        Raises:
            RequestRefused: a step would be refused; nothing was queued.
        """
        self._check_workflow(specs)
        for index, spec in enumerate(specs, start=first):
            spec.workflow_id = workflow_id
            spec.workflow_step = index
        outcomes = self.submit_many(specs)
        accepted = [outcome[0] for outcome in outcomes if not isinstance(outcome, RequestRefused)]
        refused = next((outcome for outcome in outcomes if isinstance(outcome, RequestRefused)), None)
        if refused is not None:  # a check above missed it (a bug): end what was accepted, loudly
            logger.error("workflow %s: a step was refused after the checks: %s", workflow_id, refused.message)
            for record in reversed(accepted):
                if not record.is_final:
                    self.cancel(record.task_id)
            raise RequestRefused(refused.code, f"workflow refused: {refused.message}")
        return accepted

    def _complete_workflow(self, known: Workflow, specs: Sequence[task_pb2.TaskSpec]) -> list[str]:
        """Accept the steps a resend carries beyond those known: the rest of a workflow a crash cut short.

        The journal writes a large workflow's steps in several commits; a control plane that died
        between them comes back with its first steps only, and no reply went out for it. The
        client sends it again under the same workflow id and step ids: its later steps are taken
        now, checked as a new workflow's are, so the workflow is whole, not a fragment answered as if
        it were. Returns every step id.
        """
        workflow_id = known.workflow_id
        first = len(known.step_ids)
        accepted = self._accept_steps(workflow_id, specs[first:], first + 1)
        earlier = [self.find_quietly(task_id) for task_id in known.step_ids]
        steps = [record for record in earlier if record is not None] + accepted
        whole = workflow_from_steps(workflow_id, steps, known.created_at)
        # Every id, a step that left the result cache meanwhile included; and how its steps ended so far.
        whole.step_ids = list(known.step_ids) + [record.task_id for record in accepted]
        whole.ended_badly = known.ended_badly
        self.graph.add_workflow(whole)
        logger.warning(
            "workflow %s: completed from its resend with %d more steps (%d were accepted before a restart)",
            workflow_id,
            len(accepted),
            first,
        )
        return list(whole.step_ids)

    def _check_workflow(self, specs: Sequence[task_pb2.TaskSpec]) -> None:
        """Refuse a workflow, before any step is accepted, for anything that would refuse one of its steps."""
        if not self.accepting:
            raise RequestRefused(error_pb2.ERROR_CODE_SHUTTING_DOWN, "the control plane is shutting down")
        ids: set[str] = set()
        keys: set[str] = set()
        for index, spec in enumerate(specs, start=1):
            refusal = self._step_refusal(spec, ids, keys)
            if refusal is not None:
                code, message = refusal
                raise RequestRefused(code, f"workflow refused: step {index} ({spec.name!r}): {message}")
            ids.add(spec.task_id)
        if self.max_queue and self.waiting_count() + len(specs) > self.max_queue:
            raise self._queue_full(len(specs))

    def _step_refusal(
        self, spec: task_pb2.TaskSpec, earlier: set[str], earlier_keys: set[str]
    ) -> tuple[error_pb2.ErrorCode.ValueType, str] | None:
        """Why ``_accept`` would refuse (or answer with another task) this workflow step, or None.

        ``earlier_keys``: the uniqueness keys of the steps before it, to which this step's is added.
        """
        invalid = error_pb2.ERROR_CODE_INVALID_REQUEST
        if (problem := task_id_problem(spec.task_id)) is not None:
            return invalid, problem
        if spec.task_id in earlier or self.find_quietly(spec.task_id) is not None:
            return invalid, f"task id {spec.task_id!r} is already used"
        if spec.name not in self.registry and spec.name not in self.remote_task_names:
            return error_pb2.ERROR_CODE_UNKNOWN_TASK, f"unknown task {shown(spec.name)}"
        problem = spec_problem(spec)
        if problem is not None:
            return invalid, problem
        policy = self.defined_policy(spec.name)
        if (spec.priority or policy.priority) not in LEVELS:
            return invalid, f"unknown priority {spec.priority}"
        try:
            unique_key = self._unique_key(spec, policy)
        except RequestRefused as refused:
            return refused.code, refused.message
        if unique_key and (problem := _piped_unique_problem(spec)) is not None:
            return invalid, problem
        if unique_key and self._any_unique_holder(unique_key) is not None:
            return invalid, "a live task holds its uniqueness key (a workflow step cannot be answered by another task)"
        if unique_key and unique_key in earlier_keys:
            return (
                invalid,
                "an earlier step has the same uniqueness key (a workflow step cannot be answered by another)",
            )
        ids = spec.dependencies.task_ids if spec.HasField("dependencies") else ()
        if len(ids) > MAX_DEPENDENCIES or len(set(ids)) != len(ids) or spec.task_id in ids:
            return invalid, f"depends_on must name at most {MAX_DEPENDENCIES} other tasks, each once"
        for dependency in ids:
            if dependency not in earlier and self.find_quietly(dependency) is None:
                return invalid, f"depends on unknown task {dependency!r}"
        if spec.dependencies.input == task_pb2.DEPENDENCY_INPUT_RESULT and len(ids) != 1:
            return invalid, "a step that takes its dependency's result depends on exactly one task"
        if unique_key:
            earlier_keys.add(unique_key)
        return None

    def workflow(self, workflow_id: str) -> tuple[Workflow, list[TaskRecord | None]]:
        """A known workflow and its steps' records in step order (None for a step no longer known).

        Raises:
            RequestRefused: the workflow id is unknown.
        """
        workflow = self.graph.workflows.get(workflow_id)
        if workflow is None:
            raise RequestRefused(error_pb2.ERROR_CODE_TASK_NOT_FOUND, f"workflow {workflow_id} is not known")
        steps = [self.find(task_id) for task_id in workflow.step_ids]
        if not any(step is not None for step in steps):  # every step left the result cache: it is no longer known
            raise RequestRefused(
                error_pb2.ERROR_CODE_TASK_NOT_FOUND,
                f"workflow {workflow_id} is no longer known (its steps left the result cache)",
            )
        return workflow, steps

    def cancel_workflow(self, workflow_id: str) -> int:
        """Cancel a workflow's waiting and running steps, the last first (so dependants end CANCELLED); returns how many.

        Raises:
            RequestRefused: the workflow id is unknown.
        """
        workflow, steps = self.workflow(workflow_id)
        cancelled = 0
        for step in reversed(steps):
            if step is not None and not step.is_final:
                done, _ = self.cancel(step.task_id)
                cancelled += done
        return cancelled

    def stopping(self, task_ids: Iterable[str]) -> list[str]:
        """Of these tasks, the ones still running, here or on a subworker (a cancel of them is under way)."""
        return [
            task_id
            for task_id in task_ids
            if (record := self.active.get(task_id)) is not None and record.state == RUNNING
        ]

    def _all_known_ids(self) -> Iterator[str]:
        yield from self.active
        yield from (record.task_id for record in self.cache)

    # ------------------------------------------------------------------------------- cancel / retry

    def cancel(self, task_id: str) -> tuple[bool, int]:
        """Cancel a task; returns (cancelled, previous state).

        Raises:
            RequestRefused: the task id is unknown.
        """
        record = self.find(task_id)
        if record is None:
            raise RequestRefused(error_pb2.ERROR_CODE_TASK_NOT_FOUND, f"task {shown_id(task_id)} is not known")
        with self.lock:
            previous = record.state
            shown = record.visible_state  # PENDING for a task held in a worker's prefetch queue
            if previous == PENDING:
                self.queue.discard(record)
                record.state = CANCELLED  # under the lock: no slot can take it any more
        if previous in (SCHEDULED, RETRYING):
            if self.graph.is_waiting(record):
                self.graph.left(record)
            else:
                self.schedule.discard(record)
        elif previous == RUNNING:
            if record.worker != LOCAL_WORKER_ID and self.dispatcher is not None:
                # On a subworker: it stops the task (kills the child of a sync task, or drops it from
                # its prefetch queue) and reports CANCELLED.
                stopping, previous = self.dispatcher.cancel_running(record), shown
            else:
                # Stopped here (interrupted in its thread, or cancelled on the loop): its completion
                # finalizes it as CANCELLED.
                stopping = self.local.cancel_running(task_id)
            if stopping and record.unique_key:
                # A task being stopped answers no new submission of its key (it ends CANCELLED).
                self._release_unique_key(record)
            return stopping, previous
        elif previous != PENDING:
            return False, previous
        self.end(record, CANCELLED, "TaskCancelled", "cancelled by request")
        return True, previous

    def abandon_local_run(self, task_id: str) -> bool:
        """End as CANCELLED a local sync task that was interrupted but whose thread has not stopped yet.

        Its thread is inside one long call into C (``time.sleep(600)``, a socket read): the
        interrupt is raised when that call returns, so the rest of its code never runs, but the
        slot stays busy until then. The cancel ends the task now instead of leaving it RUNNING
        (a cancel that said False for a task that later ended CANCELLED told nobody anything);
        the run's own outcome is dropped when it arrives, and until then the id cannot be retried.
        False if the task is not such a run (it stopped, or it is not a sync run on this process).
        """
        record = self.active.get(task_id)
        if (
            record is None
            or record.state != RUNNING
            or record.worker != LOCAL_WORKER_ID
            or not self.local.interrupt_pending(task_id)
        ):
            return False
        self._abandoned.add(task_id)
        if record.gate is not None:
            # Its thread still runs: its place under the name's max_concurrency is given back only
            # when that run returns, or the next task of the name would run beside it.
            self._abandoned_gates[task_id] = record.gate
            record.gate = None
        self.end(
            record,
            CANCELLED,
            "TaskCancelled",
            "cancelled while running; its thread was inside a call that had not returned, after which none of its code runs",
        )
        return True

    def retry(self, task_id: str) -> TaskRecord:
        """Re-queue a FAILURE or CANCELLED task under its id with its original arguments and priority.

        Raises:
            RequestRefused: unknown id, or the task is not in FAILURE or CANCELLED.
        """
        record = self.find(task_id)
        if record is None:
            raise RequestRefused(error_pb2.ERROR_CODE_TASK_NOT_FOUND, f"task {shown_id(task_id)} is not known")
        if record.state not in (FAILURE, CANCELLED):
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST,
                f"only FAILURE or CANCELLED tasks can be retried (task is {task_pb2.TaskState.Name(record.state).removeprefix('TASK_STATE_')})",  # type: ignore[arg-type]
            )
        if self.active.get(task_id) is record:
            # Final but not finished yet (a slot marked it expired; the loop ends it next): a retry now
            # would queue a task that is about to be finalized, and leak its place in the queue.
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST, f"task {task_id} is ending; retry it once it ended"
            )
        if task_id in self._abandoned:
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST,
                f"task {task_id} was cancelled while its thread was inside a call that has not returned yet;"
                " retry it once that call returned",
            )
        if self.dispatcher is not None and self.dispatcher.runs_on_a_worker(record):
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST,
                f"task {task_id} was cancelled while worker {record.worker} had not confirmed the stop of its run;"
                " retry it once that worker reported the run or was lost",
            )
        if not self.accepting:
            raise RequestRefused(error_pb2.ERROR_CODE_SHUTTING_DOWN, "the control plane is shutting down")
        holder = self._key_holder_other_than(record)
        if holder is not None:
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST,
                f"live task {holder.task_id} holds task {task_id}'s uniqueness key: retry it once that one ended",
            )
        if self.max_queue and self.waiting_count() >= self.max_queue:
            raise self._queue_full(1)  # a retried task waits like a new one
        spec = record.spec
        unreleased = spec.HasField("dependencies") and not spec.dependencies_met
        if unreleased:
            self._check_dependencies_succeeded(record)
        if record.expires and record.expires <= self.clock():
            # An expiry passed already would end it again at once: a retry asks to run it, so that
            # expiry no longer applies (written with it, so that a replay does not bring it back).
            record.edit_spec().expires = 0.0
            record.expires = 0.0
        self.cache.remove(task_id)
        record.result = None
        record.error = None
        record.progress = None
        record.finished_at = 0.0
        record.queued_at = self.clock()
        self.active[task_id] = record
        self.active_by_name[record.name] += 1
        self._rehold_unique_key(record, record.queued_at)
        self.counters.retried += 1
        self.metrics.retried(record.name)  # as stats counts it: fastworker_tasks_retried_total agrees
        if unreleased:
            # It never ran: released now as its dependencies' successes release a waiting task (their
            # results passed in, the record written whole to the journal then).
            record.state = SCHEDULED
            self._dependencies_done(record)
            return record
        if self.journal is not None:
            self.journal.retried(record)
        self._enqueue(record)
        return record

    def _check_dependencies_succeeded(self, record: TaskRecord) -> None:
        """Refuse the retry of a task that never ran because a dependency did not succeed, while that holds.

        Run without its dependencies' results it would run with other arguments than its workflow
        gives it; once every dependency succeeded (retried by hand, say) it may run with them.

        Raises:
            RequestRefused: a dependency is not SUCCESS (or no longer known).
        """
        for dependency_id in record.spec.dependencies.task_ids:
            dependency = self.find_quietly(dependency_id)
            if dependency is not None and dependency.state == SUCCESS:
                continue
            state = (
                None
                if dependency is None
                else task_pb2.TaskState.Name(dependency.visible_state).removeprefix("TASK_STATE_")  # type: ignore[arg-type]
            )
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST, unreleased_retry_refusal(record.task_id, dependency_id, state)
            )

    # --------------------------------------------------------------------------------- operator actions

    def purge(self, level: int) -> int:
        """Cancel every task waiting at one level (PENDING); returns how many. Running ones are untouched."""
        with self.lock:
            taken = self.queue.drain(level)
            for record in taken:
                record.state = CANCELLED  # under the lock: no slot can take it any more
        for record in taken:
            self.end(record, CANCELLED, "TaskCancelled", "purged by an operator")
        self.events.publish(
            events_pb2.EVENT_KIND_QUEUE_CHANGED, detail=f"purged {len(taken)} {level_name(level)} tasks"
        )
        logger.info("purged %d waiting %s tasks", len(taken), level_name(level))
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
                events_pb2.EVENT_KIND_QUEUE_CHANGED, detail=f"{level_name(level)} {'paused' if paused else 'resumed'}"
            )
            logger.info("%s dispatch of %s tasks", "paused" if paused else "resumed", level_name(level))
            if not paused and self.dispatcher is not None:
                self.dispatcher.schedule()
        return paused

    # ----------------------------------------------------------------------------------------- stats

    def _expire_results(self) -> None:
        self.cache.expire(self.clock())
        if self.graph.workflows:
            self.graph.prune_workflows(task_id for task_id in self._all_known_ids())
        self._expiry_timer = self._loop.call_later(self.cache.sweep_interval, self._expire_results)

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
                # Not for tasks waiting to be adopted: no worker runs them for this process (yet);
                # the journal keeps them for the next one.
                while self.running_total - (self.dispatcher.awaiting_adoption if self.dispatcher is not None else 0):
                    await asyncio.sleep(DRAIN_POLL)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop timers and the local executor."""
        self._expiry_timer.cancel()
        self._waiting_expiry_timer.cancel()
        self._schedule_timer.cancel()
        self.waits.close()
        self.events.close()
        with self.lock:
            self._slots_stopping = True
            self._work_ready.notify_all()
        self.local.close()


def _piped_unique_problem(spec: task_pb2.TaskSpec) -> str | None:
    """Why a unique task (its key made of its arguments) cannot be a step that takes an earlier result, or None.

    Its key is made of the arguments given now, and the earlier result joins them only when it is
    released, so two live tasks could run with the same final arguments.
    """
    if spec.unique_key or not spec.HasField("dependencies") or not spec.dependencies.input:
        return None
    return (
        f"unique task {spec.name!r} cannot take an earlier step's result (its uniqueness key covers only the"
        " arguments given now): make it immutable (.si(...)), so that its key covers every argument"
    )


def _completes(known_ids: Sequence[str], specs: Sequence[task_pb2.TaskSpec]) -> bool:
    """True when ``specs`` is a longer workflow whose first steps are exactly the known ones (a resend after a cut)."""
    return len(specs) > len(known_ids) and all(
        spec.task_id == task_id for spec, task_id in zip(specs, known_ids, strict=False)
    )


def _expired_error() -> task_pb2.TaskError:
    """The error of a task that expired before it started."""
    return task_pb2.TaskError(type="Expired", message="the task expired before it could start")
