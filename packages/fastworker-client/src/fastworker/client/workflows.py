"""Workflows: chains, groups and chords of task signatures, held and run by the control plane.

A :class:`Signature` is a task call not made yet (``add.s(1, 2)``). :func:`chain` runs its steps one
after another, each getting the previous result as its first argument (unless its signature is
immutable, ``add.si(...)``); :func:`group` runs its members in parallel and its result is their
results in order; :func:`chord` runs a group, then a callback given the list of its results. They
nest: a chain may hold groups (the next step gets the list), a group may hold chains.

Submitting one (``await client.delay_workflow(wf)`` or ``await wf.delay()``) sends every step at
once, each with the steps it depends on (``TaskSpec.dependencies``); the control plane queues a step
when its dependencies succeeded, prepending their results to its arguments, and fails it with
``DependencyFailed`` (naming the step that did not succeed) otherwise. Nothing polls: the control
plane holds the graph (docs/workflows.md).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, Unpack, cast, runtime_checkable

from fastworker.client.errors import CallContextError, ClientError, PayloadError
from fastworker.client.handles import _chosen_sync_client, current_client, current_sync_client, event_loop_running
from fastworker.client.models import TaskInfo, TaskState
from fastworker.client.options import SubmitOptionArgs, SubmitOptions
from fastworker.protocol.ids import new_task_id, shown
from fastworker.protocol.v1 import task_pb2

__all__ = [
    "Chain",
    "Chord",
    "Group",
    "Signature",
    "SyncWorkflowHandle",
    "Workflow",
    "WorkflowBackend",
    "WorkflowHandle",
    "WorkflowInfo",
    "WorkflowStep",
    "chain",
    "chord",
    "group",
    "plan_workflow",
    "signature",
    "step_specs",
]

R = TypeVar("R")
T = TypeVar("T")

#: Builds the TaskSpec of one call (name, args, kwargs, options): the submitting client's own encoder.
SpecBuilder = Callable[[str, Sequence[Any], Mapping[str, Any], SubmitOptions], task_pb2.TaskSpec]


@dataclass(frozen=True, slots=True)
class Signature(Generic[R]):
    """A task call to make later: the name, the arguments and the submission options.

    Attributes:
        name: The task name.
        args: Positional arguments (a chain prepends the previous result to them).
        kwargs: Keyword arguments.
        options: Submission options (priority, countdown, expires, task_id, ...).
        immutable: Takes no previous result (``add.si(...)``).
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: SubmitOptions = SubmitOptions()
    immutable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a signature names its task: a non-empty string")
        if self.options.unique_key is not None or self.options.depends_on is not None:
            raise ValueError("a workflow step takes no unique_key or depends_on: the workflow orders its steps")

    def set(self, **options: Unpack[SubmitOptionArgs]) -> Signature[R]:
        """This signature with submission options replaced (``priority``, ``countdown``, ``expires``, ...)."""
        return Signature(self.name, self.args, self.kwargs, self.options.replace(**options), self.immutable)

    def delay(self) -> Coroutine[object, object, WorkflowHandle]:
        """Submit this one call as a workflow of one step through the current client (``await`` it).

        Raises:
            CallContextError: at once, in sync code (see :func:`_submit_awaited`).
        """
        return _submit_awaited(self)

    def delay_sync(self) -> SyncWorkflowHandle:
        """Submit from sync code through the current sync client, as ``add.delay_sync`` does (blocks until accepted)."""
        return _submit_blocking(self)

    def __or__(self, then: Workflow) -> Chain:
        """``a.s() | b.s()``: a chain (Celery's spelling)."""
        return _chained(self, then)


@dataclass(frozen=True, slots=True)
class Chain:
    """Steps run one after another, each given the previous one's result (see :func:`chain`)."""

    steps: tuple[Workflow, ...]

    def delay(self) -> Coroutine[object, object, WorkflowHandle]:
        """Submit through the current client (as ``add.delay`` does; ``await`` it, in async code)."""
        return _submit_awaited(self)

    def delay_sync(self) -> SyncWorkflowHandle:
        """Submit from sync code through the current sync client, as ``add.delay_sync`` does (blocks until accepted)."""
        return _submit_blocking(self)

    def __or__(self, then: Workflow) -> Chain:
        """``chain(...) | c.s()``: the chain with one more step."""
        return _chained(self, then)


@dataclass(frozen=True, slots=True)
class Group:
    """Members run in parallel; the result is the list of their results, in order (see :func:`group`).

    A group inside a group adds its members: the result is one flat list.
    """

    members: tuple[Workflow, ...]

    def delay(self) -> Coroutine[object, object, WorkflowHandle]:
        """Submit through the current client (as ``add.delay`` does; ``await`` it, in async code)."""
        return _submit_awaited(self)

    def delay_sync(self) -> SyncWorkflowHandle:
        """Submit from sync code through the current sync client, as ``add.delay_sync`` does (blocks until accepted)."""
        return _submit_blocking(self)

    def __or__(self, then: Workflow) -> Chord:
        """``group(...) | total.s()``: a chord, as in Celery."""
        return chord(self, _checked_next(then))


