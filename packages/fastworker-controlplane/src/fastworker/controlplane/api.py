"""Maps client request envelopes onto coordinator calls and builds the replies: translation only, no sockets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from fastworker.client.limits import MAX_CONCURRENCY, UNSET, Rate, Unset
from fastworker.controlplane import browse
from fastworker.controlplane.coordinator import Coordinator, RequestRefused
from fastworker.controlplane.flow import Gate
from fastworker.controlplane.lograte import RateLimitedLog
from fastworker.controlplane.queue import LEVELS
from fastworker.controlplane.records import CANCELLED, LOCAL_WORKER_ID, RUNNING, TaskRecord
from fastworker.controlplane.resends import ResendGuard
from fastworker.controlplane.waits import MAX_WAIT
from fastworker.controlplane.workflows import workflow_state
from fastworker.protocol.errors import DecodeError, FrameTooLarge, IncompatibleProtocol
from fastworker.protocol.framing import DEFAULT_MAX_FRAME_SIZE, decode_frame, encode_frame, new_envelope
from fastworker.protocol.ids import shown_id
from fastworker.protocol.payload import payload_problem
from fastworker.protocol.v1 import admin_pb2, error_pb2, task_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope
from fastworker.protocol.v1.events_pb2 import Event

logger = logging.getLogger(__name__)

#: Sends one encoded reply frame to the requester; called exactly once per request (or never, on drop).
Reply = Callable[[bytes], None]
#: Most events one events request returns.
DEFAULT_EVENTS_LIMIT = 1000
#: Longest drain an operator may ask a worker for, in seconds.
MAX_DRAIN_TIMEOUT = 24 * 3600.0
#: Most task ids one status or wait request may name.
MAX_IDS_PER_REQUEST = 100_000
#: Bytes of a batch answer per task besides its id (field tags, lengths, state, the duplicate flag), at most.
ANSWER_BYTES_PER_TASK = 16
#: Bytes of a batch answer besides its outcomes (the envelope), at most.
FRAME_SLACK = 1024
#: How long a cancel of a task running on the control plane's own slots waits for it to stop, in
#: seconds, so that its reply says whether it did (a sync task stops at its next Python instruction).
CANCEL_GRACE = 2.0


def error_frame(code: error_pb2.ErrorCode.ValueType, message: str, correlation_id: int = 0) -> bytes:
    """An encoded Error reply."""
    envelope = new_envelope(correlation_id)
    envelope.error.code = code
    envelope.error.message = message
    return encode_frame(envelope)


def decode_request(data: bytes, max_size: int) -> Envelope | tuple[error_pb2.ErrorCode.ValueType, str]:
    """The request envelope in a frame, or the error code and message to refuse it with."""
    try:
        return decode_frame(data, max_size=max_size)
    except FrameTooLarge as exc:
        return error_pb2.ERROR_CODE_FRAME_TOO_LARGE, str(exc)
    except IncompatibleProtocol as exc:
        return error_pb2.ERROR_CODE_INCOMPATIBLE_VERSION, str(exc)
    except DecodeError as exc:
        return error_pb2.ERROR_CODE_PROTOCOL, str(exc)


#: Room kept in a task detail's frame for the envelope and its sealing, beyond the task's own fields.
DETAIL_FRAME_SLACK = 64 * 1024


#: Bytes a task's info takes in a reply beyond its result, error and progress payloads, at most (ids, name, times).
INFO_OVERHEAD = 1024


def _within_frame(records: list[TaskRecord], budget: int) -> tuple[list[TaskRecord], list[TaskRecord]]:
    """The leading records whose infos fit ``budget`` bytes together (the first always), and the rest.

    Counts the result and error payloads and :data:`INFO_OVERHEAD` per record (progress is small).
    """
    used = 0
    for index, record in enumerate(records):  # inline: it runs for every task a client waits for
        result, error = record.result, record.error
        used += INFO_OVERHEAD if result is None else INFO_OVERHEAD + len(result.data)
        if error is not None:
            used += len(error.message) + len(error.traceback)
        if used > budget and index > 0:
            return records[:index], records[index:]
    return records, []


class ClientApi:
    """Handles one decoded request at a time; replies at once, or later for waits."""

    def __init__(
        self, coordinator: Coordinator, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, instance_id: str = ""
    ) -> None:
        self.coordinator = coordinator
        self.max_frame_size = max_frame_size
        self._refusal_log = RateLimitedLog(logger)
        #: This control plane's instance id, to tell a request sent again after another instance's silence.
        self.instance_id = instance_id
        #: Answers to actions that act once, for their attempts sent again.
        self.resends = ResendGuard()
        self._handlers: dict[str, Callable[[Envelope, Reply], None]] = {
            "submit": self._submit,
            "submit_batch": self._submit_batch,
            "status": self._status,
            "wait": self._wait,
            "cancel": self._cancel,
            "retry": self._retry,
            "submit_workflow": self._submit_workflow,
            "workflow": self._workflow,
            "stats": self._stats,
            "queues": self._queues,
            "workers": self._workers,
            "registered_tasks": self._registered_tasks,
            "events": self._events,
            "tasks": self._tasks,
            "task_detail": self._task_detail,
            "purge": self._purge,
            "pause": self._pause,
            "drain": self._drain,
            "limits": self._limits,
            "set_limits": self._set_limits,
        }

    def handle(self, data: bytes, reply: Reply) -> None:
        """Decode one request frame and answer it; bad frames get a typed error and nothing else."""
        request = decode_request(data, self.max_frame_size)
        if isinstance(request, tuple):
            self._reject(reply, *request)
            return
        kind = request.WhichOneof("body")
        handler = self._handlers.get(kind or "")
        if handler is None:
            self._reject(reply, error_pb2.ERROR_CODE_PROTOCOL, f"{kind} is not a request this channel serves")
            return
        if kind is not None and self.resends.guards(request, kind):
            first = self.resends.admit(request, kind, reply)
            if first is None:
                return  # an attempt sent again: answered as the first one is
            reply = first
        try:
            handler(request, reply)
        except RequestRefused as exc:
            reply(error_frame(exc.code, exc.message, request.correlation_id))
        except Exception:
            logger.exception("internal error handling %s", kind)
            reply(error_frame(error_pb2.ERROR_CODE_INTERNAL, "internal error", request.correlation_id))

    def _reject(self, reply: Reply, code: error_pb2.ErrorCode.ValueType, message: str) -> None:
        self.coordinator.counters.rejected_frames += 1
        self._refusal_log.warning("refused a client frame: %s", message)
        reply(error_frame(code, message))

    def _send(self, reply: Reply, envelope: Envelope) -> None:
        try:
            frame = encode_frame(envelope, max_size=self.max_frame_size)
        except FrameTooLarge as exc:
            frame = error_frame(
                error_pb2.ERROR_CODE_FRAME_TOO_LARGE, f"reply too large: {exc}", envelope.correlation_id
            )
        reply(frame)

    def _after_disk(self, reply: Reply) -> Reply:
        """With a journal: ``reply`` held back until every change made so far is on disk (see ``journal``)."""
        journal = self.coordinator.journal
        assert journal is not None

        def durable_reply(frame: bytes) -> None:
            journal.after_durable(lambda: reply(frame))

        return durable_reply

    # ------------------------------------------------------------------------------------ submissions

    def _unvouched(self, request: Envelope) -> bool:
        """True for a request sent again after an unanswered attempt to another instance, without a journal here.

        This process then knows nothing of what that instance accepted: a submission the attempt
        carried may have started there before it stopped, and must not run a second time here.
        """
        resent_from = request.resent_from
        return bool(resent_from) and resent_from != self.instance_id and self.coordinator.journal is None

    @staticmethod
    def _outcome_unknown(what: str) -> RequestRefused:
        return RequestRefused(
            error_pb2.ERROR_CODE_OUTCOME_UNKNOWN,
            f"{what} was sent again after the control plane restarted, and it keeps no journal: the instance it"
            " first went to may have started it before it stopped, so it is not queued again here (look it up"
            " with status, or submit it again if it must run)",
        )

    def _argument_problem(self, spec: task_pb2.TaskSpec) -> str | None:
        """Why a task's arguments are refused (over the payload limit, or a codec not accepted here; logged), or None.

        Checked at the door: a task that would fail to run anyway must not sit in the queue (and in
        memory) until then. Clients check before sending; this catches those that do not.
        """
        problem = payload_problem(spec.arguments, allow_pickle=self.coordinator.allow_pickle, what="task arguments")
        if problem is None:
            return None
        self._refusal_log.warning("refused task %s (%s): %s", spec.task_id[:64], spec.name[:64], problem)
        return problem

    def _submit(self, request: Envelope, reply: Reply) -> None:
        # Raised without keeping the exception in a local: a frame -> exception -> traceback -> frame
        # cycle would hold the (large) request until the garbage collector happens to run.
        problem = self._argument_problem(request.submit.task)
        if problem is not None:
            self.coordinator.counters.rejected_frames += 1
            raise RequestRefused(error_pb2.ERROR_CODE_PAYLOAD, problem)
        if self._unvouched(request) and self.coordinator.find(request.submit.task.task_id) is None:
            raise self._outcome_unknown(f"task {request.submit.task.task_id}")
        journaled = self.coordinator.journal is not None
        if journaled:
            reply = self._after_disk(reply)
        record, duplicate = self.coordinator.submit(request.submit.task)
        wait = request.submit.wait
        if wait > 0 and not record.is_final:
            cid = request.correlation_id

            def answer(finished: list[TaskRecord], pending: list[str], missing: list[str]) -> None:
                self._send(reply, self._submit_reply(cid, record, duplicate))

            self.coordinator.wait([record.task_id], wait, answer)
            return
        self._send(reply, self._submit_reply(request.correlation_id, record, duplicate))

    @staticmethod
    def _submit_reply(correlation_id: int, record: TaskRecord, duplicate: bool) -> Envelope:
        envelope = new_envelope(correlation_id)
        body = envelope.submit_reply
        body.task_id = record.task_id
        body.state = record.visible_state  # type: ignore[assignment]
        body.duplicate = duplicate
        if record.is_final:
            record.fill_info(body.task)
        return envelope

    def _submit_batch(self, request: Envelope, reply: Reply) -> None:
        if self.coordinator.journal is not None:
            reply = self._after_disk(reply)
        envelope = new_envelope(request.correlation_id)
        envelope.submit_batch_reply.SetInParent()  # an empty batch still gets a (empty) reply body
        outcomes = envelope.submit_batch_reply.outcomes
        specs = request.submit_batch.tasks
        refusals = [
            None if problem is None else RequestRefused(error_pb2.ERROR_CODE_PAYLOAD, problem)
            for problem in map(self._argument_problem, specs)
        ]
        if any(refusals):
            self.coordinator.counters.rejected_frames += 1  # a frame, however many of its tasks were refused
        if self._unvouched(request):
            refusals = [
                self._outcome_unknown(f"task {spec.task_id}")
                if refused is None and self.coordinator.find(spec.task_id) is None
                else refused
                for spec, refused in zip(specs, refusals, strict=True)
            ]
        self._check_batch_answer_fits(request, specs, refusals)
        admitted = [spec for spec, refused in zip(specs, refusals, strict=True) if refused is None]
        admitted_results = iter(self.coordinator.submit_many(admitted))
        for spec, refused in zip(specs, refusals, strict=True):
            result = refused if refused is not None else next(admitted_results)
            outcome = outcomes.add()
            outcome.task_id = spec.task_id
            if isinstance(result, RequestRefused):
                outcome.error.code = result.code
                outcome.error.message = result.message
                continue
            record, duplicate = result
            accepted = outcome.accepted
            accepted.task_id = record.task_id
            accepted.state = record.visible_state  # type: ignore[assignment]
            accepted.duplicate = duplicate
        self._send(reply, envelope)

    def _check_batch_answer_fits(
        self, request: Envelope, specs: Sequence[task_pb2.TaskSpec], refusals: list[RequestRefused | None]
    ) -> None:
        """Refuse a whole batch whose answer could not fit one frame, before any of it is accepted.

        Accepted, its tasks would run while the sender got only "reply too large", with no ids: a
        sender that sends it again runs every one twice. (``Client`` splits its batches to fit.)
        """
        per_task = len(specs) * ANSWER_BYTES_PER_TASK + FRAME_SLACK
        if not any(refusals) and 2 * request.ByteSize() + per_task <= self.max_frame_size:
            return  # each id is in the request once and in the answer at most twice: it fits
        needed = FRAME_SLACK
        for spec, refused in zip(specs, refusals, strict=True):
            task_id = spec.task_id
            size = len(task_id) if task_id.isascii() else len(task_id.encode())
            # An accepted task's id is in its outcome twice; a refused one's once, with the message.
            needed += ANSWER_BYTES_PER_TASK + (2 * size if refused is None else size + 4 * len(refused.message))
        if needed > self.max_frame_size:
            raise RequestRefused(
                error_pb2.ERROR_CODE_FRAME_TOO_LARGE,
                f"a batch of {len(specs)} tasks, none accepted: its answer would not fit one frame of"
                f" {self.max_frame_size} bytes; send fewer per batch",
            )

    # ---------------------------------------------------------------------------------------- queries

    def _status(self, request: Envelope, reply: Reply) -> None:
        ids = request.status.task_ids
        self._check_ids(len(ids))
        envelope = new_envelope(request.correlation_id)
        body = envelope.status_reply
        body.SetInParent()
        for task_id in ids:
            record = self.coordinator.find(task_id)
            if record is None:
                body.missing.append(task_id)
            else:
                record.fill_info(body.tasks.add())
        self._send(reply, envelope)

    def _wait(self, request: Envelope, reply: Reply) -> None:
        if self.coordinator.journal is not None:
            reply = self._after_disk(reply)  # a result a client has read survives a crash
        ids = list(request.wait.task_ids)
        self._check_ids(len(ids))
        cid = request.correlation_id

        def answer(finished: list[TaskRecord], pending: list[str], missing: list[str]) -> None:
            envelope = new_envelope(cid)
            body = envelope.wait_reply
            body.SetInParent()
            included, deferred = _within_frame(finished, self.max_frame_size - DETAIL_FRAME_SLACK)
            for record in included:
                record.fill_info(body.finished.add())
            # Final tasks that would push the reply over the frame limit are listed as pending: the
            # client asks again for them at once, and gets them in the next replies.
            body.pending.extend(record.task_id for record in deferred)
            body.pending.extend(pending)
            body.missing.extend(missing)
            self._send(reply, envelope)

        self.coordinator.wait(ids, request.wait.timeout, answer, all_final=request.wait.all_final)

    @staticmethod
    def _check_ids(count: int) -> None:
        if count > MAX_IDS_PER_REQUEST:
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST, f"at most {MAX_IDS_PER_REQUEST} task ids per request"
            )

    def _cancel(self, request: Envelope, reply: Reply) -> None:
        if self.coordinator.journal is not None:
            reply = self._after_disk(reply)
        task_id = request.cancel.task_id
        cancelled, previous = self.coordinator.cancel(task_id)
        cid = request.correlation_id

        def answer(cancelled: bool, previous: int = previous) -> None:
            envelope = new_envelope(cid)
            envelope.cancel_reply.cancelled = cancelled
            envelope.cancel_reply.previous_state = previous  # type: ignore[assignment]
            self._send(reply, envelope)

        if not (cancelled and self.coordinator.stopping([task_id])):
            answer(cancelled)
            return

        def stopped(finished: list[TaskRecord], pending: list[str], missing: list[str]) -> None:
            if any(r.state == CANCELLED for r in finished):
                answer(True)
            elif self.coordinator.abandon_local_run(task_id):
                answer(True)
            elif self._stopped_or_stopping(task_id):
                answer(True)
            else:  # it ended on its own before the stop reached it: not cancelled, and how it ended
                record = self.coordinator.find(task_id)
                answer(False, record.state if record is not None and record.is_final else previous)

        # Stopping a running task takes its thread, the loop or its subworker a moment: the reply
        # waits for it (at most CANCEL_GRACE), so that a status read after it shows CANCELLED (a
        # local thread still inside a long call is ended as CANCELLED all the same).
        self.coordinator.wait([task_id], CANCEL_GRACE, stopped)

    def _stopped_or_stopping(self, task_id: str) -> bool:
        """After a cancel's grace: did the running task stop (CANCELLED), or does its stop order still stand?

        On a subworker that has not confirmed within the grace (a task that ignores its stop, a stalled
        worker, a slow link) the order stands, and the task ends CANCELLED now, as the reply says:
        whatever the run returns later is dropped. Otherwise it ended on its own first (SUCCESS or
        FAILURE): not cancelled.
        """
        record = self.coordinator.find(task_id)
        if record is None:
            return False
        if record.state == CANCELLED:
            return True
        dispatcher = self.coordinator.dispatcher
        return (
            record.state == RUNNING
            and record.worker != LOCAL_WORKER_ID
            and dispatcher is not None
            and dispatcher.abandon_unconfirmed_stop(record)
        )

    def _submit_workflow(self, request: Envelope, reply: Reply) -> None:
        body = request.submit_workflow
        for spec in body.steps:
            problem = self._argument_problem(spec)
            if problem is not None:
                self.coordinator.counters.rejected_frames += 1
                raise RequestRefused(error_pb2.ERROR_CODE_PAYLOAD, problem)
        if self._unvouched(request) and body.workflow_id not in self.coordinator.graph.workflows:
            raise self._outcome_unknown(f"workflow {body.workflow_id}")
        if self.coordinator.journal is not None:
            reply = self._after_disk(reply)
        task_ids, duplicate = self.coordinator.submit_workflow(body.workflow_id, body.steps)
        envelope = new_envelope(request.correlation_id)
        envelope.submit_workflow_reply.workflow_id = body.workflow_id
        envelope.submit_workflow_reply.task_ids.extend(task_ids)
        envelope.submit_workflow_reply.duplicate = duplicate
        self._send(reply, envelope)

    def _workflow(self, request: Envelope, reply: Reply) -> None:
        body = request.workflow
        if not body.cancel:
            self._workflow_reply(request, reply, 0)
            return
        if self.coordinator.journal is not None:
            reply = self._after_disk(reply)
        cancelled = self.coordinator.cancel_workflow(body.workflow_id)
        workflow, _ = self.coordinator.workflow(body.workflow_id)
        stopping = self.coordinator.stopping(workflow.step_ids)
        if not stopping:
            self._workflow_reply(request, reply, cancelled)
            return
        # Running steps take a moment to stop, here or on their subworkers (as for a plain cancel):
        # the reply waits for them, at most CANCEL_GRACE, so that it shows them stopped.
        deadline = time.monotonic() + CANCEL_GRACE  # a span of time: the wall clock may step

        def stopped(finished: list[TaskRecord], pending: list[str], missing: list[str]) -> None:
            left = deadline - time.monotonic()
            if pending and left > 0:
                self.coordinator.wait(pending, left, stopped)
            else:
                for task_id in pending:
                    self.coordinator.abandon_local_run(task_id)
                # Counted as cancelled when ordered to stop; one that ended on its own first was not.
                ended_first = sum(1 for task_id in stopping if not self._stopped_or_stopping(task_id))
                self._workflow_reply(request, reply, cancelled - ended_first)

        self.coordinator.wait(stopping, CANCEL_GRACE, stopped)

    def _workflow_reply(self, request: Envelope, reply: Reply, cancelled: int) -> None:
        body = request.workflow
        workflow, steps = self.coordinator.workflow(body.workflow_id)
        envelope = new_envelope(request.correlation_id)
        info = envelope.workflow_reply.workflow
        info.workflow_id = workflow.workflow_id
        info.created_at = workflow.created_at
        forgotten = [
            workflow.ended_badly[task_id]
            for task_id, step in zip(workflow.step_ids, steps, strict=True)
            if step is None and task_id in workflow.ended_badly
        ]
        info.state = workflow_state(iter(steps), forgotten)  # type: ignore[assignment]
        info.output_ids.extend(workflow.output_ids)
        info.output_is_list = workflow.output_is_list
        for task_id, step in zip(workflow.step_ids, steps, strict=True):
            if step is None:
                info.steps.add(task_id=task_id)  # no longer known: its id only
            else:
                step.fill_info(info.steps.add())
        envelope.workflow_reply.cancelled = cancelled
        self._send(reply, envelope)

    def _retry(self, request: Envelope, reply: Reply) -> None:
        if self.coordinator.journal is not None:
            reply = self._after_disk(reply)
        record = self.coordinator.retry(request.retry.task_id)
        envelope = new_envelope(request.correlation_id)
        envelope.retry_reply.state = record.state  # type: ignore[assignment]
        self._send(reply, envelope)

    def _stats(self, request: Envelope, reply: Reply) -> None:
        c = self.coordinator
        envelope = new_envelope(request.correlation_id)
        s = envelope.stats_reply
        s.submitted = c.counters.submitted
        s.succeeded = c.counters.succeeded
        s.failed = c.counters.failed
        s.cancelled = c.counters.cancelled
        s.retried = c.counters.retried
        s.queued = len(c.queue)
        s.scheduled = c.scheduled_count
        s.running = c.running_total
        s.workers = len(c.dispatcher.fleet) if c.dispatcher is not None else 0
        s.cache_size = len(c.cache)
        s.cache_hits = c.cache.hits
        s.cache_misses = c.cache.misses
        s.uptime = c.clock() - c.started_at
        now = c.clock()
        s.throughput = c.history.throughput(now)
        s.rejected_frames = c.counters.rejected_frames
        s.executed_locally = c.counters.executed_locally
        s.auth_failures = c.counters.auth_failures
        s.late_outcomes = c.counters.late_outcomes
        s.duplicate_worker_ids = c.counters.duplicate_worker_ids
        s.connections_refused = c.counters.connections_refused
        s.connections_idle_closed = c.counters.connections_idle_closed
        s.connections_dropped_unread = c.counters.connections_dropped_unread
        s.workers_lost = c.counters.workers_lost
        for second, succeeded, failed in c.history.per_second(now):
            s.history.add(at=second, succeeded=succeeded, failed=failed)
        self._send(reply, envelope)

    def _queues(self, request: Envelope, reply: Reply) -> None:
        c = self.coordinator
        now = c.clock()
        envelope = new_envelope(request.correlation_id)
        body = envelope.queues_reply
        for level in c.named_queues(now):
            info = body.queues.add()
            info.queue = level.queue
            info.priority = level.level  # type: ignore[assignment]
            info.depth = level.depth
            info.oldest_age = level.oldest_age
            info.paused = level.paused
            info.servers = level.servers
        body.scheduled = c.scheduled_count
        body.running = c.running_total
        body.max_queue = c.max_queue
        self._send(reply, envelope)

    def _workers(self, request: Envelope, reply: Reply) -> None:
        envelope = new_envelope(request.correlation_id)
        body = envelope.workers_reply
        body.SetInParent()
        dispatcher = self.coordinator.dispatcher
        for worker in dispatcher.fleet if dispatcher is not None else ():
            info = body.workers.add()
            info.worker_id = worker.worker_id
            info.host = worker.host
            info.pid = worker.pid
            info.capacity = worker.capacity
            info.in_flight = len(worker.leases)
            info.processed = worker.processed
            info.failed = worker.failed
            info.rss_bytes = worker.rss_bytes
            info.last_heartbeat = worker.last_seen
            info.draining = worker.draining
            info.task_names.extend(sorted(worker.task_names))
            info.queues.extend(sorted(worker.queues))
        self._send(reply, envelope)

    def _events(self, request: Envelope, reply: Reply) -> None:
        body = request.events
        self._check_ids(len(body.task_ids))
        cid = request.correlation_id

        def answer(events: list[Event], last_sequence: int, gap: bool) -> None:
            envelope = new_envelope(cid)
            out = envelope.events_reply
            out.events.extend(events)
            out.last_sequence = last_sequence
            out.gap = gap
            self._send(reply, envelope)

        self.coordinator.events.wait(
            body.after_sequence,
            max(0.0, min(body.timeout, MAX_WAIT)),
            answer,
            limit=min(body.limit or DEFAULT_EVENTS_LIMIT, DEFAULT_EVENTS_LIMIT),
            task_ids=tuple(body.task_ids),
        )

    def _registered_tasks(self, request: Envelope, reply: Reply) -> None:
        envelope = new_envelope(request.correlation_id)
        definitions = {d.name: d for d in self.coordinator.registry.definitions()}
        dispatcher = self.coordinator.dispatcher
        for name in sorted(self.coordinator.remote_task_names - definitions.keys()):
            definition = dispatcher.fleet.definition(name) if dispatcher is not None else None
            if definition is not None:
                definitions[name] = definition
        envelope.registered_tasks_reply.SetInParent()
        envelope.registered_tasks_reply.tasks.extend(definitions[name] for name in sorted(definitions))
        self._send(reply, envelope)

    # ------------------------------------------------------------------------------- operator queries

    def _tasks(self, request: Envelope, reply: Reply) -> None:
        body = request.tasks
        c = self.coordinator
        now = c.clock()
        records = browse.known_records(c.active.values(), c.cache, now - c.cache.ttl)
        found, total = browse.page(records, browse.TaskFilter.from_request(body), body.offset, body.limit)
        envelope = new_envelope(request.correlation_id)
        out = envelope.tasks_reply
        out.total = total
        out.limit = browse.page_size(body.limit)  # what paging by it must step by
        for record in found:
            record.fill_info(out.tasks.add(), with_result=False, brief=True)
        self._send(reply, envelope)

    def _task_detail(self, request: Envelope, reply: Reply) -> None:
        task_id = request.task_detail.task_id
        c = self.coordinator
        record = c.active.get(task_id) or c.cache.peek(task_id, c.clock())
        if record is None:
            raise RequestRefused(error_pb2.ERROR_CODE_TASK_NOT_FOUND, f"task {shown_id(task_id)} is not known")
        envelope = new_envelope(request.correlation_id)
        info = envelope.task_detail_reply.task
        record.fill_info(info, with_arguments=True)
        info.eta = record.eta
        info.expires = record.expires
        if info.HasField("result") and envelope.ByteSize() > self.max_frame_size - DETAIL_FRAME_SLACK:
            # Arguments and a result each within the payload bound may not fit one frame together: the
            # result is left out (``status`` reads it alone), rather than the whole detail refused.
            info.ClearField("result")
        self._send(reply, envelope)

    # ------------------------------------------------------------------------------- operator actions

    def _purge(self, request: Envelope, reply: Reply) -> None:
        if self.coordinator.journal is not None:
            reply = self._after_disk(reply)
        level = self._level(request.purge.priority)
        envelope = new_envelope(request.correlation_id)
        envelope.purge_reply.purged = self.coordinator.purge(level)
        self._send(reply, envelope)

    def _pause(self, request: Envelope, reply: Reply) -> None:
        if self.coordinator.journal is not None:
            reply = self._after_disk(reply)
        level = self._level(request.pause.priority)
        envelope = new_envelope(request.correlation_id)
        envelope.pause_reply.paused = self.coordinator.set_paused(level, request.pause.paused)
        self._send(reply, envelope)

    def _drain(self, request: Envelope, reply: Reply) -> None:
        body = request.drain
        if not body.worker_id:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, "drain needs a worker id")
        if not 0 <= body.timeout <= MAX_DRAIN_TIMEOUT:
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST, f"drain timeout must be 0..{MAX_DRAIN_TIMEOUT:g} seconds"
            )
        dispatcher = self.coordinator.dispatcher
        draining = dispatcher is not None and dispatcher.request_drain(body.worker_id, body.timeout or 30.0)
        envelope = new_envelope(request.correlation_id)
        envelope.drain_reply.draining = draining
        self._send(reply, envelope)

    def _limits(self, request: Envelope, reply: Reply) -> None:
        envelope = new_envelope(request.correlation_id)
        envelope.limits_reply.SetInParent()  # an empty list is still an answer
        coordinator = self.coordinator
        queue = coordinator.queue
        now = queue.now()
        with coordinator.lock:
            # Limited names, and names an operator unlimited at run time (their definition is overridden).
            for name in sorted(queue.gates.keys() | coordinator.overridden_limits()):
                info = envelope.limits_reply.limits.add()
                _fill_limits(info, name, queue.gates.get(name), now, coordinator.limits_overridden(name))
        self._send(reply, envelope)

    def _set_limits(self, request: Envelope, reply: Reply) -> None:
        body = request.set_limits
        if not body.name:
            raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, "set_limits needs a task name")
        rate: Rate | None | Unset = UNSET
        if body.HasField("rate_limit"):
            try:
                rate = Rate.parse(body.rate_limit) if body.rate_limit else None
            except ValueError as exc:
                raise RequestRefused(error_pb2.ERROR_CODE_INVALID_REQUEST, str(exc)) from None
        concurrency: int | None | Unset = UNSET
        if body.HasField("max_concurrency"):
            if body.max_concurrency > MAX_CONCURRENCY:
                raise RequestRefused(
                    error_pb2.ERROR_CODE_INVALID_REQUEST, f"max_concurrency must be at most {MAX_CONCURRENCY}"
                )
            concurrency = body.max_concurrency or None
        if self.coordinator.journal is not None:
            reply = self._after_disk(reply)
        gate = self.coordinator.set_limits(body.name, rate, concurrency, clear=body.clear)
        envelope = new_envelope(request.correlation_id)
        with self.coordinator.lock:
            _fill_limits(
                envelope.set_limits_reply.limits,
                body.name,
                gate,
                self.coordinator.queue.now(),
                self.coordinator.limits_overridden(body.name),
            )
        self._send(reply, envelope)

    @staticmethod
    def _level(value: int) -> int:
        if value not in LEVELS:
            raise RequestRefused(
                error_pb2.ERROR_CODE_INVALID_REQUEST,
                "name a priority level: critical, high, normal or low",
            )
        return value


def _fill_limits(info: admin_pb2.TaskLimits, name: str, gate: Gate | None, now: float, overridden: bool) -> None:
    """Write one name's limits and what they hold back (call under the coordinator's lock)."""
    info.name = name
    info.overridden = overridden
    if gate is None:
        return
    info.rate_limit = gate.rate.text if gate.rate is not None else ""
    info.max_concurrency = gate.max_concurrency or 0
    info.running = gate.running
    info.waiting = len(gate.waiting)
    info.current_rate = gate.current_rate(now)
    info.burst = gate.rate.burst if gate.rate is not None else 0
