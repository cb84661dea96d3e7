"""``EagerClient``: runs tasks in this process the moment they are submitted, with the client's API and no sockets.

For unit tests of code that submits tasks::

    async with EagerClient(task_modules=["myapp.tasks"]) as client:   # or EagerClient() for every imported task
        handle = await add.delay(1, 2)        # typed handles use it: it is the current client
        assert await handle.result() == 3
        assert await client.submit("add", 2, 3) == 5

What is the same as a real control plane: task names are checked (``UnknownTask``), arguments and
results go through the payload codec (``PayloadError``, and values come back as a client would
read them), exceptions become ``FAILURE`` with the remote-style traceback (``submit``/``result``
raise ``TaskFailed``), retries follow the task's ``retries``/``retry_on`` and ``Retry``, an
async task's time limits cancel it, ``current_task()`` and ``report_progress`` work in the task
(its ``worker_id`` is ``"eager"``), and a task id given twice runs once. Workflows
(``delay_workflow``, ``chain``/``group``/``chord``) and ``depends_on`` follow the same rules: the
steps are checked all or nothing, each gets its dependencies' results as the control plane would
pass them, and a step whose dependency did not succeed fails with ``DependencyFailed`` without
running; a dependency on an unknown task is refused at submission.

What differs, on purpose: everything runs at once and in order, inside ``delay``; there is no
queue, so ``priority`` and ``queue`` are only recorded, ``countdown``/``eta`` are checked but not
waited for (a task whose ``expires`` comes before them, or has passed, ends CANCELLED as ``Expired``), retries do not wait for their backoff, a sync task's time limits are not enforced
(it runs in the caller's thread), ``cancel`` and ``cancel_workflow`` find every task already
final, a workflow's steps run one after another in step order (a group's members too), and
results never expire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Unpack

from fastworker.client import _tracing as tracing
from fastworker.client import hooks
from fastworker.client._eagersync import EagerSyncBackend
from fastworker.client._requester import error_from_wire, wait_bound
from fastworker.client.context import TaskContext
from fastworker.client.errors import InvalidRequest, PayloadError, QueueFull, TaskFailed, TaskNotFound, UnknownTask
from fastworker.client.handles import event_loop_running, use_client, use_sync_client
from fastworker.client.models import CancelResult, Priority, TaskError, TaskInfo, TaskState
from fastworker.client.options import (
    BatchCall,
    BatchOptionArgs,
    SubmitOptionArgs,
    SubmitOptions,
    batch_calls,
    call_payload_error,
)
from fastworker.client.task import TaskFunction, TaskRegistry, default_registry
from fastworker.client.workflows import Workflow, WorkflowHandle, WorkflowInfo, plan_workflow, step_specs
from fastworker.controlplane.records import TaskRecord
from fastworker.controlplane.workflows import MAX_DEPENDENCIES, dependency_error, unreleased_retry_refusal
from fastworker.protocol.errors import FastworkerError
from fastworker.protocol.ids import new_task_id
from fastworker.protocol.payload import decode_arguments, decode_value, encode_arguments
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.protocol.v1 import error_pb2, task_pb2
from fastworker.worker.executor import Outcome, prepare, run_async_limited, run_sync
from fastworker.worker.loader import load_task_modules
from fastworker.worker.policy import options_policy
from fastworker.worker.progress import LatestProgress
from fastworker.worker.tasklog import log_outcome

__all__ = ["EagerClient"]

logger = logging.getLogger(__name__)

#: The ``TaskInfo.worker`` of tasks an EagerClient ran.
EAGER_WORKER = "eager"


@dataclass(frozen=True, slots=True)
class _RanWorkflow:
    """A workflow an EagerClient ran: its steps in step order, and how its result is made."""

    step_ids: tuple[str, ...]
    output_ids: tuple[str, ...]
    output_is_list: bool
    created_at: float


def _refused(message: str) -> FastworkerError:
    """The error a real client raises for a request the control plane refuses as invalid."""
    return error_from_wire(error_pb2.Error(code=error_pb2.ERROR_CODE_INVALID_REQUEST, message=message))


class EagerClient:
    """A stand-in for :class:`~fastworker.client.Client` that runs each task in-process when it is submitted.

    Args:
        registry: The tasks it can run; default: every task imported in this process
            (:data:`~fastworker.client.task.default_registry`).
        task_modules: Import these modules and run only their tasks (as a worker would); excludes registry.
        allow_pickle: Let arguments and results use pickle, as a client and control plane that opt in.

    Attributes:
        history: The final TaskInfo of every task run, in submission order (for assertions).
    """

    def __init__(
        self,
        registry: TaskRegistry | None = None,
        *,
        task_modules: Sequence[str] = (),
        allow_pickle: bool = False,
    ) -> None:
        if registry is not None and task_modules:
            raise ValueError("give registry or task_modules, not both")
        if task_modules:
            registry = load_task_modules(list(task_modules))
        self.registry = registry if registry is not None else default_registry
        self.allow_pickle = allow_pickle
        self.address = "eager://"
        self.history: list[TaskInfo] = []
        self._infos: dict[str, TaskInfo] = {}
        self._calls: dict[str, tuple[tuple[Any, ...], dict[str, Any], Priority | None]] = {}
        #: Tasks that never ran because a dependency did not succeed: their specs, to run them with
        #: their dependencies' results if they are retried once those succeeded.
        self._unreleased: dict[str, task_pb2.TaskSpec] = {}
        #: Each task's named queue (its submission's, else its definition's, else "default"), for its info.
        self._queues: dict[str, str] = {}
        self._workflows: dict[str, _RanWorkflow] = {}
        #: ``on_complete`` watchers not finished yet (held here: the loop keeps only weak references).
        self._watchers: set[asyncio.Task[None]] = set()
        self._scopes: list[AbstractContextManager[Any]] = []
        self._sync = EagerSyncBackend(self)

    @property
    def sync(self) -> EagerSyncBackend:
        """The blocking face, for sync code (``add.delay_sync(...)``): ``set_default_sync_client(eager.sync)``.

        A sync task runs in the calling thread with no event loop; an async one on a fresh loop.
        """
        return self._sync

    # ------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> EagerClient:
        """Make this the current client of the block, as ``async with Client()`` does."""
        scope = use_client(self)
        scope.__enter__()
        self._scopes.append(scope)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._scopes:
            self._scopes.pop().__exit__(None, None, None)

    async def connect(self) -> None:
        """Nothing to connect to."""

    async def aclose(self) -> None:
        """Nothing to close."""

    # ------------------------------------------------------------------------------------ submission

    async def delay(self, name: str, /, *args: Any, **kwargs: Any) -> str:
        """Run task ``name`` now; returns its id (the task is already final). Options as for ``Client.delay``."""
        options, kwargs = SubmitOptions.split(kwargs)
        return await self._send(name, args, kwargs, options)

    async def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> str:
        """Like delay, with arguments passed explicitly."""
        return await self._send(name, args, kwargs or {}, SubmitOptions(**options))

    async def _send(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: SubmitOptions) -> str:
        """Run one submission: the spec a real client would send, read back as the control plane reads it."""
        if self.registry.get(name) is None:
            raise UnknownTask(name)
        spec = self._spec(name, args, kwargs, options)
        if spec.task_id in self._infos:
            return spec.task_id  # a resubmitted id is not run twice
        self._check_dependencies(spec)
        await self._run_spec(spec)
        return spec.task_id

    def _spec(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: SubmitOptions
    ) -> task_pb2.TaskSpec:
        """The TaskSpec a real client would send (a fresh id unless the options give one).

        Raises:
            PayloadError: the arguments cannot be encoded.
        """
        spec = task_pb2.TaskSpec(name=name)
        spec.arguments.CopyFrom(encode_arguments(args, dict(kwargs), allow_pickle=self.allow_pickle))
        options.apply(spec)
        if hooks.REGISTERED.submit:
            hooks.call_submit(name, spec.task_id, args, kwargs, options)
        return spec

    def _check_dependencies(self, spec: task_pb2.TaskSpec) -> None:
        """Refuse a ``depends_on`` the control plane would refuse (the same errors a real client raises)."""
        ids = spec.dependencies.task_ids
        if len(ids) > MAX_DEPENDENCIES:
            raise _refused(f"at most {MAX_DEPENDENCIES} dependencies")
        if len(set(ids)) != len(ids) or spec.task_id in ids:
            raise _refused("depends_on must name other tasks, each once")
        for task_id in ids:
            if task_id not in self._infos:
                raise _refused(f"depends on unknown task {task_id!r}")

    async def _run_spec(self, spec: task_pb2.TaskSpec, workflow_id: str | None = None) -> None:
        """Run one accepted spec: fail it if a dependency did not succeed, else give it their results and run it."""
        tf = self.registry.get(spec.name)
        if tf is None:  # pragma: no cover - every caller checked the name
            raise UnknownTask(spec.name)
        task_id, payload = spec.task_id, spec.arguments
        level = Priority.from_wire(spec.priority) if spec.priority else None
        depends_on = tuple(spec.dependencies.task_ids)
        given_input = spec.dependencies.input
        dependencies = [self._infos[d] for d in depends_on]
        failed = next((info for info in dependencies if info.state is not TaskState.SUCCESS), None)
        if failed is None and given_input != task_pb2.DEPENDENCY_INPUT_NONE:
            results = [info.result for info in dependencies]
            given = results[0] if given_input == task_pb2.DEPENDENCY_INPUT_RESULT else results
            args, kwargs = decode_arguments(payload, allow_pickle=self.allow_pickle)
            payload = encode_arguments((given, *args), kwargs, allow_pickle=self.allow_pickle)
        decoded = prepare(tf, payload, allow_pickle=self.allow_pickle)
        if isinstance(decoded, Outcome):  # pragma: no cover - the payload was just encoded here
            raise RuntimeError(f"arguments of {spec.name!r} did not decode: {decoded.error}")
        call_args, call_kwargs = decoded
        self._calls[task_id] = (call_args, call_kwargs, level)
        self._queues[task_id] = spec.queue or tf.options.queue or DEFAULT_QUEUE  # recorded only: nothing waits
        if spec.expires and spec.expires <= max(time.time(), spec.eta):
            # Its expiry passed before it could start (here: before its eta, which nothing waits for).
            error = TaskError("Expired", "the task expired before it could start")
            self._record(self._never_ran(task_id, tf, level, TaskState.CANCELLED, error, depends_on, workflow_id))
            return
        if failed is not None:
            self._unreleased[task_id] = spec
            self._record(self._dependency_failed(task_id, tf, level, failed, depends_on, workflow_id))
            return
        self._unreleased.pop(task_id, None)
        await self._run(
            task_id,
            tf,
            call_args,
            call_kwargs,
            level,
            attempts_before=0,
            depends_on=depends_on,
            workflow_id=workflow_id,
        )

    @staticmethod
    def _dependency_failed(
        task_id: str,
        tf: TaskFunction[Any, Any],
        level: Priority | None,
        dependency: TaskInfo,
        depends_on: tuple[str, ...],
        workflow_id: str | None,
    ) -> TaskInfo:
        """The info of a task that never ran because ``dependency`` did not succeed (as the control plane says it)."""
        # (With its workflow: the message names a workflow's step as one, as the control plane's does.)
        spec = task_pb2.TaskSpec(task_id=dependency.id, name=dependency.name, workflow_id=dependency.workflow_id or "")
        record = TaskRecord(spec, 0, 0.0)
        record.state = dependency.state.to_wire()
        if dependency.error is not None:
            record.error = task_pb2.TaskError(type=dependency.error.type, message=dependency.error.message)
        error = dependency_error(record, dependency.id)
        return EagerClient._never_ran(
            task_id, tf, level, TaskState.FAILURE, TaskError(error.type, error.message), depends_on, workflow_id
        )

    @staticmethod
    def _never_ran(
        task_id: str,
        tf: TaskFunction[Any, Any],
        level: Priority | None,
        state: TaskState,
        error: TaskError,
        depends_on: tuple[str, ...],
        workflow_id: str | None,
    ) -> TaskInfo:
        """The final info of a task that ended without running (a failed dependency, its expiry)."""
        now = time.time()
        return TaskInfo(
            id=task_id,
            name=tf.name,
            state=state,
            priority=level if level is not None else tf.options.priority,
            attempts=0,
            worker=None,
            queued_at=now,
            started_at=None,
            finished_at=now,
            error=error,
            depends_on=depends_on,
            workflow_id=workflow_id,
        )

    async def submit(self, name: str, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run task ``name`` now and return its value. Options as for ``Client.submit``.

        Raises:
            TaskFailed: the task ended in FAILURE.
        """
        options, kwargs = SubmitOptions.split(kwargs)
        return await self.result(await self._send(name, args, kwargs, options), timeout=timeout)

    async def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[SubmitOptionArgs],
    ) -> Any:
        """Like submit, with arguments passed explicitly."""
        task_id = await self._send(name, args, kwargs or {}, SubmitOptions(**options))
        return await self.result(task_id, timeout=timeout)

    async def delay_many(
        self,
        calls: Iterable[BatchCall],
        *,
        task_ids: Sequence[str | None] | None = None,
        **options: Unpack[BatchOptionArgs],
    ) -> list[str]:
        """Run many tasks now, in order; returns their ids. Options as for ``Client.delay_many``.

        As there, calls are accepted or refused one by one: the first refusal is raised once every
        call was tried, with ``task_ids`` listing the accepted calls' ids (``None`` for a refused one).
        """
        results: list[str | FastworkerError] = []
        for index, name, args, kwargs, call_options in batch_calls(calls, SubmitOptions(**options), task_ids):
            try:
                results.append(await self._send(name, args, kwargs, call_options))
            except (UnknownTask, QueueFull, InvalidRequest) as refused:  # as the control plane refuses one call
                results.append(refused)
            except PayloadError as exc:
                raise call_payload_error(index, name, exc) from None
        first_error = next((r for r in results if isinstance(r, FastworkerError)), None)
        if first_error is not None:
            first_error.task_ids = [r if isinstance(r, str) else None for r in results]  # type: ignore[attr-defined]
            raise first_error
        return [r for r in results if isinstance(r, str)]

    # ------------------------------------------------------------------------------------------ reads

    async def status(self, task_id: str) -> TaskInfo:
        """The task's final state.

        Raises:
            TaskNotFound: no task with this id was submitted here.
        """
        try:
            return self._infos[task_id]
        except KeyError:
            raise TaskNotFound(task_id) from None

    async def watch(self, task_id: str, *, timeout: float | None = None) -> AsyncGenerator[TaskInfo, None]:
        """Yield the task's info, final already (as ``Client.watch`` ends: with the final state)."""
        yield await self.status(task_id)

    def on_complete(
        self, task_id: str, callback: Callable[[TaskInfo], Any], *, timeout: float | None = None
    ) -> asyncio.Task[None]:
        """Call ``callback(info)`` (a function or coroutine function) soon, the task being final; returns the watcher.

        As ``Client.on_complete``: errors of the callback (or an unknown id) are logged, not raised.
        """

        async def run() -> None:
            try:
                outcome = callback(await self.status(task_id))
                if asyncio.iscoroutine(outcome):
                    await outcome
            except Exception:
                logger.exception("on_complete for task %s failed", task_id)

        watcher = asyncio.get_running_loop().create_task(run())
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return watcher

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        """The task's final info (it is final already)."""
        wait_bound(timeout)  # checked as a client checks it (every task here is final: nothing waits)
        return await self.status(task_id)

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """The task's value.

        Raises:
            TaskFailed: it ended in FAILURE or CANCELLED.
            TaskNotFound: no task with this id was submitted here.
        """
        wait_bound(timeout)  # checked as a client checks it (every task here is final: nothing waits)
        info = await self.status(task_id)
        if info.state is not TaskState.SUCCESS:
            raise TaskFailed(info)
        return info.result

    async def wait_many(self, task_ids: Sequence[str], *, timeout: float | None = None) -> list[TaskInfo]:
        """The final infos of many tasks, in order."""
        wait_bound(timeout)  # checked as a client checks it (every task here is final: nothing waits)
        return [await self.status(task_id) for task_id in task_ids]

    async def results(self, task_ids: Sequence[str], *, timeout: float | None = None) -> list[Any]:
        """The values of many tasks, in order (TaskFailed for the first that failed)."""
        wait_bound(timeout)  # checked as a client checks it (every task here is final: nothing waits)
        return [await self.result(task_id) for task_id in task_ids]

    # -------------------------------------------------------------------------------------- workflows

    async def delay_workflow(self, workflow: Workflow) -> WorkflowHandle:
        """Run a workflow's steps now, in step order; returns its handle (every step is final already).

        Checked all or nothing first, as a control plane does: nothing runs if a step is refused.

        Raises:
            ValueError: an empty workflow, or a bad option on a step.
            PayloadError: a step's arguments cannot be encoded.
            UnknownTask: a step names a task this client cannot run.
            FastworkerError: a step reuses a known task id.
        """
        steps, output_ids, output_is_list = plan_workflow(workflow)
        workflow_id = new_task_id()
        specs = step_specs(steps, self._spec)
        seen: set[str] = set()
        for index, spec in enumerate(specs, start=1):
            if self.registry.get(spec.name) is None:
                raise UnknownTask(
                    spec.name, f"workflow refused: step {index} ({spec.name!r}): unknown task {spec.name!r}"
                )
            if spec.task_id in seen or spec.task_id in self._infos:
                raise _refused(f"workflow refused: step {index} reuses task id {spec.task_id!r}")
            seen.add(spec.task_id)
        created_at = time.time()
        for spec in specs:
            await self._run_spec(spec, workflow_id)
        task_ids = tuple(spec.task_id for spec in specs)
        self._workflows[workflow_id] = _RanWorkflow(task_ids, output_ids, output_is_list, created_at)
        return WorkflowHandle(workflow_id, task_ids, output_ids, output_is_list, self)

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        """A workflow this client ran: its state (final) and its steps'.

        Raises:
            TaskNotFound: no workflow with this id ran here.
        """
        ran = self._workflows.get(workflow_id)
        if ran is None:
            raise TaskNotFound(workflow_id, what="workflow")
        steps = [self._infos[task_id] for task_id in ran.step_ids]
        states = {step.state for step in steps}
        state = next((s for s in (TaskState.FAILURE, TaskState.CANCELLED) if s in states), TaskState.SUCCESS)
        return WorkflowInfo(workflow_id, state, steps, ran.created_at, ran.output_ids, ran.output_is_list)

    async def cancel_workflow(self, workflow_id: str) -> int:
        """Every step of an eager workflow is final already: cancels none (0), as a control plane would."""
        await self.workflow(workflow_id)
        return 0

    # ---------------------------------------------------------------------------------------- control

    async def cancel(self, task_id: str) -> CancelResult:
        """Every eager task is final already: says so, as the control plane does for an ended task."""
        info = await self.status(task_id)
        return CancelResult(cancelled=False, previous_state=info.state)

    async def retry(self, task_id: str) -> TaskState:
        """Run a FAILURE or CANCELLED task again under the same id; returns its new (final) state."""
        info = await self.status(task_id)
        if info.state is TaskState.SUCCESS:  # as the control plane refuses it
            raise _refused(f"only FAILURE or CANCELLED tasks can be retried (task is {info.state.value})")
        tf = self.registry.get(info.name)
        if tf is None:
            raise UnknownTask(info.name)
        unreleased = self._unreleased.get(task_id)
        if unreleased is not None:  # as the control plane: only once its dependencies succeeded, with their results
            for dependency_id in unreleased.dependencies.task_ids:
                state = self._infos[dependency_id].state
                if state is not TaskState.SUCCESS:
                    raise _refused(unreleased_retry_refusal(task_id, dependency_id, state.value))
            await self._run_spec(unreleased, info.workflow_id)
            return self._infos[task_id].state
        args, kwargs, level = self._calls[task_id]
        await self._run(
            task_id,
            tf,
            args,
            kwargs,
            level,
            attempts_before=info.attempts,
            depends_on=info.depends_on,
            workflow_id=info.workflow_id,
        )
        return self._infos[task_id].state

    # ---------------------------------------------------------------------------------------- running

    def _run_sync_off_loop(
        self,
        tf: TaskFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        progress: LatestProgress,
        context: TaskContext,
    ) -> Outcome:
        """Run a sync task in this (worker) thread, with this client's sync face current for its typed calls."""
        with use_sync_client(self.sync):
            return run_sync(tf, args, kwargs, allow_pickle=self.allow_pickle, progress=progress, context=context)

    async def _run(
        self,
        task_id: str,
        tf: TaskFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        level: Priority | None,
        *,
        attempts_before: int,
        depends_on: tuple[str, ...] = (),
        workflow_id: str | None = None,
    ) -> None:
        options = tf.options
        policy = options_policy(options)  # the one rule (fastworker.worker.policy), with this one definition
        queued_at = time.time()
        attempts = attempts_before
        traceparent = tracing.carrier().get("traceparent")  # the submitting code's trace, if it traces
        while True:
            attempts += 1
            progress = LatestProgress()  # report_progress works here too; each attempt starts fresh
            context = TaskContext(task_id, tf.name, attempts, policy.retries_left(attempts), EAGER_WORKER, traceparent)
            if tf.is_async:
                outcome = await run_async_limited(
                    tf,
                    args,
                    kwargs,
                    hard=policy.timeout,
                    soft=policy.soft_timeout,
                    allow_pickle=self.allow_pickle,
                    progress=progress,
                    context=context,
                )
            elif event_loop_running():
                # Off the loop, as on a control plane's slot: its own add.delay_sync(...) then works (through
                # this client's sync face, in that thread), and it does not stall the test's loop.
                outcome = await asyncio.to_thread(self._run_sync_off_loop, tf, args, kwargs, progress, context)
            else:  # the sync face (EagerSyncBackend): in the caller's thread, which runs no loop
                outcome = run_sync(tf, args, kwargs, allow_pickle=self.allow_pickle, progress=progress, context=context)
            log_outcome(context, outcome, policy)
            error_type = outcome.error.type if outcome.error is not None else ""
            if outcome.succeeded:
                break
            bases = outcome.error.base_types if outcome.error is not None else ()
            if not policy.allows_retry(attempts, error_type, outcome.retry_delay is not None, bases):
                if outcome.error is not None:
                    policy.final_retry_error(outcome.error)
                break
        info = TaskInfo(
            id=task_id,
            name=tf.name,
            state=TaskState.SUCCESS if outcome.succeeded else TaskState.FAILURE,
            priority=level if level is not None else options.priority,
            attempts=attempts,
            worker=EAGER_WORKER,
            queued_at=queued_at,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            result=decode_value(outcome.result, allow_pickle=self.allow_pickle) if outcome.result is not None else None,
            error=TaskError(outcome.error.type, outcome.error.message, outcome.error.traceback)
            if outcome.error is not None
            else None,
            progress=progress.value,
            depends_on=depends_on,
            workflow_id=workflow_id,
        )
        self._record(info)

    def _record(self, info: TaskInfo) -> None:
        """Keep a task's final info (a task run again replaces its entry in the history)."""
        task_id = info.id
        queue = self._queues.get(task_id, DEFAULT_QUEUE)
        if queue != info.queue:
            info = dataclasses.replace(info, queue=queue)
        if task_id not in self._infos:
            self.history.append(info)
        else:
            self.history = [info if entry.id == task_id else entry for entry in self.history]
        self._infos[task_id] = info