@dataclass(frozen=True, slots=True)
class Chord:
    """A group, then a callback given the list of its results (see :func:`chord`)."""

    header: Group
    body: Workflow

    def delay(self) -> Coroutine[object, object, WorkflowHandle]:
        """Submit through the current client (as ``add.delay`` does; ``await`` it, in async code)."""
        return _submit_awaited(self)

    def delay_sync(self) -> SyncWorkflowHandle:
        """Submit from sync code through the current sync client, as ``add.delay_sync`` does (blocks until accepted)."""
        return _submit_blocking(self)

    def __or__(self, then: Workflow) -> Chain:
        """``chord(...) | c.s()``: a chain, the chord's result given to the next step."""
        return _chained(self, then)


#: Anything a workflow is made of.
Workflow = Signature[Any] | Chain | Group | Chord


def signature(
    name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, *, immutable: bool = False
) -> Signature[Any]:
    """A signature by task name (for tasks this process does not import)."""
    return Signature(name, tuple(args), dict(kwargs or {}), immutable=immutable)


def chain(*steps: Workflow) -> Chain:
    """Run ``steps`` in order; each gets the previous step's result prepended to its arguments.

    The chain's result is its last step's. A group in a chain passes the list of its results on.
    """
    _check_parts(steps, "chain")
    if not steps:
        raise ValueError("a chain needs at least one step")
    return Chain(tuple(steps))


def group(*members: Workflow | Iterable[Workflow]) -> Group:
    """Run ``members`` in parallel: ``group(a.s(), b.s())`` or ``group([a.s(), b.s()])``; result: the list, in order."""
    flat: list[Workflow] = []
    for member in members:
        if isinstance(member, Signature | Chain | Group | Chord):
            flat.append(member)
        else:
            flat.extend(member)
    _check_parts(flat, "group")
    return Group(tuple(flat))


def chord(header: Group | Iterable[Workflow], body: Workflow) -> Chord:
    """Run the ``header`` group, then ``body`` with the list of its results as its first argument."""
    members = header if isinstance(header, Group) else group(header)
    _check_parts((body,), "chord")
    return Chord(members, body)


def _checked_next(then: object) -> Workflow:
    if not isinstance(then, Signature | Chain | Group | Chord):
        raise TypeError(
            f"a workflow is followed by a signature (task.s(...)) or a workflow, not {type(then).__qualname__}"
        )
    return then


def _chained(first: Workflow, then: object) -> Chain:
    """``first | then`` for all but a group (Celery's operator): one chain, chains flattened into it."""
    following = _checked_next(then)
    steps = first.steps if isinstance(first, Chain) else (first,)
    more = following.steps if isinstance(following, Chain) else (following,)
    return chain(*steps, *more)


def _check_parts(parts: Iterable[object], what: str) -> None:
    for part in parts:
        if not isinstance(part, Signature | Chain | Group | Chord):
            raise TypeError(
                f"a {what} is made of signatures (task.s(...)) and workflows, not {type(part).__qualname__}"
            )


# ------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """One task of a planned workflow: what to call, under which id, after which steps, given what."""

    signature: Signature[Any]
    task_id: str
    depends_on: tuple[str, ...]
    input: task_pb2.DependencyInput.ValueType
    output: task_pb2.WorkflowOutput.ValueType = task_pb2.WORKFLOW_OUTPUT_NONE

    def to_spec(self, build: SpecBuilder) -> task_pb2.TaskSpec:
        """The step's TaskSpec: ``build`` encodes the call (a client's own spec builder), this adds its place."""
        signature = self.signature
        options = signature.options if signature.options.task_id else signature.options.replace(task_id=self.task_id)
        spec = build(signature.name, signature.args, signature.kwargs, options)
        if self.depends_on:
            spec.dependencies.task_ids.extend(self.depends_on)
            spec.dependencies.input = self.input
        spec.output = self.output
        return spec


def step_specs(steps: Sequence[WorkflowStep], build: SpecBuilder) -> list[task_pb2.TaskSpec]:
    """The steps' TaskSpecs, in step order (see :meth:`WorkflowStep.to_spec`).

    Raises:
        PayloadError: a step's arguments cannot be encoded; the message names the step as the
            control plane names a step it refuses ("step 2 ('add')").
    """
    specs: list[task_pb2.TaskSpec] = []
    for index, step in enumerate(steps, start=1):
        try:
            specs.append(step.to_spec(build))
        except PayloadError as exc:
            raise PayloadError(
                f"workflow refused: step {index} ({shown(step.signature.name)}): {exc} (nothing was sent)"
            ) from None
    return specs


