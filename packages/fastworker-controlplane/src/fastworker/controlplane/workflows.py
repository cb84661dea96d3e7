"""Dependencies between tasks, and the workflows made of them: the graph lives in the control plane.

A task with ``depends_on`` is accepted SCHEDULED and waits here, outside the queue and the
schedule, until every task it depends on is final; the coordinator then releases it (with its
dependencies' results prepended to its arguments when its spec asks for them) or fails it with
``DependencyFailed``. Nothing polls: a task's end looks up its dependants in a dict. A workflow
(chain, group, chord, built by the client) is a set of such tasks submitted together under one
workflow id; :class:`TaskGraph` keeps their ids in step order to answer "what is the state of
this workflow".

Pure bookkeeping: no clock, no locks (the coordinator's loop owns it), no decisions about what a
release or a failure does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastworker.controlplane.records import CANCELLED, FAILURE, PENDING, RUNNING, SCHEDULED, SUCCESS, TaskRecord
from fastworker.protocol.v1 import task_pb2

__all__ = [
    "DEPENDENCY_FAILED",
    "TaskGraph",
    "Workflow",
    "dependency_error",
    "unreleased_retry_refusal",
    "workflow_state",
]

#: Error type of a task whose dependency did not succeed.
DEPENDENCY_FAILED = "DependencyFailed"
#: Most dependencies one task may have, and most steps one workflow may have.
MAX_DEPENDENCIES = 10_000


@dataclass(slots=True)
class Workflow:
    """A workflow's identity: its steps' task ids in step order."""

    workflow_id: str
    step_ids: list[str]
    created_at: float
    #: The steps whose results make the workflow's result (in step order), and whether it is a list.
    output_ids: list[str] = field(default_factory=list)
    output_is_list: bool = False
    #: Steps that ended FAILURE or CANCELLED, by id: the workflow's state still says so once their
    #: records left the result cache (a forgotten step otherwise counts as a success).
    ended_badly: dict[str, int] = field(default_factory=dict)


class TaskGraph:
    """Tasks waiting for others, by the task they wait for; and the workflows known."""

    def __init__(self) -> None:
        #: Dependency task id -> the tasks waiting for it; empty while nothing waits (the hot path's check).
        self.dependants: dict[str, list[TaskRecord]] = {}
        #: Waiting task id -> how many of its dependencies are not final yet.
        self._unmet: dict[str, int] = {}
        #: Succeeded dependencies kept for the dependants that still wait for others: task id ->
        #: [record, how many of them]. So a chord's early results never depend on the result cache's
        #: bounds (under load, thousands of other results may pass through it meanwhile).
        self._kept: dict[str, list[Any]] = {}
        #: Dependant id -> the kept dependencies that counted it (each lets go of it once).
        self._counted: dict[str, list[str]] = {}
        self.workflows: dict[str, Workflow] = {}

    def __len__(self) -> int:
        """Tasks waiting for their dependencies."""
        return len(self._unmet)

    def hold(self, record: TaskRecord, dependencies: Iterable[TaskRecord]) -> int:
        """Make ``record`` wait for the dependencies not final yet; returns how many it waits for."""
        unmet = 0
        for dependency in dependencies:
            if dependency.is_final:
                continue
            self.dependants.setdefault(dependency.task_id, []).append(record)
            unmet += 1
        if unmet:
            self._unmet[record.task_id] = unmet
        return unmet

    def is_waiting(self, record: TaskRecord) -> bool:
        """True while ``record`` waits here for a dependency."""
        return record.task_id in self._unmet

    def finished(self, record: TaskRecord) -> list[tuple[TaskRecord, bool]]:
        """A task is final: its dependants, each with True when that was the last dependency it waited for.

        A success is kept (see ``kept``) until each of those dependants has left (``left``).
        """
        task_id = record.task_id
        dependants = self.dependants.pop(task_id, None)
        if not dependants:
            return []
        out: list[tuple[TaskRecord, bool]] = []
        for dependant in dependants:
            left = self._unmet.get(dependant.task_id)
            if left is None:
                continue  # already failed or cancelled
            if left <= 1:
                del self._unmet[dependant.task_id]
                out.append((dependant, True))
            else:
                self._unmet[dependant.task_id] = left - 1
                out.append((dependant, False))
        if out and record.state == SUCCESS:
            self._kept[task_id] = [record, len(out)]
            for dependant, _ in out:
                self._counted.setdefault(dependant.task_id, []).append(task_id)
        return out

    def kept(self, task_id: str) -> TaskRecord | None:
        """A succeeded dependency kept for its waiting dependants, or None."""
        entry = self._kept.get(task_id)
        return entry[0] if entry is not None else None

    def left(self, record: TaskRecord) -> None:
        """``record`` waits no more (released, failed or cancelled).

        Stale entries under its dependencies are skipped, and the dependencies kept for it let go of.
        """
        self._unmet.pop(record.task_id, None)
        for task_id in self._counted.pop(record.task_id, ()):
            entry = self._kept.get(task_id)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._kept[task_id]

    # ---------------------------------------------------------------------------------------- workflows

    def add_workflow(self, workflow: Workflow) -> None:
        """Remember a workflow."""
        self.workflows[workflow.workflow_id] = workflow

    def prune_workflows(self, known: Iterable[str]) -> int:
        """Forget the workflows none of whose steps is known any more; returns how many."""
        alive = set(known)
        gone = [wid for wid, wf in self.workflows.items() if not any(step in alive for step in wf.step_ids)]
        for workflow_id in gone:
            del self.workflows[workflow_id]
        return len(gone)

    def rebuild_workflows(self, records: Iterable[TaskRecord]) -> None:
        """Find the workflows again from their steps' specs (after a journal replay)."""
        steps: dict[str, list[TaskRecord]] = {}
        for record in records:
            if record.spec.workflow_id:
                steps.setdefault(record.spec.workflow_id, []).append(record)
        for workflow_id, members in steps.items():
            members.sort(key=lambda r: r.spec.workflow_step)
            workflow = workflow_from_steps(workflow_id, members, min(r.queued_at for r in members))
            for record in members:
                self.step_ended(workflow, record)
            self.add_workflow(workflow)

    def step_ended(self, workflow: Workflow | None, record: TaskRecord) -> None:
        """Note how a step of ``workflow`` ended (a success after a retry clears an earlier failure)."""
        if workflow is None:
            return
        if record.state in (FAILURE, CANCELLED):
            workflow.ended_badly[record.task_id] = record.state
        elif workflow.ended_badly:
            workflow.ended_badly.pop(record.task_id, None)


