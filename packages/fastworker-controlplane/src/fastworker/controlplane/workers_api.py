"""Maps subworker envelopes on the dispatch channel onto the dispatcher: translation only, no sockets."""

from __future__ import annotations

import logging

from fastworker.controlplane.api import decode_request, error_frame
from fastworker.controlplane.coordinator import Coordinator
from fastworker.controlplane.dispatcher import Dispatcher, WorkerIdHeld, WorkerIdInUse
from fastworker.controlplane.fleet import WorkerRecord
from fastworker.controlplane.lograte import RateLimitedLog
from fastworker.controlplane.periodic import schedule_problem
from fastworker.controlplane.replyserver import Request
from fastworker.protocol.framing import encode_frame, new_envelope
from fastworker.protocol.ids import worker_id_problem
from fastworker.protocol.queues import MAX_QUEUES, QueueNameError, check_queue_name
from fastworker.protocol.v1 import error_pb2, worker_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

logger = logging.getLogger(__name__)


def _definitions_problem(body: worker_pb2.RegisterRequest) -> str | None:
    """Why a registration's task definitions or queues are unusable (refused before the worker joins), or None."""
    if len(body.queues) > MAX_QUEUES:
        return f"a worker may serve at most {MAX_QUEUES} queues, not {len(body.queues)}"
    try:
        for queue in body.queues:
            check_queue_name(queue)
    except QueueNameError as exc:
        return str(exc)
    for definition in body.tasks:
        name = definition.name
        if not name or len(name) > 200 or name != name.strip():
            return f"task name {name[:50]!r} must be 1 to 200 characters without surrounding whitespace"
        problem = schedule_problem(name, definition.every, definition.cron, definition.timezone)
        if problem is not None:
            return problem
        if definition.queue:
            try:
                check_queue_name(definition.queue)
            except QueueNameError as exc:
                return f"task {name!r}: {exc}"
    return None


