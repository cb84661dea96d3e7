"""Dependencies and workflows in the coordinator: held in the graph, released with results, failed by name.

Workflows are planned by the client's ``plan_workflow`` and turned into specs as ``Client.delay_workflow``
does, then given to a real Coordinator (the ``harness`` fixture); tasks run on its local slots.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastworker.client.workflows import Signature, Workflow, chain, chord, group, plan_workflow, signature
from fastworker.controlplane.coordinator import Coordinator, RequestRefused
from fastworker.controlplane.journal import ACCEPT, FINISH, Journal, JournalState, recover
from fastworker.controlplane.records import CANCELLED, FAILURE, PENDING, RUNNING, SCHEDULED, SUCCESS, TaskRecord
from fastworker.controlplane.workflows import DEPENDENCY_FAILED, workflow_state
from fastworker.protocol.payload import decode_value, encode_arguments, encode_value
from fastworker.protocol.v1 import error_pb2, task_pb2

BOUND = 10.0
NORMAL = task_pb2.PRIORITY_NORMAL


def workflow_specs(workflow: Workflow) -> list[task_pb2.TaskSpec]:
    """The specs ``Client.delay_workflow`` sends for a workflow, in step order."""
    steps, _, _ = plan_workflow(workflow)
    specs = []
    for step in steps:
        sig = step.signature
        spec = task_pb2.TaskSpec(name=sig.name, arguments=encode_arguments(sig.args, dict(sig.kwargs)))
        (sig.options if sig.options.task_id else sig.options.replace(task_id=step.task_id)).apply(spec)
        if step.depends_on:
            spec.dependencies.task_ids.extend(step.depends_on)
            spec.dependencies.input = step.input
        spec.output = step.output
        specs.append(spec)
    return specs


def dependant(name: str, *args: Any, depends_on: list[str], given: int = task_pb2.DEPENDENCY_INPUT_NONE) -> Any:
    """A plain spec that depends on other tasks."""
    spec = task_pb2.TaskSpec(task_id=str(uuid.uuid4()), name=name, arguments=encode_arguments(args, {}))
    spec.dependencies.task_ids.extend(depends_on)
    spec.dependencies.input = given  # type: ignore[assignment]
    return spec


async def until(predicate: Callable[[], bool], bound: float = BOUND) -> None:
    """Yield to the loop until predicate() holds (bounded)."""
    async with asyncio.timeout(bound):
        while not predicate():
            await asyncio.sleep(0.002)


class Ran:
    """Which keys the ``record`` task ran with, across slot threads."""

    def __init__(self, release: threading.Event) -> None:
        self.keys: list[str] = []
        #: Lets the ``slow`` task return.
        self.release = release
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self.keys.append(key)


@pytest.fixture
def ran(harness: Any) -> Ran:
    """Registers ``add``, ``total``, ``record`` (appends its key), ``boom`` (raises) and ``slow`` (a gate)."""
    release = harness.gate()
    runs = Ran(release)

    def record(*args: Any) -> str:
        runs.add(str(args[-1]))
        return str(args[-1])

    def boom(*args: Any) -> None:
        runs.add("boom")
        raise RuntimeError("boom")

    def slow(value: int) -> int:
        runs.add("slow")
        deadline = time.monotonic() + BOUND
        while not release.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)  # short steps, so that a cancel's interrupt lands
        return value

    harness.task(lambda x, y=0: x + y, name="add")
    harness.task(lambda values: sum(values), name="total")
    harness.task(record, name="record")
    harness.task(boom, name="boom")
    harness.task(slow, name="slow")
    return runs


def value(record: TaskRecord) -> Any:
    assert record.result is not None, record.error
    return decode_value(record.result)


# ---------------------------------------------------------------------------------------- shapes


async def test_a_chord_keeps_its_early_results_although_the_result_cache_lets_them_go(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator(result_cache_size=2)  # far fewer than the chord's header
    header = [signature("add", (i, i)) for i in range(6)] + [signature("slow", (100,))]
    ids, _ = coordinator.submit_workflow("wf-kept", workflow_specs(chord(header, signature("total"))))
    await until(
        lambda: all(coordinator.find(task_id) is None or coordinator.find(task_id).is_final for task_id in ids[:6])
    )
    for n in range(5):  # other results pass through the cache meanwhile
        other, _ = coordinator.submit(
            task_pb2.TaskSpec(task_id=f"other-{n}", name="add", arguments=encode_arguments((n, n), {}))
        )
        await harness.final(coordinator, other.task_id)
    assert coordinator.cache.peek(ids[0], coordinator.clock()) is None  # evicted from the cache...

    ran.release.set()
    callback = await harness.final(coordinator, ids[-1])

    assert callback.state == SUCCESS and value(callback) == sum(2 * i for i in range(6)) + 100  # ...but not lost
    assert not coordinator.graph._kept  # and let go of once read


async def test_a_chain_a_group_and_a_chord_pass_their_results_on(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator()

    def add(*args: int) -> Signature[Any]:
        return signature("add", args)

    cases: list[tuple[Workflow, int]] = [
        (chain(add(1, 2), add(10), add(100)), 113),
        (chord([add(i, i) for i in range(10)], signature("total")), 90),
        (chain(add(1, 1), group(add(1), add(2)), signature("total")), 7),
    ]
    for workflow, expected in cases:
        specs = workflow_specs(workflow)
        ids, duplicate = coordinator.submit_workflow(str(uuid.uuid4()), specs)
        assert not duplicate and ids == [s.task_id for s in specs]
        last = await harness.final(coordinator, ids[-1])
        assert last.state == SUCCESS and value(last) == expected


async def test_a_workflow_a_crash_cut_short_is_completed_by_its_resend_not_answered_as_the_fragment(
    harness: Any, ran: Ran
) -> None:
    # Given a chord whose first 4 members alone came back from the journal (a crash between its commits)
    coordinator = harness.coordinator()
    specs = workflow_specs(chord([signature("add", (i, i)) for i in range(10)], signature("total")))
    workflow_id = str(uuid.uuid4())
    restored, _ = coordinator.submit_workflow(
        workflow_id, [task_pb2.TaskSpec.FromString(s.SerializeToString()) for s in specs[:4]]
    )

    # When the client sends the whole workflow again under the same ids (its resend after no reply)
    ids, duplicate = coordinator.submit_workflow(workflow_id, specs)

    # Then the rest is accepted: every step, the callback included, and the chord's result is whole
    assert duplicate and ids == [s.task_id for s in specs] and ids[:4] == restored
    workflow, steps = coordinator.workflow(workflow_id)
    assert workflow.step_ids == ids and workflow.output_ids == [ids[-1]]
    last = await harness.final(coordinator, ids[-1])
    assert last.state == SUCCESS and value(last) == 90
    # and a further resend is answered with the whole workflow, accepting nothing more
    assert coordinator.submit_workflow(workflow_id, specs) == (ids, True)
    assert len(coordinator.active) + len(coordinator.cache) >= len(ids)


async def test_a_resend_with_other_step_ids_is_answered_with_the_known_workflow(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator()
    first = workflow_specs(chain(signature("add", (1, 2)), signature("add", (10,))))
    workflow_id = str(uuid.uuid4())
    ids, _ = coordinator.submit_workflow(workflow_id, first)
    other = workflow_specs(chain(signature("add", (1, 2)), signature("add", (10,)), signature("add", (100,))))
    assert coordinator.submit_workflow(workflow_id, other) == (ids, True)  # not a prefix: nothing added


async def test_a_waiting_step_is_scheduled_outside_the_queue_and_the_schedule(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator(local_concurrency=0)
    specs = workflow_specs(chain(signature("add", (1, 2)), signature("add", (10,))))
    first_id, second_id = coordinator.submit_workflow("wf", specs)[0]
    second = coordinator.find(second_id)
    assert second is not None and second.state == SCHEDULED
    assert len(coordinator.queue) == 1 and len(coordinator.schedule) == 0 and len(coordinator.graph) == 1
    workflow, steps = coordinator.workflow("wf")
    assert workflow.step_ids == [first_id, second_id] and workflow.output_ids == [second_id]
    assert workflow_state(iter(steps)) == PENDING


# ---------------------------------------------------------------------------------- all or nothing


@pytest.mark.parametrize("bad", ["unknown task", "unknown dependency", "known task id", "task id twice"])
async def test_a_workflow_with_a_bad_step_is_refused_and_nothing_of_it_is_accepted(
    harness: Any, ran: Ran, bad: str
) -> None:
    coordinator = harness.coordinator(local_concurrency=0)
    known, _ = coordinator.submit(harness.spec("add", 0, 0))
    specs = workflow_specs(chain(group([signature("record", (i,)) for i in range(5)]), signature("total")))
    if bad == "unknown task":
        specs[3].name = "nobody.defines.this"
    elif bad == "unknown dependency":
        specs[-1].dependencies.task_ids.append("no-such-task")
    elif bad == "known task id":
        specs[2].task_id = known.task_id
    else:
        specs[3].task_id = specs[1].task_id

    with pytest.raises(RequestRefused) as refused:
        coordinator.submit_workflow("wf", specs)

    assert refused.value.message.startswith("workflow refused")
    assert [coordinator.find(s.task_id) for s in specs if s.task_id != known.task_id] == [None] * (
        len(specs) - (bad == "known task id")
    )
    assert len(coordinator.queue) == 1 and len(coordinator.graph) == 0
    assert coordinator.counters.submitted == 1
    assert "wf" not in coordinator.graph.workflows


@pytest.mark.parametrize("bad", ["priority", "long task id", "two results for one"])
async def test_a_step_refused_late_lets_no_step_of_the_workflow_run(harness: Any, ran: Ran, bad: str) -> None:
    coordinator = harness.coordinator(local_concurrency=2)
    specs = workflow_specs(chain(group([signature("record", (f"k{i}",)) for i in range(300)]), signature("total")))
    last = specs[-1]
    if bad == "priority":
        last.priority = 99  # type: ignore[assignment]
    elif bad == "long task id":
        last.task_id = "x" * 201
    else:
        last.dependencies.input = task_pb2.DEPENDENCY_INPUT_RESULT

    with pytest.raises(RequestRefused):
        coordinator.submit_workflow("wf", specs)
    await asyncio.sleep(0.2)  # a slot that took a step would have run it by now

    assert ran.keys == []
    steps = [coordinator.find(s.task_id) for s in specs]
    assert all(step is None or step.state == CANCELLED for step in steps)
    assert "wf" not in coordinator.graph.workflows


async def test_a_workflow_id_given_again_is_answered_with_its_steps_and_queues_nothing(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator(local_concurrency=0)
    first = workflow_specs(chain(signature("add", (1, 2)), signature("add", (10,))))
    ids, duplicate = coordinator.submit_workflow("wf-1", first)
    assert not duplicate

    again, duplicate = coordinator.submit_workflow("wf-1", workflow_specs(group(signature("add", (5, 5)))))

    assert duplicate and again == ids
    assert coordinator.counters.submitted == 2 and len(coordinator.queue) == 1
    # the same request again (a client's retry) is answered the same way
    assert coordinator.submit_workflow("wf-1", first) == (ids, True)


@pytest.mark.parametrize("workflow_id", ["", "x" * 201])
async def test_a_bad_workflow_id_or_no_steps_is_refused(harness: Any, ran: Ran, workflow_id: str) -> None:
    coordinator = harness.coordinator(local_concurrency=0)
    with pytest.raises(RequestRefused) as refused:
        coordinator.submit_workflow(workflow_id, workflow_specs(signature("add", (1, 2))))
    assert refused.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    with pytest.raises(RequestRefused):
        coordinator.submit_workflow("wf", [])
    assert coordinator.counters.submitted == 0


# ------------------------------------------------------------------------------- plain depends_on


async def test_a_dependency_that_succeeded_before_the_submission_releases_it_at_once(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator()
    done, _ = coordinator.submit(harness.spec("add", 20, 1))
    assert (await harness.final(coordinator, done.task_id)).state == SUCCESS

    given, _ = coordinator.submit(
        dependant("add", 100, depends_on=[done.task_id], given=task_pb2.DEPENDENCY_INPUT_RESULT)
    )
    plain, _ = coordinator.submit(dependant("add", 1, 2, depends_on=[done.task_id]))

    assert value(await harness.final(coordinator, given.task_id)) == 121  # the result was prepended
    assert value(await harness.final(coordinator, plain.task_id)) == 3  # its own arguments only
    assert len(coordinator.graph) == 0


@pytest.mark.parametrize("end", ["failed", "cancelled"])
async def test_a_dependency_that_did_not_succeed_before_the_submission_fails_it_at_once(
    harness: Any, ran: Ran, end: str
) -> None:
    coordinator = harness.coordinator(local_concurrency=0 if end == "cancelled" else 2)
    dependency, _ = coordinator.submit(harness.spec("boom"))
    if end == "cancelled":
        coordinator.cancel(dependency.task_id)
    await harness.final(coordinator, dependency.task_id)

    record, duplicate = coordinator.submit(dependant("record", "never", depends_on=[dependency.task_id]))

    assert not duplicate and record.state == FAILURE and record.attempts == 0
    assert record.error is not None and record.error.type == DEPENDENCY_FAILED
    assert "'boom'" in record.error.message and dependency.task_id in record.error.message
    assert record.error.message.startswith("task 'boom'")  # a plain depends_on: no workflow, no "step"
    assert ("CANCELLED" if end == "cancelled" else "FAILURE") in record.error.message
    assert "never" not in ran.keys


async def test_a_step_that_never_ran_for_a_failed_dependency_is_retried_only_with_its_dependencys_result(
    harness: Any, ran: Ran, flaky: Callable[[], int]
) -> None:
    # Given chain(flaky(), add(1)) whose first step failed once, so the second never ran
    harness.task(flaky, name="flaky")
    coordinator = harness.coordinator(local_concurrency=2)
    steps = chain(signature("flaky"), signature("add", args=(1,)))
    first, second = coordinator.submit_workflow("wf", workflow_specs(steps))[0]
    assert (await harness.final(coordinator, second)).error.type == DEPENDENCY_FAILED

    # When the second step is retried while the first still failed, it is refused, naming the first
    with pytest.raises(RequestRefused, match=first) as refused:
        coordinator.retry(second)
    assert refused.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST and "FAILURE" in str(refused.value)
    assert coordinator.find(second).state == FAILURE and coordinator.find(second).attempts == 0

    # Then once the first is retried and succeeds, retrying the second runs it with the first's result
    coordinator.retry(first)
    assert value(await harness.final(coordinator, first)) == 7
    coordinator.retry(second)
    assert value(await harness.final(coordinator, second)) == 8  # add(7, 1): the first's result prepended
    assert coordinator.find(second).attempts == 1


async def test_a_task_runs_once_all_of_its_dependencies_succeeded(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator()
    slow, _ = coordinator.submit(harness.spec("slow", 1))
    quick, _ = coordinator.submit(harness.spec("add", 2, 3))
    waiting, _ = coordinator.submit(dependant("record", "after", depends_on=[slow.task_id, quick.task_id]))
    await harness.final(coordinator, quick.task_id)
    await until(lambda: slow.state == RUNNING)
    assert waiting.state == SCHEDULED and "after" not in ran.keys

    ran.release.set()

    assert (await harness.final(coordinator, waiting.task_id)).state == SUCCESS
    assert ran.keys.count("after") == 1
    assert waiting.started_at >= max(slow.finished_at, quick.finished_at)


@pytest.mark.parametrize(
    ("depends_on", "message"),
    [
        (["nope"], "depends on unknown task 'nope'"),
        (["SELF"], "depends_on must name other tasks"),
        (["A", "A"], "depends_on must name other tasks"),
    ],
)
async def test_a_bad_dependency_list_is_refused_at_submission(
    harness: Any, ran: Ran, depends_on: list[str], message: str
) -> None:
    coordinator = harness.coordinator(local_concurrency=0)
    known, _ = coordinator.submit(harness.spec("add", 1, 1))
    spec = dependant("add", 1, 1, depends_on=[])
    spec.dependencies.task_ids.extend(
        spec.task_id if d == "SELF" else known.task_id if d == "A" else d for d in depends_on
    )
    with pytest.raises(RequestRefused) as refused:
        coordinator.submit(spec)
    assert refused.value.code == error_pb2.ERROR_CODE_INVALID_REQUEST
    assert message in refused.value.message
    assert coordinator.find(spec.task_id) is None


# --------------------------------------------------------------------------------------- failures


def failing_chain(length: int) -> list[task_pb2.TaskSpec]:
    return workflow_specs(chain(signature("boom"), *(signature("add", (1,)) for _ in range(length - 1))))


async def test_a_deep_chain_of_2000_steps_that_fails_at_its_first_fails_every_step_without_recursion(
    harness: Any, ran: Ran
) -> None:
    coordinator = harness.coordinator(local_concurrency=0, result_cache_size=10_000)
    specs = failing_chain(2000)
    ids, _ = coordinator.submit_workflow("deep", specs)
    first = coordinator.find(ids[0])
    assert first is not None

    first.error = task_pb2.TaskError(type="RuntimeError", message="boom")
    coordinator.finish_remote(first, FAILURE)  # as a worker's failure report ends it

    steps = [coordinator.find(task_id) for task_id in ids[1:]]
    assert all(step is not None and step.state == FAILURE for step in steps)
    assert all(step is not None and step.error is not None and step.error.type == DEPENDENCY_FAILED for step in steps)
    assert len(coordinator.graph) == 0 and not coordinator.graph
    assert workflow_state(iter(coordinator.workflow("deep")[1])) == FAILURE


async def test_a_failed_chain_names_the_failed_step_in_every_later_step_in_bounded_text(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator(local_concurrency=0)
    ids, _ = coordinator.submit_workflow("deep", failing_chain(200))
    first = coordinator.find(ids[0])
    assert first is not None
    first.error = task_pb2.TaskError(type="RuntimeError", message="boom")
    coordinator.finish_remote(first, FAILURE)

    for task_id in ids[1:]:
        step = coordinator.find(task_id)
        assert step is not None and step.error is not None
        assert "'boom'" in step.error.message and ids[0] in step.error.message
        assert len(step.error.message) < 1000, f"{len(step.error.message)} characters"


async def test_a_failing_middle_step_fails_the_rest_naming_it_and_runs_nothing_after_it(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator()
    specs = workflow_specs(
        chain(signature("record", ("a",)), signature("boom"), signature("record", ("c",)), signature("record", ("d",)))
    )
    ids, _ = coordinator.submit_workflow("wf", specs)

    last = await harness.final(coordinator, ids[-1])

    assert [coordinator.find(t).state for t in ids] == [SUCCESS, FAILURE, FAILURE, FAILURE]
    for task_id in ids[2:]:
        error = coordinator.find(task_id).error
        assert error is not None and error.type == DEPENDENCY_FAILED
        assert "'boom'" in error.message and ids[1] in error.message
    assert last.attempts == 0
    assert sorted(ran.keys) == ["a", "boom"]


# ----------------------------------------------------------------------------------------- cancel


async def test_cancelling_a_waiting_step_fails_only_what_waits_for_it(harness: Any, ran: Ran) -> None:
    # Given chain(slow, group(record x, record y), total): x and y wait for slow
    coordinator = harness.coordinator()
    specs = workflow_specs(
        chain(signature("slow", (1,)), group(signature("record", ("x",)), signature("record", ("y",))))
    )
    body = dependant("record", "z", depends_on=[specs[1].task_id])
    ids, _ = coordinator.submit_workflow("wf", specs)
    slow, x, y = (coordinator.find(t) for t in ids)
    await until(lambda: slow.state == RUNNING)
    after_x, _ = coordinator.submit(body)

    # When the waiting step x is cancelled, then slow finishes
    cancelled, previous = coordinator.cancel(ids[1])
    ran.release.set()
    await harness.final(coordinator, ids[2])

    # Then x is CANCELLED and never ran, what waited for x failed naming it, the rest is untouched
    assert (cancelled, previous) == (True, SCHEDULED)
    assert x.state == CANCELLED
    assert (slow.state, y.state) == (SUCCESS, SUCCESS)
    assert value(y) == "y"
    assert after_x.state == FAILURE and after_x.error is not None
    assert after_x.error.type == DEPENDENCY_FAILED and ids[1] in after_x.error.message
    assert "CANCELLED" in after_x.error.message
    assert sorted(ran.keys) == ["slow", "y"]
    assert len(coordinator.graph) == 0


async def test_cancelling_a_workflow_cancels_its_running_and_waiting_steps_last_first(harness: Any, ran: Ran) -> None:
    coordinator = harness.coordinator()
    specs = workflow_specs(
        chain(signature("add", (1, 2)), signature("slow"), signature("record", ("c",)), signature("record", ("d",)))
    )
    ids, _ = coordinator.submit_workflow("wf", specs)
    await until(lambda: coordinator.find(ids[1]).state == RUNNING)

    cancelled = coordinator.cancel_workflow("wf")

    assert cancelled == 3
    await harness.final(coordinator, ids[1])
    states = [coordinator.find(t).state for t in ids]
    assert states == [SUCCESS, CANCELLED, CANCELLED, CANCELLED]
    assert workflow_state(iter(coordinator.workflow("wf")[1])) == CANCELLED
    assert "c" not in ran.keys and "d" not in ran.keys
    assert coordinator.cancel_workflow("wf") == 0  # nothing left to cancel
    with pytest.raises(RequestRefused) as refused:
        coordinator.cancel_workflow("no-such-workflow")
    assert refused.value.code == error_pb2.ERROR_CODE_TASK_NOT_FOUND


# ---------------------------------------------------------------------------------------- restore


@pytest.fixture
def journal_at(tmp_path: Path) -> Any:
    opened: list[Journal] = []

    def open_journal(**settings: Any) -> Journal:
        journal = Journal(tmp_path / "tasks.journal", **settings)
        opened.append(journal)
        journal.start(asyncio.get_running_loop())
        return journal

    yield open_journal
    for journal in opened:
        journal.close()


async def test_a_waiting_step_comes_back_waiting_after_a_restart_and_runs_with_the_result(
    harness: Any, ran: Ran, journal_at: Any
) -> None:
    # Given a journal with a chain whose second step waits (nothing ran: no slots)
    journal = journal_at()
    first = harness.coordinator(local_concurrency=0, journal=journal)
    ids, _ = first.submit_workflow("wf", workflow_specs(chain(signature("add", (1, 2)), signature("add", (10,)))))
    journal.close()

    # When a coordinator with slots restores it
    reopened = journal_at()
    second: Coordinator = harness.coordinator(local_concurrency=2, journal=reopened)
    second.restore(reopened.recovered)

    # Then the workflow is known again and its second step ran after the first, given its result
    workflow, _ = second.workflow("wf")
    assert workflow.step_ids == ids and workflow.output_ids == [ids[1]]
    last = await harness.final(second, ids[1])
    assert last.state == SUCCESS and value(last) == 13
    assert second.submit_workflow("wf", []) == (ids, True)  # and its id is still taken


async def test_a_step_whose_dependency_ended_while_it_waited_is_settled_at_restore(harness: Any, ran: Ran) -> None:
    # Given a journal where a dependency is final but its dependant is still journaled waiting
    specs = workflow_specs(chain(signature("add", (1, 2)), signature("add", (10,))))
    failed = workflow_specs(chain(signature("boom"), signature("record", ("never",))))
    now = time.time()
    state = JournalState()
    for spec in [*specs, *failed]:
        spec.workflow_id = "wf" if spec in specs else "wf-failed"
        waiting = SCHEDULED if spec.HasField("dependencies") else PENDING
        state.apply((ACCEPT, spec.task_id, spec.SerializeToString(), NORMAL, now - 3, waiting, 0.0))
    result = encode_value(3).SerializeToString()
    state.apply((FINISH, specs[0].task_id, SUCCESS, 1, "controlplane", now - 2, now - 1, result, None))
    error = task_pb2.TaskError(type="RuntimeError", message="boom").SerializeToString()
    state.apply((FINISH, failed[0].task_id, FAILURE, 1, "controlplane", now - 2, now - 1, None, error))

    # When a coordinator restores it
    coordinator = harness.coordinator()
    coordinator.restore(recover(state, now=now, retries_for=lambda name: None))

    # Then the one whose dependency succeeded runs with its result, the other fails naming the failed step
    assert value(await harness.final(coordinator, specs[1].task_id)) == 13
    lost = await harness.final(coordinator, failed[1].task_id)
    assert lost.state == FAILURE and lost.error is not None and lost.error.type == DEPENDENCY_FAILED
    assert failed[0].task_id in lost.error.message
    assert "never" not in ran.keys
    assert len(coordinator.graph) == 0