def workflow_from_steps(workflow_id: str, steps: list[TaskRecord], created_at: float) -> Workflow:
    """The Workflow that steps (in step order) make, its output read from their specs."""
    outputs = [r for r in steps if r.spec.output != task_pb2.WORKFLOW_OUTPUT_NONE]
    return Workflow(
        workflow_id=workflow_id,
        step_ids=[r.task_id for r in steps],
        created_at=created_at,
        output_ids=[r.task_id for r in outputs],
        output_is_list=any(r.spec.output == task_pb2.WORKFLOW_OUTPUT_ITEM for r in outputs),
    )


def dependency_error(dependency: TaskRecord | None, dependency_id: str) -> task_pb2.TaskError:
    """The error of a task whose dependency did not succeed, naming that step and why."""
    if dependency is None:
        message = f"dependency {dependency_id} is no longer known (its record left the result cache)"
    elif dependency.error is not None and dependency.error.type == DEPENDENCY_FAILED:
        message = dependency.error.message  # it names the step that failed first: pass that on, not a nesting
    else:
        state = task_pb2.TaskState.Name(dependency.state).removeprefix("TASK_STATE_")  # type: ignore[arg-type]
        why = f": {dependency.error.type}: {dependency.error.message}" if dependency.error is not None else ""
        kind = "step" if dependency.spec.workflow_id else "task"  # a workflow's step, or a plain depends_on
        message = f"{kind} {dependency.name!r} ({dependency.task_id}) ended {state}{why}"
    return task_pb2.TaskError(type=DEPENDENCY_FAILED, message=message)


def unreleased_retry_refusal(task_id: str, dependency_id: str, dependency_state: str | None) -> str:
    """Why a task that never ran (a dependency did not succeed) cannot be retried yet.

    Run without its dependencies' results it would get other arguments than its workflow gives it.
    ``dependency_state`` is that dependency's state name, None when it is no longer known.
    """
    why = (
        "is no longer known (its record left the result cache)"
        if dependency_state is None
        else f"is {dependency_state}"
    )
    return (
        f"task {task_id} never ran: its dependency {dependency_id} {why}; it runs only once every dependency"
        " succeeded (retry that one first, or submit the workflow again)"
    )


def workflow_state(steps: Iterator[TaskRecord | None], forgotten: Iterable[int] = ()) -> int:
    """A workflow's state from its steps' (a step no longer known counts as done).

    PENDING while none started, RUNNING until every step is final, then FAILURE if one failed,
    CANCELLED if one was cancelled, else SUCCESS. ``forgotten``: how the steps no longer known
    that did not succeed ended (``Workflow.ended_badly``).
    """
    states = [step.state if step is not None else SUCCESS for step in steps]
    states.extend(forgotten)
    if not all(state in (SUCCESS, FAILURE, CANCELLED) for state in states):
        return RUNNING if any(state not in (PENDING, SCHEDULED) for state in states) else PENDING
    if FAILURE in states:
        return FAILURE
    if CANCELLED in states:
        return CANCELLED
    return SUCCESS
