"""Hands ready tasks to the least-loaded subworker with a free slot, and takes them back when a worker is lost.

Every task sent to a worker is a lease recorded on the worker (``WorkerRecord.leases``): a message
already handed to a dead worker's connection is gone, so the lease is what lets a lost worker's
tasks be re-queued (if they have retries left) or failed with ``WorkerLost``. A result is accepted
only against its lease (worker and attempt), so a late result from a worker already declared lost
is ignored, never delivered twice.

A prefetched (held) task starts on its worker only once granted here, and a lost worker's held
tasks go back only after its fence (``fastworker.protocol.lease``): so a held task never runs both
on a cut-off worker and elsewhere. A worker is identified by its connection and its process
(incarnation), never by the id it claims.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from fastworker.client import _tracing as tracing
from fastworker.controlplane.adoption import Orphans, adoption_window
from fastworker.controlplane.coordinator import Coordinator
from fastworker.controlplane.fleet import Fleet, WorkerRecord
from fastworker.controlplane.lograte import RateLimitedLog
from fastworker.controlplane.records import CANCELLED, CONTROL_PLANE_LOST, FAILURE, RUNNING, SUCCESS, TaskRecord
from fastworker.controlplane.replyserver import Request
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE, encode_frame, new_envelope
from fastworker.protocol.lease import may_take_back
from fastworker.protocol.payload import payload_problem
from fastworker.protocol.v1 import events_pb2, task_pb2, worker_pb2
from fastworker.worker.executor import bound_error

#: The level a task without a priority of its own has on a worker (the others go into the dispatched spec).
NORMAL = task_pb2.PRIORITY_NORMAL

logger = logging.getLogger(__name__)
#: Where every run's end is logged (``fastworker.worker.tasklog``): here, the runs their workers could not report.
task_log = logging.getLogger("fastworker.task")

#: Error type of tasks whose worker was lost with no retries left (docs/reference.md).
WORKER_LOST = "WorkerLost"
#: Most tasks one worker may hold at once (running plus prefetched), whatever capacity it claims.
DEFAULT_MAX_WORKER_TASKS = 1024
#: Seconds added to a lost worker's fence before its prefetched tasks go back (timer granularity).
FENCE_SLACK = 0.05
#: Lateness of the liveness check, in seconds, beyond which this process counts as having stalled.
STALL_TOLERANCE = 0.5
#: Seconds between looks for tasks that wait in a served queue no serving process defines them for.
UNSERVABLE_CHECK_EVERY = 5.0


#: Bytes of tasks one dispatch frame carries at most: what a worker reads in one frame (it reads the
#: default frame size), less room for the rest of the message. A task's arguments are at most 8 MiB,
#: so one always fits; a worker given several large ones gets them over several requests.
DISPATCH_FRAME_BUDGET = DEFAULT_MAX_FRAME_SIZE - 256 * 1024
#: Bytes a task takes in a dispatch beyond its encoded spec (attempt, priority, limits, framing).
DISPATCH_TASK_OVERHEAD = 256


class WorkerIdHeld(Exception):
    """A registration named the worker id of another process whose connection closed: not lost yet.

    Most often that process died and this one replaces it (a crash, a container restart, a
    supervisor's restart). Its tasks are its until it is found lost (``heartbeat_timeout`` of
    silence), or it may come back on a new connection: so the new process is not refused for good,
    only told to register again (it does, with backoff) and accepted once the old one is lost.
    """

    def __init__(self, holder: WorkerRecord, lost_in: float) -> None:
        super().__init__(
            f"worker id {holder.worker_id!r} is still held by the process before this one (host {holder.host},"
            f" pid {holder.pid}), whose connection closed: it is taken as lost, and its tasks re-run or failed,"
            f" in {max(0.0, lost_in):.1f} s unless it comes back; registering again until then"
        )
        self.holder = holder


class WorkerIdInUse(Exception):
    """A registration named the worker id of another live worker process."""

    def __init__(self, holder: WorkerRecord) -> None:
        super().__init__(
            f"worker id {holder.worker_id!r} is in use by a live worker (host {holder.host}, pid {holder.pid}); "
            "give each worker its own --worker-id"
        )
        self.holder = holder


def _names_by_queue(workers: Iterable[WorkerRecord]) -> dict[str, frozenset[str]]:
    """For each named queue the workers serve, the task names they run from it."""
    names: dict[str, frozenset[str]] = {}
    for worker in workers:
        for queue in worker.queues:
            names[queue] = names.get(queue, frozenset()) | worker.task_names
    return names


def _start_order(held: tuple[TaskRecord, WorkerRecord]) -> tuple[int, float]:
    """Order for moving held tasks to an idle worker: as the queue starts them, highest priority, then longest ready."""
    record = held[0]
    return (record.priority, record.ready_at)


def _least_loaded(worker: WorkerRecord) -> tuple[float, int]:
    """Order for picking a worker: lowest share of its slots in use, then fewest tasks."""
    return (worker.load, len(worker.leases))


class Dispatcher:
    """Keeps the fleet busy: assigns queued tasks to workers' outstanding work requests."""

    def __init__(
        self,
        coordinator: Coordinator,
        fleet: Fleet,
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        on_fleet_change: Callable[[], None] = lambda: None,
        instance_id: str = "",
        max_worker_tasks: int = DEFAULT_MAX_WORKER_TASKS,
        monotonic: Callable[[], float] = time.monotonic,
        orphan_window: float | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.instance_id = instance_id
        self.fleet = fleet
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_worker_tasks = max_worker_tasks
        #: The lease clock: monotonic, so a wall-clock jump never declares a worker lost.
        self.monotonic = monotonic
        self._on_fleet_change = on_fleet_change
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._refusal_log = RateLimitedLog(logger)
        #: Wakes dispatch when a rate-limited name gets its next token (see ``_arm_gate_timer``).
        self._gate_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._reap_due = self._loop.time() + heartbeat_interval
        self._reaper = self._loop.call_later(heartbeat_interval, self._reap_silent_workers)
        self._unservable_check_due = 0.0
        #: Tasks a journal replay found running on subworkers, each waiting for its worker to adopt it.
        self.orphans = Orphans(coordinator.orphans)
        coordinator.orphans = []
        self._orphan_timer: asyncio.TimerHandle | None = None
        if self.orphans:
            window = adoption_window(heartbeat_timeout) if orphan_window is None else orphan_window
            self._orphan_timer = self._loop.call_later(window, self._settle_orphans)
            logger.info(
                "%d tasks were running on subworkers when the last process stopped: they stay RUNNING for up"
                " to %.0f s, for their workers to come back and adopt them",
                len(self.orphans),
                window,
            )
        coordinator.attach_dispatcher(self)

    @property
    def awaiting_adoption(self) -> int:
        """Tasks a journal replay found running on subworkers that no worker adopted yet."""
        return len(self.orphans)

    # ------------------------------------------------------------------------------------ membership

    def register(self, request: worker_pb2.RegisterRequest, pipe_id: int) -> tuple[WorkerRecord, bool, list[str]]:
        """Add a worker, or resume its live registration; returns (the record, resumed, adopted task ids).

        The same worker process (same incarnation) registering again, after a reconnect or a
        registration that crossed a restart, resumes its record: its leases stay, so nothing it is
        about to run is failed or run twice. A live registration of another process under the same id
        is never replaced: ``WorkerIdInUse`` is raised, or ``WorkerIdHeld`` while its connection is
        closed (a process that died and restarts is accepted once the old one is found lost). A silent
        one (past the heartbeat timeout) or one from a worker too old to send an incarnation is dropped
        as lost first.

        A fresh registration adopts the worker's orphans that it still holds (``adoption``).
        """
        now = self.monotonic()
        previous = self.fleet.get(request.worker_id)
        if previous is not None and request.incarnation and previous.incarnation == request.incarnation:
            self._drop_pull(previous)  # asked on the old connection: nobody reads that answer
            with self.coordinator.lock:
                previous.describe(request, pipe_id, self.max_worker_tasks)
            previous.heard_at = now
            previous.last_seen = self.coordinator.clock()
            logger.info(
                "worker %s resumed its registration (%d leases kept)",
                previous.worker_id,
                len(previous.leases),
                extra={"worker_id": previous.worker_id},
            )
            self._fleet_changed()
            return previous, True, []
        if previous is not None:
            if (
                request.incarnation
                and previous.incarnation
                and not may_take_back(now, previous.heard_at, self.heartbeat_timeout)
            ):
                if previous.disconnected:
                    raise WorkerIdHeld(previous, previous.heard_at + self.heartbeat_timeout - now)
                self.coordinator.counters.duplicate_worker_ids += 1
                raise WorkerIdInUse(previous)
            self.lose(previous, "registered again by a new process")
        worker = WorkerRecord(request, pipe_id, self.coordinator.clock(), now, self.max_worker_tasks)
        adopted, undelivered, disowned = self.orphans.claim(
            worker.worker_id, request.incarnation, ((h.task_id, h.attempt) for h in request.held)
        )
        with self.coordinator.lock:
            self.fleet.add(worker)
            for record in adopted:
                worker.leases[record.task_id] = record
        if adopted:
            logger.info(
                "worker %s adopted %d tasks it was running for the previous control plane",
                worker.worker_id,
                len(adopted),
                extra={"worker_id": worker.worker_id},
            )
        if disowned:
            logger.warning(
                "worker %s registered again without %d tasks the previous control plane had running there"
                " (re-run if they have retries left, else ControlPlaneLost): %s",
                worker.worker_id,
                len(disowned),
                ", ".join(record.task_id for record in disowned[:20]) + (" ..." if len(disowned) > 20 else ""),
                extra={"worker_id": worker.worker_id},
            )
        if undelivered:
            logger.info(
                "worker %s never started %d tasks the previous control plane had dispatched to it: re-queued (%s)",
                worker.worker_id,
                len(undelivered),
                ", ".join(record.task_id for record in undelivered[:20]) + (" ..." if len(undelivered) > 20 else ""),
                extra={"worker_id": worker.worker_id},
            )
        for record in reversed(undelivered):  # each goes to the front: reversed keeps their order
            self._requeue_unstarted(record)
        for record in disowned:
            self._settle_orphan(
                record,
                f"worker {worker.worker_id} registered again without listing it (another process under that"
                " id, or one too old to say which process it is)",
            )
        if worker.capacity < request.capacity:
            logger.warning(
                "worker %s asked for %d slots: capped at %d (--max-worker-tasks)",
                worker.worker_id,
                request.capacity,
                worker.capacity,
                extra={"worker_id": worker.worker_id},
            )
        logger.info(
            "worker %s registered from %s pid %d: capacity %d, %d tasks, version %s",
            worker.worker_id,
            worker.host,
            worker.pid,
            worker.capacity,
            len(worker.task_names),
            worker.version or "unknown",
            extra={"worker_id": worker.worker_id},
        )
        self._fleet_changed()
        self.coordinator.events.publish(
            events_pb2.EVENT_KIND_WORKER_ONLINE, worker_id=worker.worker_id, detail=f"{worker.host} pid {worker.pid}"
        )
        if disowned:
            self.schedule()
        return worker, False, [record.task_id for record in adopted]

    def _settle_orphans(self) -> None:
        """The adoption window passed: the orphans nobody adopted are settled as after a lost worker."""
        self._orphan_timer = None
        left = self.orphans.take_all()
        for record in reversed(left):  # each goes to the front: reversed keeps their order
            self._settle_orphan(record, f"worker {record.worker} did not come back to adopt it")
        if left:
            logger.warning(
                "%d tasks that were running on subworkers were not adopted in time (re-run if they have retries"
                " left, else ControlPlaneLost): %s",
                len(left),
                ", ".join(record.task_id for record in left[:20]) + (" ..." if len(left) > 20 else ""),
            )
            self.schedule()

    def _settle_orphan(self, record: TaskRecord, why: str) -> None:
        """Re-run an orphan if it has retries left, else fail it with ``ControlPlaneLost``."""
        self._rerun_or_fail(
            record,
            self.orphans.retries(record),
            CONTROL_PLANE_LOST,
            f"the control plane stopped while the task was running on worker {record.worker} (attempt"
            f" {record.attempts}), and {why}; it has no retries left",
        )

    def _rerun_or_fail(self, record: TaskRecord, retries: int, error_type: str, message: str) -> bool:
        """A run that ended without an outcome: re-queue it (True) if ``retries`` allow another, else fail it.

        Its end is logged here, on the ``fastworker.task`` logger, as every run's is where it ran:
        the worker that ran it could not.
        """
        took = max(0.0, self.coordinator.clock() - record.started_at) if record.started_at else 0.0
        fields: dict[str, object] = {"task_id": record.task_id, "task_name": record.name, "worker_id": record.worker}
        fields["attempt"] = record.attempts
        if record.attempts < 1 + retries:
            task_log.info(
                "task %s[%s] ended without an outcome after %.3f s: %s: %s; runs again",
                record.name,
                record.task_id,
                took,
                error_type,
                message,
                extra=fields,
            )
            record.started_at = 0.0
            self.coordinator.requeue_front(record, ran=True)
            return True
        task_log.warning(
            "task %s[%s] failed in %.3f s: %s: %s", record.name, record.task_id, took, error_type, message, extra=fields
        )
        self.coordinator.end(record, FAILURE, error_type, message)
        return False

    def heard(self, worker: WorkerRecord) -> None:
        """A request from the worker came in: its lease is renewed."""
        worker.heard_at = self.monotonic()
        worker.last_seen = self.coordinator.clock()

    def lose(self, worker: WorkerRecord, reason: str) -> None:
        """Drop a worker and take back its leases: re-queue those with retries left, fail the others.

        Tasks it held without starting them go back only once the worker's fence has surely passed
        (``fastworker.protocol.lease``): a worker that lost only its connection may still be about
        to start them until then; it will not after.
        """
        with self.coordinator.lock:
            if self.fleet.get(worker.worker_id) is not worker:
                return
            self.fleet.remove(worker.worker_id)
            leases = list(worker.leases.values())
            worker.leases.clear()
        self.coordinator.counters.workers_lost += 1
        self._drop_pull(worker)
        held = [record for record in leases if record.held]
        now_back = leases
        if held and not may_take_back(self.monotonic(), worker.heard_at, self.heartbeat_timeout):
            delay = worker.heard_at + self.heartbeat_timeout - self.monotonic() + FENCE_SLACK
            self._loop.call_later(delay, self._take_back_held, worker, held, reason)
            now_back = [record for record in leases if not record.held]
        # Each goes back to the front of its level: reversed keeps their original order.
        requeued = sum(self._take_back(record, worker, f"was lost ({reason})") for record in reversed(now_back))
        logger.warning(
            "worker %s lost (%s): %d tasks re-queued, %d failed, %d prefetched held back until its fence",
            worker.worker_id,
            reason,
            requeued,
            len(now_back) - requeued,
            len(leases) - len(now_back),
            extra={"worker_id": worker.worker_id},
        )
        self.coordinator.events.publish(events_pb2.EVENT_KIND_WORKER_OFFLINE, worker_id=worker.worker_id, detail=reason)
        self._fleet_changed()
        self.schedule()

    def _take_back_held(self, worker: WorkerRecord, held: list[TaskRecord], reason: str) -> None:
        """The fence of a lost worker has passed: the prefetched tasks it never started go back."""
        if self._closed:
            return  # shutting down: the journal hands them to the next instance
        requeued = sum(self._take_back(record, worker, f"was lost ({reason})") for record in reversed(held))
        if requeued:
            logger.info(
                "worker %s: %d prefetched tasks re-queued once its fence passed",
                worker.worker_id,
                requeued,
                extra={"worker_id": worker.worker_id},
            )
            self.schedule()

    def deregister(self, worker: WorkerRecord, returned: list[str]) -> None:
        """A draining worker leaves: tasks it hands back (it started none of them) go back to the queue.

        Its other tasks ran there and were stopped when its drain timeout passed: as for a lost
        worker, they run again only if they have retries left (that run counted as an attempt),
        else they fail with ``WorkerLost``; a task id is never run twice otherwise. (A worker of
        0.1.0 hands those back too: they go back without counting, as they did.)
        """
        with self.coordinator.lock:
            self.fleet.remove(worker.worker_id)
            leases = dict(worker.leases)
            worker.leases.clear()
        self._drop_pull(worker)
        for task_id in reversed(returned):
            record = leases.pop(task_id, None)
            if record is not None and record.state == RUNNING and record.worker == worker.worker_id:
                self._requeue_unstarted(record, worker, "handed it back unstarted as it left")
        for record in reversed(leases.values()):  # ran there, stopped at its drain timeout: as a loss
            self._take_back(record, worker, "drained and left (its drain timeout passed)")
        logger.info(
            "worker %s deregistered (%d tasks handed back)",
            worker.worker_id,
            len(returned),
            extra={"worker_id": worker.worker_id},
        )
        self.coordinator.events.publish(
            events_pb2.EVENT_KIND_WORKER_OFFLINE, worker_id=worker.worker_id, detail="drained"
        )
        self._fleet_changed()
        self.schedule()

    def _fleet_changed(self) -> None:
        self.coordinator.fleet_changed(frozenset(self.fleet.task_names()))
        self._on_fleet_change()

    def _take_back(self, record: TaskRecord, worker: WorkerRecord, what_happened: str) -> bool:
        """Re-queue a task a worker held (True) if it has retries left, else fail it with WorkerLost.

        A prefetched task that never started goes back without counting an attempt.
        """
        if record.state != RUNNING or record.worker != worker.worker_id:
            return False  # already finished or moved on
        if record.task_id in worker.cancels:
            # A cancel was acknowledged (cancelled=True) while the stop order waited for this worker:
            # the task must not run again, nor end as if the worker had failed it.
            worker.cancels.discard(record.task_id)
            record.held = False
            self.coordinator.end(
                record,
                CANCELLED,
                "TaskCancelled",
                f"cancelled by request; worker {worker.worker_id} {what_happened} before it confirmed the stop",
            )
            return False
        if record.held:
            record.attempts -= 1
            self.coordinator.requeue_front(record, ran=False)
            return True
        return self._rerun_or_fail(
            record,
            self.coordinator.policy_for(record).retries,
            WORKER_LOST,
            f"worker {worker.worker_id} {what_happened} while the task was running there, or given to it to start"
            " (that counts as an attempt: it may have started)",
        )

    def settled(self, request: worker_pb2.RegisterRequest) -> list[str]:
        """Of what a registering worker holds, the tasks already finished here by it, at the attempt it holds.

        Their outcomes reached this instance before (a restart with a journal crossed the reply that
        acknowledged them): the worker's copies are delivered, not undeliverable.
        """
        settled = []
        for held in request.held:
            record = self.coordinator.find_quietly(held.task_id)
            if (
                record is not None
                and record.is_final
                and record.worker == request.worker_id
                and record.attempts == held.attempt
            ):
                settled.append(held.task_id)
        return settled

    def pipe_closed(self, pipe_id: int) -> None:
        """A connection dropped: its workers get nothing more on it; whether they are lost is the heartbeat's call.

        A cut connection is no proof that the process died, and a loss fails or re-runs what it
        runs: a worker that was only cut off registers again on its next request and resumes its
        record, with what it runs, however many cuts it takes (a storm of them delays its
        registration by seconds); one that does not come back is lost as any silent worker is, once
        ``heartbeat_timeout`` passed since it was last heard. (Not once this process is closing:
        its own sockets closing drop every connection.)
        """
        if self._closed:
            return
        for worker in self.fleet.on_pipe(pipe_id):
            self._drop_pull(worker)  # held on the dropped connection: nobody reads its answer
            worker.disconnected = True

    def _reap_silent_workers(self) -> None:
        """Drop workers silent for longer than the heartbeat timeout.

        If this process itself was stalled (SIGSTOP, swap, a VM pause: this check ran late on the
        event loop's clock), silence is no evidence: what workers sent meanwhile is still unread.
        Every worker then gets a full heartbeat timeout from this resumption before it is judged.
        """
        lateness = self._loop.time() - self._reap_due
        stalled = lateness > max(self.heartbeat_interval, STALL_TOLERANCE)
        now = self.monotonic()
        if stalled:
            logger.warning(
                "this control plane was stalled for %.1f s: every worker gets %.1f s from now before it is judged",
                lateness,
                self.heartbeat_timeout,
            )
        for worker in self.fleet:
            if stalled:
                worker.heard_at = max(worker.heard_at, now)
            elif may_take_back(now, worker.heard_at, self.heartbeat_timeout):
                self.lose(worker, f"no heartbeat for {now - worker.heard_at:.1f} s")
        self._reap_due = self._loop.time() + self.heartbeat_interval
        self._reaper = self._loop.call_later(self.heartbeat_interval, self._reap_silent_workers)
        if self._loop.time() >= self._unservable_check_due:
            self._unservable_check_due = self._loop.time() + UNSERVABLE_CHECK_EVERY
            self.coordinator.warn_unservable(self.coordinator.clock())

    # ---------------------------------------------------------------------------------------- pulls

    def pull(
        self,
        worker: WorkerRecord,
        request: Request,
        hold: float,
        correlation_id: int,
        claims: Sequence[str] = (),
    ) -> None:
        """A worker asks for work: answer now if there is some, else hold the request up to ``hold``.

        ``claims`` are prefetched tasks the worker asks to start: those it still holds are granted in
        the answer (from then on they count as running), and a request with claims is answered at
        once. A newer request (the worker gave up waiting, or registered again) replaces an older
        one, which is dropped unanswered: the worker's socket no longer reads that answer, and the
        stop orders and grants it would carry stay for the next one.
        """
        self._drop_pull(worker)
        if claims:
            worker.grants.extend(self.started(worker, claims))
        worker.pull = request
        worker.pull_correlation = correlation_id
        hold = 0.0 if claims else max(0.05, min(hold, self.heartbeat_interval))
        worker.pull_timer = self._loop.call_later(hold, self._expire_pull, worker, request)
        self.schedule()

    def cancel_running(self, record: TaskRecord) -> bool:
        """Ask the worker running a task to stop it (on its next reply); False if no worker holds it.

        A prefetched task not granted yet ends here at once: it has not started, and cannot any more
        (a claim for it is refused, so its holder drops it), nor can a drain or the loss of its
        holder hand it back to the queue.
        """
        if self.orphans.forget(record):
            self.coordinator.end(
                record,
                CANCELLED,
                "TaskCancelled",
                f"cancelled by request while worker {record.worker} had not come back after a control-plane"
                " restart (it stops the task if it does)",
            )
            return True
        if record.held:
            self._release_unstarted(record)
            self.coordinator.end(record, CANCELLED, "TaskCancelled", "cancelled by request before it started")
            return True
        worker = self.fleet.get(record.worker)
        if worker is None or record.task_id not in worker.leases:
            return False
        worker.cancels.add(record.task_id)
        if worker.pull is not None:
            self._answer(worker, [])  # deliver the order now rather than at the next heartbeat
        return True

    def abandon_unconfirmed_stop(self, record: TaskRecord) -> bool:
        """End as CANCELLED a task whose subworker has not confirmed its stop order (a cancel's grace passed).

        The caller was told it is cancelled, so it ends so now, whatever the worker reports later: a
        stalled or slow worker may still finish the run, and its outcome is dropped. The worker keeps
        the lease (its slot stays counted, the stop order stands) until it reports the run or is
        lost; until then the id cannot be retried (:meth:`runs_on_a_worker`). False if no worker
        holds the task under a stop order.
        """
        worker = self.fleet.get(record.worker)
        if record.state != RUNNING or worker is None or worker.leases.get(record.task_id) is not record:
            return False
        if record.task_id not in worker.cancels:
            return False
        self.coordinator.end(
            record,
            CANCELLED,
            "TaskCancelled",
            f"cancelled by request; worker {worker.worker_id} had not confirmed the stop when the cancel was"
            " answered (it stops the run when it can, and what the run returns is dropped)",
        )
        return True

    def runs_on_a_worker(self, record: TaskRecord) -> bool:
        """True while a subworker still holds a run of this task (one ended CANCELLED before it confirmed its stop)."""
        worker = self.fleet.get(record.worker) if record.worker else None
        return worker is not None and worker.leases.get(record.task_id) is record

    def expire_unstarted(self, record: TaskRecord) -> None:
        """End a prefetched task not granted yet whose expiry passed: CANCELLED (``Expired``), never started."""
        self._release_unstarted(record)
        self.coordinator.expire(record)

    def _release_unstarted(self, record: TaskRecord) -> None:
        """Take back a prefetched task no worker started, for the caller to end (its dispatch counted no run).

        Its lease ends here, so a claim for it is refused and its holder drops it.
        """
        worker = self.fleet.get(record.worker)
        if worker is not None:
            with self.coordinator.lock:
                worker.leases.pop(record.task_id, None)
            worker.cancels.discard(record.task_id)
            self.schedule()  # its room under the worker's prefetch is free
        record.held = False
        record.attempts = max(0, record.attempts - 1)

    def take_cancels(self, worker: WorkerRecord) -> list[str]:
        """The stop orders for a worker that are still relevant (its leases).

        Repeated on every answer until the task's lease ends: an answer the worker never read (it
        sent a newer request meanwhile) cannot lose an order; the worker acts on each order once.
        """
        if worker.cancels:
            worker.cancels.intersection_update(worker.leases)
        return list(worker.cancels)

    def request_drain(self, worker_id: str, timeout: float) -> bool:
        """Ask a worker to drain (operator action): nothing new goes to it, and it is told at once.

        The order rides on the answer to its pending work request, or on the next heartbeat reply;
        the worker finishes what it runs within ``timeout``, hands back the rest and deregisters.
        Returns False for an unknown worker.
        """
        worker = self.fleet.get(worker_id)
        if worker is None:
            return False
        worker.drain_order = timeout
        logger.info("asked worker %s to drain within %.1f s", worker_id, timeout, extra={"worker_id": worker_id})
        self.stop_dispatching(worker)
        return True

    def stop_dispatching(self, worker: WorkerRecord) -> None:
        """A worker drains: give it nothing more, and answer its held work request now (with nothing).

        The draining worker waits for that answer before it hands back what it holds: a task given
        to it meanwhile then goes back too, rather than start while (or after) it deregisters.
        """
        worker.draining = True
        if worker.pull is not None:
            self._answer(worker, [])

    def reconcile(self, worker: WorkerRecord, held_task_ids: set[str]) -> None:
        """Re-queue leases the worker does not hold: tasks in a reply it gave up waiting for.

        A worker has one work request out at a time and lists everything it holds in the next one,
        so a lease it does not list never reached it: the task never ran and goes back to the front
        of its queue without counting an attempt.
        """
        missing = [record for task_id, record in worker.leases.items() if task_id not in held_task_ids]
        if not missing:
            return
        with self.coordinator.lock:
            for record in missing:
                worker.leases.pop(record.task_id, None)
        for record in reversed(missing):  # each goes to the front: reversed keeps their order
            if record.state == RUNNING and record.worker == worker.worker_id:
                self._requeue_unstarted(record, worker, "never received it")
        logger.info(
            "worker %s never received %d dispatched tasks (an answer it no longer read); re-queued",
            worker.worker_id,
            len(missing),
            extra={"worker_id": worker.worker_id},
        )

    def _take_back_undelivered(self, worker: WorkerRecord, records: list[TaskRecord]) -> None:
        """Tasks assigned to a worker that its dispatch frame had no room for: back to the queue's front, in order."""
        with self.coordinator.lock:
            for record in records:
                worker.leases.pop(record.task_id, None)
        for record in reversed(records):  # each goes to the front: reversed keeps their order
            self._requeue_unstarted(record, worker, "had no room for it in its dispatch frame")

    def _requeue_unstarted(self, record: TaskRecord, worker: WorkerRecord | None = None, why: str = "") -> None:
        """Put back a task dispatched to a worker that never started it: to the front, that attempt not counted.

        One whose cancel was accepted while the stop order waited for ``worker`` ends CANCELLED
        instead: it must not run elsewhere (nor free its unique key while it could).
        """
        if worker is not None and record.task_id in worker.cancels:
            worker.cancels.discard(record.task_id)
            record.held = False
            record.attempts = max(0, record.attempts - 1)
            self.coordinator.end(
                record,
                CANCELLED,
                "TaskCancelled",
                f"cancelled by request before it started (worker {worker.worker_id} {why})",
            )
            return
        record.attempts -= 1
        record.started_at = 0.0
        self.coordinator.requeue_front(record, ran=False)

    def _expire_pull(self, worker: WorkerRecord, request: Request) -> None:
        if worker.pull is request:
            self._answer(worker, [])

    def _drop_pull(self, worker: WorkerRecord) -> None:
        if worker.pull_timer is not None:
            worker.pull_timer.cancel()
            worker.pull_timer = None
        if worker.pull is not None:
            worker.pull.drop()
            worker.pull = None

    def _answer(self, worker: WorkerRecord, records: list[TaskRecord]) -> None:
        request, worker.pull = worker.pull, None
        if worker.pull_timer is not None:
            worker.pull_timer.cancel()
            worker.pull_timer = None
        if request is None:
            return
        envelope = new_envelope(worker.pull_correlation)
        envelope.dispatch.instance_id = self.instance_id
        envelope.dispatch.cancel_task_ids.extend(self.take_cancels(worker))
        envelope.dispatch.granted_task_ids.extend(worker.grants)
        worker.grants.clear()
        if worker.drain_order is not None:
            envelope.dispatch.drain.timeout = worker.drain_order
        tasks = envelope.dispatch.tasks
        coordinator = self.coordinator
        own_limits = worker.run_limits
        room = DISPATCH_FRAME_BUDGET
        for index, record in enumerate(records):
            encoded = record.encoded_spec()
            room -= len(encoded) + DISPATCH_TASK_OVERHEAD
            if room < 0 and index:
                # More than a worker reads in one frame (large arguments): the rest go back to the
                # front of the queue, that dispatch not counted, for the worker's next request.
                self._take_back_undelivered(worker, records[index:])
                break
            wire = tasks.add()
            wire.MergeFromString(encoded)  # cheaper than copying a parsed spec
            wire.attempt = record.attempts
            if record.priority != NORMAL and wire.priority != record.priority:
                wire.priority = record.priority  # type: ignore[assignment]  # its level as queued: the worker starts by it
            tracing.stamp_ready(wire, record.ready_at)  # a traced task only: its `wait` span where it runs
            # The worker enforces the control plane's rule, not its own copy of the definition: the
            # resolved limits go with the task unless the worker's definition gives the same ones
            # (then it resolves the spec's own values on top of it exactly as the control plane does).
            if own_limits.get(record.name) != coordinator.defined_policy(record.name).run_limits:
                coordinator.policy_for(record).write_limits(wire)
            if record.held:
                envelope.dispatch.prefetched_task_ids.append(record.task_id)
        envelope.dispatch.SetInParent()
        frame = encode_frame(envelope)
        if coordinator.journal is not None:
            # The worker starts what it gets, and forgets the outcomes its request carried.
            coordinator.journal.when_written(lambda: request.reply(frame))
        else:
            request.reply(frame)

    # ------------------------------------------------------------------------------------- dispatch

    def schedule(self) -> None:
        """Run a dispatch round soon (coalesced: one per loop turn)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Assign waiting tasks, highest priority first, each to the least-loaded worker that can run it."""
        self._scheduled = False
        if not len(self.fleet):
            return
        assigned: dict[str, list[TaskRecord]] = {}
        expired: list[TaskRecord] = []
        now = self.coordinator.clock()
        coordinator = self.coordinator
        with coordinator.lock:
            ready: list[WorkerRecord] = []
            names: dict[str, frozenset[str]] = {}
            refresh_ready = True  # the workers with room, and what they run, are worked out (again)
            while True:
                if refresh_ready:
                    ready = [w for w in self.fleet if w.accepting and w.room > 0]
                    if not ready:
                        break
                    names = _names_by_queue(ready)
                    refresh_ready = False
                gates = coordinator.queue.gates
                if gates:  # a limited task starts at once or not at all: only into a free slot, never prefetched
                    free = _names_by_queue([w for w in ready if w.free > 0])
                    record = coordinator.queue.pop(
                        accept=lambda r, names=names, free=free, gates=gates: (  # type: ignore[misc]
                            r.name in (free if r.name in gates else names).get(r.queue, ())
                        ),
                        queues=names,
                    )
                else:
                    record = coordinator.queue.pop(
                        accept=lambda r, names=names: r.name in names[r.queue],  # type: ignore[misc]
                        queues=names,
                    )
                if record is None:
                    break
                if record.expired(now):
                    record.state = CANCELLED
                    expired.append(record)
                    continue
                if record.gate is not None:
                    worker = min((w for w in ready if w.free > 0 and w.serves(record)), key=_least_loaded)
                else:
                    worker = min((w for w in ready if w.serves(record)), key=_least_loaded)
                # Beyond its free slots the task waits in the worker's prefetch queue: held (shown
                # PENDING, never started there) until the worker claims it and is granted it.
                record.held = len(worker.leases) >= worker.capacity
                record.state = RUNNING
                record.attempts += 1
                record.worker = worker.worker_id
                if record.held:
                    record.started_at = 0.0
                else:
                    coordinator.mark_started(record, now)
                worker.leases[record.task_id] = record
                # A stop order left from an earlier attempt of this id (cancelled, then retried) is
                # not for this one.
                worker.cancels.discard(record.task_id)
                if coordinator.journal is not None:
                    coordinator.journal.running(record, coordinator.policy_for(record).retries, worker.incarnation)
                assigned.setdefault(worker.worker_id, []).append(record)
                refresh_ready = worker.room <= 0  # it filled: leave it out of the next pick
            self._rebalance(now, assigned)
            self._arm_gate_timer()
        for record in expired:
            coordinator.expire(record)
        for records in assigned.values():
            for record in records:
                coordinator.events.publish_task(record)
        for worker_id, records in assigned.items():
            target = self.fleet.get(worker_id)
            if target is not None:
                self._answer(target, records)
        coordinator.wake_slots()  # what no worker took, local slots may run

    def _arm_gate_timer(self) -> None:
        """Dispatch again when a rate-limited name waiting for a token gets one."""
        delay = self.coordinator.queue.retry_after()
        if delay is None:
            return
        due = self._loop.time() + delay
        timer = self._gate_timer
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._gate_timer = self._loop.call_at(due, self._gate_timer_fired)

    def _gate_timer_fired(self) -> None:
        self._gate_timer = None
        self.schedule()

    def _rebalance(self, now: float, assigned: dict[str, list[TaskRecord]]) -> None:
        """Move prefetched tasks that were never granted to workers with idle slots (the queue is empty).

        A worker that prefetched while its tasks were short may hold tasks behind a long one while
        another worker idles (Celery's prefetch trap). A held task not granted yet has not started
        and cannot start there without a grant, so it can go to the idle worker at once; its first
        holder is refused the grant and drops it. Only into free slots, so tasks never ping-pong.
        The idle worker takes them in the order the queue would start them (highest priority first,
        then the longest ready), whichever worker holds them.
        """
        thieves = [w for w in self.fleet if w.accepting and w.free > 0]
        if not thieves:
            return
        # Only a worker holding more than its slots has prefetched tasks waiting behind running ones.
        victims = [w for w in self.fleet if len(w.leases) > w.capacity]
        if not victims:
            return
        gates = self.coordinator.queue.gates
        for thief in thieves:
            # (Not one whose name gained limits since: it starts within them, at its claim.)
            movable = [
                (record, victim)
                for victim in victims  # (never the thief: a victim has no free slot)
                for record in victim.leases.values()
                if record.held and thief.serves(record) and record.name not in gates
            ]
            moving = sorted(movable, key=_start_order)[: thief.free]
            for record, victim in moving:
                del victim.leases[record.task_id]
                record.held = False
                record.worker = thief.worker_id
                self.coordinator.mark_started(record, now)
                thief.leases[record.task_id] = record
                if self.coordinator.journal is not None:
                    retries = self.coordinator.policy_for(record).retries
                    self.coordinator.journal.running(record, retries, thief.incarnation)
                assigned.setdefault(thief.worker_id, []).append(record)
            if moving:
                logger.debug(
                    "moved %d prefetched tasks from %s to idle %s",
                    len(moving),
                    ", ".join(sorted({victim.worker_id for _, victim in moving})),
                    thief.worker_id,
                )

    # -------------------------------------------------------------------------------------- results

    def started(self, worker: WorkerRecord, task_ids: Iterable[str]) -> list[str]:
        """Prefetched tasks the worker starts (or asks to start): RUNNING from now on, for clients too.

        Returns the ids granted: those still leased to this worker. A task taken back meanwhile is
        not granted, so the worker drops it instead of running it a second time; nor is one cancelled
        meanwhile, which ends CANCELLED without having started, nor one whose name gained limits that
        leave no room for it now (it goes back to wait at its gate). Nor is a claim ahead
        of a free slot (the worker queues granted tasks behind running ones) while another worker has
        a free slot for the task: that worker gets it instead (``_rebalance``).
        """
        now = self.coordinator.clock()
        granted: list[str] = []
        if not self.coordinator.accepting:
            return granted  # shutting down: what has not started stays unstarted, for the next instance
        running = -1
        idle: list[WorkerRecord] = []
        for task_id in task_ids:
            record = worker.leases.get(task_id)
            if record is None:
                continue
            if record.held and record.expired(now):
                self.expire_unstarted(record)  # (before its expiry timer came round to it)
                continue
            if record.held:
                if running < 0:
                    running = sum(1 for r in worker.leases.values() if not r.held)
                    idle = [w for w in self.fleet if w is not worker and w.accepting and w.free > 0]
                if running >= worker.capacity and any(w.serves(record) for w in idle):
                    self.schedule()  # refused: the claimer drops it, and the idle worker takes it
                    continue
                with self.coordinator.lock:
                    admitted = self.coordinator.queue.admit_prefetched(record)
                    if admitted:
                        record.held = False
                        self.coordinator.mark_started(record, now)
                    else:  # (leases change under the lock: slot threads read them to pick what to run here)
                        del worker.leases[task_id]
                if not admitted:
                    # Its name gained limits after it was prefetched, and they leave no room now:
                    # refused (the claimer drops it), it waits at its gate like any other.
                    record.attempts -= 1
                    self.coordinator.requeue_front(record, ran=False)
                    continue
                running += 1
                if self.coordinator.journal is not None:
                    self.coordinator.journal.running(record, incarnation=worker.incarnation)
                self.coordinator.events.publish_task(record)
            granted.append(task_id)
        return granted

    def progress(self, worker: WorkerRecord, updates: Iterable[worker_pb2.TaskProgress]) -> None:
        """Keep running tasks' progress, each only against its lease (a stale attempt's is ignored)."""
        for update in updates:
            if update.task_id in worker.leases:
                self.coordinator.report_progress(update.task_id, update.attempt, update.progress)

    def results(self, worker: WorkerRecord, outcomes: list[worker_pb2.TaskOutcome]) -> None:
        """Finish the tasks a worker reports, each only against its lease."""
        for outcome in outcomes:
            record = worker.leases.get(outcome.task_id)
            if (
                record is not None
                and record.state == CANCELLED
                and record.attempts == outcome.attempt
                and outcome.task_id in worker.cancels
            ):
                # Ended CANCELLED before the worker confirmed its stop (abandon_unconfirmed_stop): the
                # run's end only ends its lease; what it returned is dropped.
                with self.coordinator.lock:
                    del worker.leases[outcome.task_id]
                    worker.cancels.discard(outcome.task_id)
                worker.failed += 1
                continue
            if record is None or record.attempts != outcome.attempt or record.state != RUNNING:
                # Taken back meanwhile (the worker was declared lost, or the task re-queued): the
                # outcome of a run the control plane no longer counts on; ignored, never applied twice.
                # Or applied already: sent again because the answer to its report did not reach the
                # worker (a stall, a cut link), which is not late.
                if not self._applied_already(worker, outcome):
                    self.coordinator.counters.late_outcomes += 1
                    logger.debug("ignored a late result for task %s from %s", outcome.task_id, worker.worker_id)
                continue
            with self.coordinator.lock:
                del worker.leases[outcome.task_id]
                worker.cancels.discard(outcome.task_id)  # done with: its lease ended
                if record.held and outcome.started_at:  # it ran before its grant reached it: it started
                    record.held = False
                    self.coordinator.mark_started(record, outcome.started_at)
            if outcome.started_at:
                record.started_at = outcome.started_at
            if outcome.HasField("progress"):
                record.progress = outcome.progress  # the run's last progress, before its outcome
            state = outcome.state
            refused = self._outcome_problem(worker, outcome)
            if refused is not None:
                # Kept, a result no client could decode (or one that runs code on decode) would be
                # handed to whoever asks: the attempt fails instead, saying why.
                worker.failed += 1
                self._refusal_log.warning(
                    "task %s from worker %s: %s", record.task_id, worker.worker_id, refused.message
                )
                self.coordinator.retry_or_fail(record, refused, None)
            elif state == SUCCESS:
                worker.processed += 1
                record.result = outcome.result
                self.coordinator.finish_remote(record, SUCCESS)
            elif state == CANCELLED:
                worker.failed += 1
                # (an absent error reads as an empty one: a cancel is a TaskCancelled all the same)
                record.error = outcome.error if outcome.HasField("error") else _cancelled_error()
                self.coordinator.finish_remote(record, CANCELLED)
            else:
                worker.failed += 1
                retry_delay = outcome.retry_delay if outcome.retry_requested else None
                self.coordinator.retry_or_fail(record, outcome.error, retry_delay)
        self.schedule()

    def _applied_already(self, worker: WorkerRecord, outcome: worker_pb2.TaskOutcome) -> bool:
        """Whether this worker's outcome for this attempt ended its task already (a report sent again)."""
        record = self.coordinator.find_quietly(outcome.task_id)
        if record is None or not record.is_final or record.worker != worker.worker_id:
            return False
        if record.attempts != outcome.attempt or record.state != outcome.state:
            return False  # (a task taken back ends otherwise: FAILURE with WorkerLost, or a later attempt)
        if outcome.state == SUCCESS:
            return record.result == outcome.result
        return record.error is not None and record.error.type == outcome.error.type

    def _outcome_problem(self, worker: WorkerRecord, outcome: worker_pb2.TaskOutcome) -> task_pb2.TaskError | None:
        """The error a worker's outcome ends its attempt with when it cannot be taken as sent, or None.

        Its state must be a final one, a result one this control plane accepts and every client can
        decode (its codec, the payload limit, data that decodes), and a failure must say what failed:
        what a worker with another ``--allow-pickle`` or a broken one sends.
        """
        state = outcome.state
        if state == SUCCESS:
            problem = payload_problem(
                outcome.result, allow_pickle=self.coordinator.allow_pickle, what="its result", decode=True
            )
            return None if problem is None else task_pb2.TaskError(type="PayloadError", message=problem)
        if state in (FAILURE, CANCELLED):
            if outcome.HasField("error"):
                bound_error(outcome.error)  # (a worker of another version may send any size)
            elif state == FAILURE:
                return task_pb2.TaskError(
                    type="ProtocolError", message=f"worker {worker.worker_id} reported a failure without its error"
                )
            return None
        return task_pb2.TaskError(
            type="ProtocolError",
            message=f"worker {worker.worker_id} reported state {state} for it (an outcome is SUCCESS, FAILURE or CANCELLED)",
        )

    def close(self) -> None:
        """Stop the liveness checks and release held work requests."""
        self._closed = True
        self._reaper.cancel()
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()  # they stay RUNNING in the journal, for the next instance
        if self._gate_timer is not None:
            self._gate_timer.cancel()
        for worker in self.fleet:
            self._drop_pull(worker)


def _cancelled_error() -> task_pb2.TaskError:
    """The error of a cancelled run whose worker did not say (an older or a minimal worker)."""
    return task_pb2.TaskError(type="TaskCancelled", message="cancelled by request")