class WorkerApi:
    """Handles one request from a subworker: register, work request, results, heartbeat, deregister."""

    def __init__(
        self,
        coordinator: Coordinator,
        dispatcher: Dispatcher,
        *,
        instance_id: str,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        max_frame_size: int,
    ) -> None:
        self.coordinator = coordinator
        self.dispatcher = dispatcher
        self.instance_id = instance_id
        self._refusal_log = RateLimitedLog(logger)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_frame_size = max_frame_size
        self._last_refusal_log = float("-inf")

    def handle(self, request: Request) -> None:
        """Decode and serve one dispatch-channel request; bad frames get a typed error and nothing else."""
        envelope = decode_request(request.data, self.max_frame_size)
        if isinstance(envelope, tuple):
            self._reject(request, *envelope)
            return
        kind = envelope.WhichOneof("body")
        try:
            if kind == "register":
                self._register(envelope, request)
            elif kind in ("work_request", "results", "heartbeat", "deregister"):
                self._from_worker(kind, envelope, request)
            else:
                self._reject(request, error_pb2.ERROR_CODE_PROTOCOL, f"{kind} is not a request this channel serves")
        except Exception:
            logger.exception("internal error handling %s from a worker", kind)
            request.reply(error_frame(error_pb2.ERROR_CODE_INTERNAL, "internal error", envelope.correlation_id))

    def _reject(self, request: Request, code: error_pb2.ErrorCode.ValueType, message: str) -> None:
        self.coordinator.counters.rejected_frames += 1
        self._refusal_log.warning("refused a worker frame: %s", message)
        request.reply(error_frame(code, message))

    def _register(self, envelope: Envelope, request: Request) -> None:
        body = envelope.register
        reply = new_envelope(envelope.correlation_id)
        answer = reply.register_reply
        answer.heartbeat_interval = self.heartbeat_interval
        answer.heartbeat_timeout = self.heartbeat_timeout
        answer.instance_id = self.instance_id
        answer.max_frame_size = self.max_frame_size  # the worker's outcomes come in frames that fit it
        if (problem := worker_id_problem(body.worker_id)) is not None:
            answer.accepted = False
            answer.final_refusal = True
            answer.reason = problem
            self._log_refusal(f"refused worker registration from pid {body.pid} on {body.host!r}: {problem}")
        elif not body.tasks:
            answer.accepted = False
            answer.reason = "a worker must register at least one task"
        elif (problem := _definitions_problem(body)) is not None:
            answer.accepted = False
            answer.final_refusal = True
            answer.reason = problem
            self._log_refusal(f"refused worker registration from pid {body.pid} on {body.host!r}: {problem}")
        else:
            try:
                _, answer.resumed, adopted = self.dispatcher.register(body, request.pipe_id)
                answer.adopted_task_ids.extend(adopted)
                if not answer.resumed:
                    answer.settled_task_ids.extend(self.dispatcher.settled(body))
                answer.accepted = True
            except WorkerIdInUse as exc:
                answer.accepted = False
                answer.id_in_use = True
                answer.reason = str(exc)
                self._log_refusal(f"refused worker registration from pid {body.pid} on {body.host!r}: {exc}")
            except WorkerIdHeld as exc:  # not final: the worker registers again, and is taken once the old one is lost
                answer.accepted = False
                answer.reason = str(exc)
                self._log_refusal(
                    f"deferred worker registration from pid {body.pid} on {body.host!r}: {exc}", logging.INFO
                )
        request.reply(encode_frame(reply))

    def _log_refusal(self, message: str, level: int = logging.ERROR) -> None:
        """Log a refused registration, at most once a second (a misconfigured fleet retries in a loop)."""
        now = self.dispatcher.monotonic()
        if now - self._last_refusal_log >= 1.0:
            self._last_refusal_log = now
            logger.log(level, message)

    def _from_worker(self, kind: str, envelope: Envelope, request: Request) -> None:
        worker_id = self._worker_id(kind, envelope)
        worker = self.dispatcher.fleet.get(worker_id)
        # A worker is its connection: a request under its id from another connection (an impostor, or
        # the worker itself after a reconnect) is told to register, which resumes the same process only.
        if worker is None or (request.pipe_id and worker.pipe_id and request.pipe_id != worker.pipe_id):
            request.reply(
                error_frame(
                    error_pb2.ERROR_CODE_NOT_REGISTERED,
                    f"worker {worker_id!r} is not registered with instance {self.instance_id}",
                    envelope.correlation_id,
                )
            )
            return
        self.dispatcher.heard(worker)
        if kind == "work_request":
            body = envelope.work_request
            worker.ask_prefetch(body.prefetch, self.dispatcher.max_worker_tasks)
            if body.outcomes:
                self.dispatcher.results(worker, list(body.outcomes))
            self.dispatcher.reconcile(worker, set(body.held_task_ids))
            self.dispatcher.pull(worker, request, body.hold, envelope.correlation_id, body.started_task_ids)
            return
        granted: list[str] | None = None
        if kind == "results":
            if envelope.results.progress:
                self.dispatcher.progress(worker, envelope.results.progress)
            self.dispatcher.results(worker, list(envelope.results.outcomes))
            if envelope.results.started_task_ids:
                # Claims of prefetched tasks: answered with those still leased to this worker.
                granted = self.dispatcher.started(worker, envelope.results.started_task_ids)
        elif kind == "heartbeat":
            self._heartbeat(worker, envelope)
        else:  # deregister
            self.dispatcher.deregister(worker, list(envelope.deregister.returned_task_ids))
        ack = new_envelope(envelope.correlation_id)
        if kind == "heartbeat":
            beat = ack.heartbeat
            beat.sender_id = self.instance_id
            beat.sent_at = self.coordinator.clock()
            beat.cancel_task_ids.extend(self.dispatcher.take_cancels(worker))
            if worker.drain_order is not None:
                beat.drain.timeout = worker.drain_order
        elif granted is not None:
            ack.dispatch.instance_id = self.instance_id
            ack.dispatch.granted_task_ids.extend(granted)
            ack.dispatch.SetInParent()
        else:
            ack.ack.SetInParent()
        frame = encode_frame(ack)
        journal = self.coordinator.journal
        if journal is not None and kind != "heartbeat":
            # The worker starts the tasks granted here, forgets the outcomes it reported, and leaves
            # the tasks it handed back: each only once it is written. (A heartbeat's answer acts on
            # nothing journaled: held while the disk refuses writes, it would have the fleet fence itself.)
            journal.when_written(lambda: request.reply(frame))
        else:
            request.reply(frame)

    @staticmethod
    def _worker_id(kind: str, envelope: Envelope) -> str:
        if kind == "work_request":
            return envelope.work_request.worker_id
        if kind == "results":
            return envelope.results.worker_id
        if kind == "heartbeat":
            return envelope.heartbeat.sender_id
        return envelope.deregister.worker_id

    def _heartbeat(self, worker: WorkerRecord, envelope: Envelope) -> None:
        beat = envelope.heartbeat
        worker.rss_bytes = beat.rss_bytes
        if beat.draining and not worker.draining:
            logger.info("worker %s is draining", worker.worker_id, extra={"worker_id": worker.worker_id})
            self.dispatcher.stop_dispatching(worker)
