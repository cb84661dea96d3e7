"""Operator queries and actions of the client: what the CLI, the web dashboard and ``fastworker-top`` read and do.

Kept apart from task submission (``_async.py``); :class:`~fastworker.client.Client` inherits them.
Reads return plain dicts and lists (ready for JSON) or the client's dataclasses; nothing here exposes
protobuf types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastworker.client._idargs import id_arg
from fastworker.client.errors import PayloadError
from fastworker.client.limits import UNSET, Rate, TaskLimits, Unset, check_concurrency
from fastworker.client.models import Priority, TaskDetail, TaskPage, TaskState, task_info_from_wire
from fastworker.protocol.payload import decode_arguments
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.protocol.v1 import admin_pb2, task_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

#: Largest value of a uint32 wire field (a page's offset and limit).
_UINT32_MAX = 2**32 - 1


class AdminMethods:
    """The admin API; subclasses provide the transport (``_request``) and the pickle setting."""

    allow_pickle: bool

    async def _request(self, build: Callable[[Envelope], None], *, task_id: str = "") -> Envelope:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ reads

    async def stats(self) -> dict[str, Any]:
        """Counters since the control plane started (submitted, succeeded, queued, throughput, ...).

        ``history`` lists ``{"at", "succeeded", "failed"}`` per second over the last two minutes,
        oldest first: the data behind throughput and failure-rate charts.
        """
        reply = await self._request(lambda envelope: envelope.stats.SetInParent())
        return message_to_dict(reply.stats_reply)

    async def queues(self) -> list[dict[str, Any]]:
        """Depth, oldest age and paused flag per named queue and priority level.

        One entry per queue and level: ``{"queue", "priority", "depth", "oldest_age", "paused",
        "servers"}``, critical first within a queue: ``"default"`` (always), then the other queues
        something serves, then the unserved ones tasks wait in, each group by name (at most 1,000
        queues: unserved ones beyond that are left out). ``servers`` counts the
        subworkers serving it plus one for the control plane's own slots (0: its tasks wait for a
        worker that serves it; None from a control plane that predates named queues). Pausing is
        per level, across every queue.
        """
        reply = await self._request(lambda envelope: envelope.queues.SetInParent())
        return [
            {
                "queue": q.queue or DEFAULT_QUEUE,
                "priority": Priority.from_wire(q.priority).value,
                "depth": q.depth,
                "oldest_age": q.oldest_age,
                "paused": q.paused,
                "servers": q.servers if q.queue else None,  # None: a control plane too old to say
            }
            for q in reply.queues_reply.queues
        ]

    async def workers(self) -> list[dict[str, Any]]:
        """The connected subworkers (id, host, pid, capacity, in flight, processed, failed, RSS, ...)."""
        reply = await self._request(lambda envelope: envelope.workers.SetInParent())
        return [message_to_dict(worker) for worker in reply.workers_reply.workers]

    async def tasks(self) -> list[dict[str, Any]]:
        """The registered task names with their default options."""
        reply = await self._request(lambda envelope: envelope.registered_tasks.SetInParent())
        tasks = []
        for definition in reply.registered_tasks_reply.tasks:
            entry = message_to_dict(definition)
            entry["priority"] = Priority.from_wire(definition.priority).value
            entry["queue"] = definition.queue or DEFAULT_QUEUE  # the queue it waits in (the wire leaves "default" out)
            tasks.append(entry)
        return tasks

    async def list_tasks(
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
        """Live tasks and finished ones still in the result cache, newest first, filtered and paged.

        Args:
            states: Keep only these states (any if empty).
            name: Keep only this task name.
            priority: Keep only this level.
            worker: Keep only tasks run by this worker id (``"controlplane"`` for local runs).
            search: Keep only tasks whose id starts with this or whose name contains it (case-insensitive).
            offset: Matches to skip.
            limit: Page size; the control plane caps it at 500 (the page's ``limit`` is the size applied).

        Results are not included (see :meth:`task_detail`); errors are.

        Raises:
            ValueError: an unknown state or priority name, or a negative offset or limit.
        """
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit cannot be negative")
        wire_states = [TaskState(str(s).upper()).to_wire() for s in states]
        wire_priority = Priority.parse(priority).to_wire() if priority else task_pb2.PRIORITY_UNSPECIFIED

        def build(envelope: Envelope) -> None:
            body = envelope.tasks
            body.states.extend(wire_states)
            body.name = name
            body.priority = wire_priority
            body.worker = worker
            body.text = search
            # uint32 on the wire: a larger offset is past every task anyway (an empty page)
            body.offset = min(offset, _UINT32_MAX)
            body.limit = min(limit, _UINT32_MAX)
            body.SetInParent()

        reply = await self._request(build)
        page = reply.tasks_reply
        return TaskPage(
            tasks=[task_info_from_wire(info, allow_pickle=self.allow_pickle) for info in page.tasks],
            total=page.total,
            offset=offset,
            limit=page.limit or limit,  # as applied: the control plane caps it
        )

    async def task_detail(self, task_id: str) -> TaskDetail:
        """Everything about one task, its arguments included.

        Raises:
            TaskNotFound: the control plane does not know the id.
        """
        task_id = id_arg(task_id)

        def build(envelope: Envelope) -> None:
            envelope.task_detail.task_id = task_id

        reply = await self._request(build, task_id=task_id)
        wire = reply.task_detail_reply.task
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        arguments_error = None
        try:
            decoded_args, kwargs = decode_arguments(wire.arguments, allow_pickle=self.allow_pickle)
            args = list(decoded_args)
        except PayloadError as exc:
            arguments_error = str(exc)
        return TaskDetail(
            info=task_info_from_wire(wire, allow_pickle=self.allow_pickle),
            args=args,
            kwargs=kwargs,
            arguments_error=arguments_error,
            eta=wire.eta or None,
            expires=wire.expires or None,  # (0 from an older control plane, which does not send it)
        )

    # ---------------------------------------------------------------------------------------- actions

    async def purge(self, priority: Priority | str) -> int:
        """Cancel every task waiting at one level; returns how many. Running tasks are not touched."""
        level = Priority.parse(priority).to_wire()

        def build(envelope: Envelope) -> None:
            envelope.purge.priority = level

        reply = await self._request(build)
        return reply.purge_reply.purged

    async def pause(self, priority: Priority | str) -> bool:
        """Stop dispatching one level (its tasks wait, new ones are still accepted); returns True (paused)."""
        return await self._set_paused(priority, True)

    async def resume(self, priority: Priority | str) -> bool:
        """Dispatch a paused level again; returns False (no longer paused)."""
        return await self._set_paused(priority, False)

    async def _set_paused(self, priority: Priority | str, paused: bool) -> bool:
        level = Priority.parse(priority).to_wire()

        def build(envelope: Envelope) -> None:
            envelope.pause.priority = level
            envelope.pause.paused = paused

        reply = await self._request(build)
        return reply.pause_reply.paused

    async def limits(self) -> list[TaskLimits]:
        """The task names with flow-control limits: the limits, running and waiting counts, the current rate."""
        reply = await self._request(lambda envelope: envelope.limits.SetInParent())
        return [limits_from_wire(info) for info in reply.limits_reply.limits]

    async def set_limits(
        self,
        name: str,
        *,
        rate_limit: str | None | Unset = UNSET,
        max_concurrency: int | None | Unset = UNSET,
        clear: bool = False,
    ) -> TaskLimits:
        """Change a task name's fleet-wide limits at run time; returns them as they now hold.

        ``rate_limit`` (``"N/s"``, ``"N/m"``, ``"N/h"``) and ``max_concurrency``: None removes that
        limit, omitted keeps its current value. ``clear``: drop the run-time values first, so the
        task's definition applies again. Takes effect at once (docs/flow-control.md).

        Raises:
            ValueError: a malformed rate or concurrency (nothing was sent).
            UnknownTask: no connected process defines the name.
        """
        rate = None if isinstance(rate_limit, Unset) or rate_limit is None else Rate.parse(rate_limit)
        if not isinstance(max_concurrency, Unset) and max_concurrency is not None:
            check_concurrency(max_concurrency)

        def build(envelope: Envelope) -> None:
            body = envelope.set_limits
            body.name = name
            body.clear = clear
            if not isinstance(rate_limit, Unset):
                body.rate_limit = rate.text if rate is not None else ""
            if not isinstance(max_concurrency, Unset):
                body.max_concurrency = max_concurrency or 0

        reply = await self._request(build)
        return limits_from_wire(reply.set_limits_reply.limits)

    async def drain_worker(self, worker_id: str, *, timeout: float = 30.0) -> bool:
        """Ask a subworker to finish its running tasks within ``timeout`` seconds and leave.

        It takes nothing new at once; tasks it cannot finish in time are handed back and re-queued.
        Returns False if no worker has that id.
        """
        if timeout < 0:
            raise ValueError("timeout cannot be negative")

        def build(envelope: Envelope) -> None:
            envelope.drain.worker_id = worker_id
            envelope.drain.timeout = timeout

        reply = await self._request(build)
        return reply.drain_reply.draining


def limits_from_wire(info: admin_pb2.TaskLimits) -> TaskLimits:
    """The client's view of one name's limits."""
    return TaskLimits(
        name=info.name,
        rate_limit=info.rate_limit or None,
        max_concurrency=info.max_concurrency or None,
        running=info.running,
        waiting=info.waiting,
        current_rate=info.current_rate,
        burst=info.burst,
        overridden=info.overridden,
    )


def message_to_dict(message: Any) -> dict[str, Any]:
    """A protobuf message as a plain dict: numbers stay numbers, enums become their short names."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None:
            out[field.name] = [message_to_dict(v) for v in value] if field.is_repeated else message_to_dict(value)
        elif field.enum_type is not None:
            names = field.enum_type.values_by_number
            if field.is_repeated:
                out[field.name] = [_enum_name(names, v) for v in value]
            else:
                out[field.name] = _enum_name(names, value)
        else:
            out[field.name] = list(value) if field.is_repeated else value
    return out


def _enum_name(names: Mapping[int, Any], number: int) -> str | int:
    return names[number].name if number in names else number
