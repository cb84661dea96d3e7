"""Hands ready tasks to the least-loaded subworker with a free slot, and takes them back when a worker is lost.

Every task sent to a worker is a lease recorded on the worker (``WorkerRecord.leases``): a message
already handed to a dead worker's connection is gone, so the lease is what lets a lost worker's
tasks be re-queued (if they have retries left) or failed with ``WorkerLost``. A result is accepted
only against its lease (worker and attempt), so a late result from a worker already declared lost
is ignored, never delivered twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from fastworker.client.transport import Request
from fastworker.controlplane.coordinator import Coordinator
from fastworker.controlplane.fleet import Fleet, WorkerRecord
from fastworker.controlplane.records import CANCELLED, RUNNING, SUCCESS, TaskRecord
from fastworker.protocol.framing import encode_frame, new_envelope
from fastworker.protocol.v1 import events_pb2, worker_pb2

logger = logging.getLogger(__name__)

#: Error type of tasks whose worker was lost with no retries left (SPEC).
WORKER_LOST = "WorkerLost"


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
    ) -> None:
        self.coordinator = coordinator
        self.instance_id = instance_id
        self.fleet = fleet
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self._on_fleet_change = on_fleet_change
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._reaper = self._loop.call_later(heartbeat_interval, self._reap_silent_workers)
        self.lost_total = 0
        coordinator.attach_dispatcher(self)

    # ------------------------------------------------------------------------------------ membership

    def register(self, request: worker_pb2.RegisterRequest, pipe_id: int) -> WorkerRecord:
        """Add a worker; a previous registration under the same id is dropped as lost first."""
        previous = self.fleet.get(request.worker_id)
        if previous is not None:
            self.lose(previous, "re-registered (the worker restarted)")
        worker = WorkerRecord(request, pipe_id, self.coordinator.clock())
        with self.coordinator.lock:
            self.fleet.add(worker)
        logger.info(
            "worker %s registered from %s pid %d: capacity %d, %d tasks",
            worker.worker_id,
            worker.host,
            worker.pid,
            worker.capacity,
            len(worker.task_names),
        )
        self._fleet_changed()
        self.coordinator.events.publish(
            events_pb2.EVENT_KIND_WORKER_ONLINE, worker_id=worker.worker_id, detail=f"{worker.host} pid {worker.pid}"
        )
        return worker

    def lose(self, worker: WorkerRecord, reason: str) -> None:
        """Drop a worker and take back its leases: re-queue those with retries left, fail the others."""
        with self.coordinator.lock:
            if self.fleet.get(worker.worker_id) is not worker:
                return
            self.fleet.remove(worker.worker_id)
            leases = list(worker.leases.values())
            worker.leases.clear()
        self.lost_total += 1
        self._drop_pull(worker)
        # Each goes back to the front of its level: reversed keeps their original order.
        requeued = sum(self._take_back(record, worker, f"was lost ({reason})") for record in reversed(leases))
        logger.warning(
            "worker %s lost (%s): %d tasks re-queued, %d failed",
            worker.worker_id,
            reason,
            requeued,
            len(leases) - requeued,
        )
        self._fleet_changed()
        self.schedule()

    def deregister(self, worker: WorkerRecord, returned: list[str]) -> None:
        """A draining worker leaves: tasks it hands back are re-queued without counting an attempt."""
        with self.coordinator.lock:
            self.fleet.remove(worker.worker_id)
            leases = dict(worker.leases)
            worker.leases.clear()
        self._drop_pull(worker)
        for task_id in reversed(returned):
            record = leases.pop(task_id, None)
            if record is not None and record.state == RUNNING and record.worker == worker.worker_id:
                record.attempts -= 1
                record.started_at = 0.0
                self.coordinator.requeue_front(record)
        for record in reversed(leases.values()):  # still running when it left: same as a loss
            self._take_back(record, worker, "left")
        logger.info("worker %s deregistered (%d tasks handed back)", worker.worker_id, len(returned))
        self.coordinator.events.publish(
            events_pb2.EVENT_KIND_WORKER_OFFLINE, worker_id=worker.worker_id, detail="drained"
        )
        self._fleet_changed()
        self.schedule()

    def _fleet_changed(self) -> None:
        self.coordinator.remote_task_names = frozenset(self.fleet.task_names())
        self._on_fleet_change()

    def _take_back(self, record: TaskRecord, worker: WorkerRecord, what_happened: str) -> bool:
        """Re-queue a task a worker held (True) if it has retries left, else fail it with WorkerLost.

        A prefetched task that never started goes back without counting an attempt.
        """
        if record.state != RUNNING or record.worker != worker.worker_id:
            return False  # already finished or moved on
        if record.held:
            record.attempts -= 1
            self.coordinator.requeue_front(record)
            return True
        if record.attempts < 1 + self._retries(record, worker):
            record.started_at = 0.0
            self.coordinator.requeue_front(record)
            return True
        self.coordinator.fail_running(
            record, WORKER_LOST, f"worker {worker.worker_id} {what_happened} while running the task"
        )
        return False

    def _retries(self, record: TaskRecord, worker: WorkerRecord) -> int:
        """Re-runs allowed after the first attempt: the submission's, else the task's registered default."""
        if record.spec.HasField("retries"):
            return record.spec.retries
        definition = worker.definitions.get(record.name) or self.fleet.definition(record.name)
        if definition is not None:
            return definition.retries
        local = self.coordinator.registry.get(record.name)
        return local.options.retries if local is not None else 0

    def pipe_closed(self, pipe_id: int) -> None:
        """A connection dropped: its workers are lost at once (no need to wait for the heartbeat timeout)."""
        for worker in self.fleet.on_pipe(pipe_id):
            self.lose(worker, "connection dropped")

    def _reap_silent_workers(self) -> None:
        now = self.coordinator.clock()
        for worker in self.fleet:
            if now - worker.last_seen > self.heartbeat_timeout:
                self.lose(worker, f"no heartbeat for {now - worker.last_seen:.1f} s")
        self._reaper = self._loop.call_later(self.heartbeat_interval, self._reap_silent_workers)

    # ---------------------------------------------------------------------------------------- pulls

    def pull(self, worker: WorkerRecord, request: Request, hold: float, correlation_id: int) -> None:
        """A worker asks for work: answer now if there is some, else hold the request up to ``hold``."""
        if worker.pull is not None:
            self._answer(worker, [])  # a newer request replaces an older one
        worker.pull = request
        worker.pull_correlation = correlation_id
        hold = max(0.05, min(hold, self.heartbeat_interval))
        worker.pull_timer = self._loop.call_later(hold, self._expire_pull, worker, request)
        self.schedule()

    def cancel_running(self, record: TaskRecord) -> bool:
        """Ask the worker running a task to stop it (on its next reply); False if no worker holds it."""
        worker = self.fleet.get(record.worker)
        if worker is None or record.task_id not in worker.leases:
            return False
        worker.cancels.add(record.task_id)
        if worker.pull is not None:
            self._answer(worker, [])  # deliver the order now rather than at the next heartbeat
        return True

    def take_cancels(self, worker: WorkerRecord) -> list[str]:
        """The stop orders for a worker that are still relevant (its leases), cleared once taken."""
        orders = [task_id for task_id in worker.cancels if task_id in worker.leases]
        worker.cancels.clear()
        return orders

    def request_drain(self, worker_id: str, timeout: float) -> bool:
        """Ask a worker to drain (operator action): nothing new goes to it, and it is told at once.

        The order rides on the answer to its pending work request, or on the next heartbeat reply;
        the worker finishes what it runs within ``timeout``, hands back the rest and deregisters.
        Returns False for an unknown worker.
        """
        worker = self.fleet.get(worker_id)
        if worker is None:
            return False
        worker.draining = True
        worker.drain_order = timeout
        logger.info("asked worker %s to drain within %.1f s", worker_id, timeout)
        if worker.pull is not None:
            self._answer(worker, [])
        return True

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
                record.attempts -= 1
                record.started_at = 0.0
                self.coordinator.requeue_front(record)
        logger.warning(
            "worker %s never received %d dispatched tasks (a lost reply); re-queued", worker.worker_id, len(missing)
        )

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
        if worker.drain_order is not None:
            envelope.dispatch.drain.timeout = worker.drain_order
        tasks = envelope.dispatch.tasks
        for record in records:
            record.spec.attempt = record.attempts
            tasks.append(record.spec)
        envelope.dispatch.SetInParent()
        request.reply(encode_frame(envelope))

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
            while True:
                ready = [w for w in self.fleet if w.pull is not None and not w.draining and w.room > 0]
                if not ready:
                    break
                names: frozenset[str] = frozenset().union(*(w.task_names for w in ready))
                record = coordinator.queue.pop(accept=lambda r, names=names: r.name in names)  # type: ignore[misc]
                if record is None:
                    break
                if record.spec.expires and now > record.spec.expires:
                    record.state = CANCELLED
                    expired.append(record)
                    continue
                worker = min(
                    (w for w in ready if record.name in w.task_names),
                    key=lambda w: (len(w.leases) / w.capacity, len(w.leases)),
                )
                # Beyond its free slots the task waits in the worker's prefetch queue: held (shown
                # PENDING) until the worker reports that it started.
                record.held = len(worker.leases) >= worker.capacity
                record.state = RUNNING
                record.attempts += 1
                record.worker = worker.worker_id
                record.started_at = 0.0 if record.held else now
                worker.leases[record.task_id] = record
                if coordinator.journal is not None:
                    coordinator.journal.running(record, self._retries(record, worker))
                assigned.setdefault(worker.worker_id, []).append(record)
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

    # -------------------------------------------------------------------------------------- results

    def started(self, worker: WorkerRecord, task_ids: Iterable[str]) -> None:
        """Prefetched tasks the worker started: RUNNING from now on, for clients too."""
        now = self.coordinator.clock()
        for task_id in task_ids:
            record = worker.leases.get(task_id)
            if record is not None and record.held:
                record.held = False
                record.started_at = now
                if self.coordinator.journal is not None:
                    self.coordinator.journal.running(record)
                self.coordinator.events.publish_task(record)

    def results(self, worker: WorkerRecord, outcomes: list[worker_pb2.TaskOutcome]) -> None:
        """Finish the tasks a worker reports, each only against its lease."""
        for outcome in outcomes:
            record = worker.leases.get(outcome.task_id)
            if record is None or record.attempts != outcome.attempt or record.state != RUNNING:
                logger.debug("ignored a stale result for task %s from %s", outcome.task_id, worker.worker_id)
                continue
            with self.coordinator.lock:
                del worker.leases[outcome.task_id]
            if outcome.started_at:
                record.started_at = outcome.started_at
            state = outcome.state
            if state == SUCCESS:
                worker.processed += 1
                record.result = outcome.result
                self.coordinator.finish_remote(record, SUCCESS)
            elif state == CANCELLED:
                worker.failed += 1
                record.error = outcome.error
                self.coordinator.finish_remote(record, CANCELLED)
            else:
                worker.failed += 1
                retry_delay = outcome.retry_delay if outcome.retry_requested else None
                self.coordinator.retry_or_fail(record, outcome.error, retry_delay)
        self.schedule()

    def close(self) -> None:
        """Stop the liveness checks and release held work requests."""
        self._reaper.cancel()
        for worker in self.fleet:
            self._drop_pull(worker)