def plan_workflow(workflow: Workflow) -> tuple[list[WorkflowStep], tuple[str, ...], bool]:
    """Flatten a workflow into steps in submission order: (steps, the ids whose results make its result, is a list).

    Raises:
        ValueError: the workflow has no task at all (an empty group), or is nested too deeply to walk.
    """
    steps: list[WorkflowStep] = []
    try:
        outputs, passes = _place(workflow, (), _NOTHING, steps)
    except RecursionError:
        raise ValueError(
            "the workflow is nested too deeply (chains in chains, groups in groups, hundreds of levels):"
            " build it flat, e.g. chain(*steps) rather than chain(chain(...), step)"
        ) from None
    if not steps:
        raise ValueError("a workflow needs at least one task")
    if passes == _EMPTY_LIST:
        outputs = ()  # ends with an empty group: its result is [], whatever ran before it
    many = passes in (_LIST, _EMPTY_LIST)
    kind = task_pb2.WORKFLOW_OUTPUT_ITEM if many else task_pb2.WORKFLOW_OUTPUT_VALUE
    marked = set(outputs)
    steps = [
        WorkflowStep(s.signature, s.task_id, s.depends_on, s.input, kind) if s.task_id in marked else s for s in steps
    ]
    return steps, outputs, many


#: What a part of a workflow passes to the next: nothing (the start), one result, the list of the
#: results of the ids it returns, or an empty list (an empty group: the ids are only waited for).
_NOTHING, _ONE, _LIST, _EMPTY_LIST = "nothing", "one", "list", "empty list"


def _place(
    node: Workflow, incoming: tuple[str, ...], passes: str, steps: list[WorkflowStep]
) -> tuple[tuple[str, ...], str]:
    """Add node's steps after the ``incoming`` ids, which pass it what ``passes`` says.

    Returns the ids that come out of node, and what they pass on.
    """
    if isinstance(node, Signature):
        task_id = node.options.task_id or new_task_id()
        signature, given = node, task_pb2.DEPENDENCY_INPUT_NONE
        if not node.immutable:
            if passes == _EMPTY_LIST:  # the list is known now, and empty: prepend it here
                signature = Signature(node.name, ([], *node.args), node.kwargs, node.options, True)
            elif passes == _LIST:
                given = task_pb2.DEPENDENCY_INPUT_RESULTS
            elif passes == _ONE:
                given = task_pb2.DEPENDENCY_INPUT_RESULT
        steps.append(WorkflowStep(signature, task_id, incoming, given))
        return (task_id,), _ONE
    if isinstance(node, Chain):
        ids, kind = incoming, passes
        for step in node.steps:
            ids, kind = _place(step, ids, kind, steps)
        return ids, kind
    if isinstance(node, Group):
        out: list[str] = []
        for member in node.members:
            placed = len(steps)
            ids, kind = _place(member, incoming, passes, steps)
            if kind == _EMPTY_LIST:
                if len(steps) > placed:
                    # Its ids would be waited for and their values listed, though its value is [].
                    raise ValueError(
                        "a group member that ends in an empty group (such as chain(a, group())) has no value"
                        " for the group's list: leave the empty group out"
                    )
                continue  # an empty group inside a group adds nothing to the flat list
            out.extend(ids)
        if not out:
            return incoming, _EMPTY_LIST  # what follows still waits for what came before
        return tuple(out), _LIST
    ids, kind = _place(node.header, incoming, passes, steps)
    return _place(node.body, ids, kind, steps)


# ------------------------------------------------------------------------------------------- handles


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A workflow as the control plane sees it (``handle.status()``, ``Client.workflow``).

    Attributes:
        id: The workflow id.
        state: PENDING (nothing started), RUNNING, then SUCCESS, FAILURE or CANCELLED once every step is final.
        steps: Its steps in step order (each TaskInfo carries ``depends_on`` and ``workflow_id``),
            but those in ``forgotten``.
        created_at: When it was accepted (Unix seconds).
        output_ids: The steps whose results make its result.
        output_is_list: True when its result is the list of those steps' results.
        forgotten: The ids of finished steps whose records left the result cache (evicted, or past
            their TTL) while the workflow was still known: their state can no longer be told.
    """

    id: str
    state: TaskState
    steps: list[TaskInfo]
    created_at: float
    output_ids: tuple[str, ...] = ()
    output_is_list: bool = False
    forgotten: tuple[str, ...] = ()


@runtime_checkable
class WorkflowBackend(Protocol):
    """What a workflow handle talks to (``Client`` implements it)."""

    async def delay_workflow(self, workflow: Workflow) -> WorkflowHandle:
        """Submit a workflow."""
        ...

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        """Read a workflow."""
        ...

    async def cancel_workflow(self, workflow_id: str) -> int:
        """Cancel a workflow's waiting and running steps."""
        ...

    async def results(self, task_ids: Sequence[str], *, timeout: float | None = None) -> list[Any]:
        """Wait for many tasks' values, in order."""
        ...


@dataclass(frozen=True, slots=True)
class WorkflowHandle:
    """A submitted workflow: its id, its steps' ids, and how its result is made.

    Attributes:
        id: The workflow id.
        task_ids: Its steps' task ids, in step order.
        output_ids: The steps whose results make its result.
        output_is_list: True when the result is the list of those results (a group, a chain ending in one).
        client: The client it was submitted through.
    """

    id: str
    task_ids: tuple[str, ...]
    output_ids: tuple[str, ...]
    output_is_list: bool
    client: WorkflowBackend = field(repr=False, compare=False)

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow and return its result: the last step's value, or the list of a group's.

        Raises:
            TaskFailed: a step it needs failed or was cancelled; a step that never ran because an
                earlier one failed ends with ``DependencyFailed``, whose message names that step.
            TaskTimeout: timeout passed first (the workflow goes on).
        """
        values = await self.client.results(self.output_ids, timeout=timeout) if self.output_ids else []
        return values if self.output_is_list else values[0]

    async def status(self) -> WorkflowInfo:
        """The workflow's state and its steps'."""
        return await self.client.workflow(self.id)

    async def cancel(self) -> int:
        """Cancel its waiting and running steps (the last first); returns how many were cancelled."""
        return await self.client.cancel_workflow(self.id)

    def __str__(self) -> str:
        return self.id


class BlockingRunner(Protocol):
    """Runs a coroutine to its end and returns its value, blocking (a ``SyncClient``, or eager mode's runner)."""

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T: ...


@dataclass(frozen=True, slots=True)
class SyncWorkflowHandle:
    """A :class:`WorkflowHandle` whose methods block: what ``delay_sync`` of a workflow returns."""

    handle: WorkflowHandle
    client: BlockingRunner = field(repr=False, compare=False)

    @property
    def id(self) -> str:
        """The workflow id."""
        return self.handle.id

    @property
    def task_ids(self) -> tuple[str, ...]:
        """Its steps' task ids, in step order."""
        return self.handle.task_ids

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow's result; see :meth:`WorkflowHandle.result`."""
        return self.client._run(self.handle.result(timeout))

    def status(self) -> WorkflowInfo:
        """The workflow's state and its steps'."""
        return self.client._run(self.handle.status())

    def cancel(self) -> int:
        """Cancel its waiting and running steps; returns how many were cancelled."""
        return self.client._run(self.handle.cancel())

    def __str__(self) -> str:
        return self.handle.id


def _submit_awaited(workflow: Workflow) -> Coroutine[object, object, WorkflowHandle]:
    """The submission's coroutine; in sync code, submitted through the SyncClient made current, else refused at once.

    Without a running event loop the coroutine would never run; with a SyncClient current
    (``with SyncClient(...)``, a default sync client) the workflow is submitted through it and its
    blocking handle returned, as ``SyncClient.delay_workflow`` does.
    """
    if not event_loop_running():
        sync = _chosen_sync_client()
        delay_workflow = getattr(sync, "delay_workflow", None)
        if delay_workflow is not None:
            return cast(Coroutine[object, object, WorkflowHandle], delay_workflow(workflow))
        kind = type(workflow).__name__.lower()
        raise CallContextError(
            f"{kind}(...).delay() was called in sync code (no event loop runs in this thread) with no SyncClient "
            f"current: it returns a coroutine that only `await` would run, so nothing was submitted. From sync "
            f"code, call {kind}(...).delay_sync(), which submits as add.delay_sync() does."
        )
    return _submit(workflow)


def _submit_blocking(workflow: Workflow) -> SyncWorkflowHandle:
    """Submit through the current sync client (``current_sync_client``: in a task, its own control plane's)."""
    if event_loop_running():
        kind = type(workflow).__name__.lower()
        raise CallContextError(
            f"{kind}(...).delay_sync() was called on a thread that runs an event loop, which it would stall:"
            f" nothing was submitted; use `await {kind}(...).delay()`"
        )
    client = current_sync_client()
    delay_workflow = getattr(client, "delay_workflow", None)
    if delay_workflow is None:
        raise ClientError(f"{type(client).__qualname__} cannot run workflows: submit through a SyncClient")
    return cast("SyncWorkflowHandle", delay_workflow(workflow))


async def _submit(workflow: Workflow) -> WorkflowHandle:
    client = current_client()
    if not isinstance(client, WorkflowBackend):
        raise ClientError(f"{type(client).__qualname__} cannot run workflows: submit through a Client")
    return await client.delay_workflow(workflow)
