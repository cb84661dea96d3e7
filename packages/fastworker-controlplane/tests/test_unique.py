"""Unique tasks: a submission whose key a live task holds is answered with that task's id and queues nothing."""

from __future__ import annotations

from typing import Any

import pytest

from fastworker.controlplane.coordinator import RequestRefused
from fastworker.controlplane.records import CANCELLED, PENDING, RUNNING, SUCCESS
from fastworker.protocol.v1 import task_pb2


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_unique_key_held_by_a_live_task_answers_with_its_id_and_queues_nothing(harness: Any) -> None:
    harness.task(lambda n: n, name="report")
    coordinator = harness.coordinator(local_concurrency=0)
    first, duplicate = coordinator.submit(harness.spec("report", 1, unique_key="nightly-7"))
    assert not duplicate and first.state == PENDING

    again, duplicate = coordinator.submit(harness.spec("report", 2, unique_key="nightly-7"))

    assert duplicate and again is first
    assert len(coordinator.queue) == 1
    assert coordinator.counters.submitted == 1


async def test_the_key_is_free_again_once_its_task_is_final(harness: Any) -> None:
    harness.task(lambda n: n, name="report")
    coordinator = harness.coordinator(local_concurrency=1)
    first, _ = coordinator.submit(harness.spec("report", 1, unique_key="k"))
    assert (await harness.final(coordinator, first.task_id)).state == SUCCESS

    second, duplicate = coordinator.submit(harness.spec("report", 1, unique_key="k"))

    assert not duplicate and second.task_id != first.task_id


async def test_a_unique_task_is_unique_over_its_arguments(harness: Any) -> None:
    harness.task(lambda n: n, name="build", unique=True)
    coordinator = harness.coordinator(local_concurrency=0)
    one, _ = coordinator.submit(harness.spec("build", 7))
    same, same_duplicate = coordinator.submit(harness.spec("build", 7))
    other, other_duplicate = coordinator.submit(harness.spec("build", 8))

    assert same_duplicate and same is one
    assert not other_duplicate and other is not one


async def test_a_key_holds_at_most_its_ttl(harness: Any) -> None:
    clock = FakeClock()
    harness.task(lambda n: n, name="build", unique=True, unique_ttl=60.0)
    coordinator = harness.coordinator(local_concurrency=0, clock=clock)
    first, _ = coordinator.submit(harness.spec("build", 7))

    clock.now += 59.0
    assert coordinator.submit(harness.spec("build", 7))[0] is first
    clock.now += 2.0
    later, duplicate = coordinator.submit(harness.spec("build", 7))

    assert not duplicate and later is not first


async def test_a_cancelled_holder_frees_its_key(harness: Any) -> None:
    harness.task(lambda n: n, name="report")
    coordinator = harness.coordinator(local_concurrency=0)
    first, _ = coordinator.submit(harness.spec("report", 1, unique_key="k"))
    coordinator.cancel(first.task_id)

    second, duplicate = coordinator.submit(harness.spec("report", 1, unique_key="k"))

    assert not duplicate and second is not first


async def test_a_retry_while_another_live_task_holds_the_key_is_refused_naming_it(harness: Any) -> None:
    # At most one live task per key: the cancelled one would run beside the new holder.
    harness.task(lambda n: n, name="report", unique=True)
    coordinator = harness.coordinator(local_concurrency=0)
    first, _ = coordinator.submit(harness.spec("report", 1))
    coordinator.cancel(first.task_id)
    second, _ = coordinator.submit(harness.spec("report", 1))
    assert second is not first

    with pytest.raises(RequestRefused, match=f"live task {second.task_id} holds task {first.task_id}'s uniqueness key"):
        coordinator.retry(first.task_id)
    assert first.state == CANCELLED

    coordinator.cancel(second.task_id)
    assert coordinator.retry(first.task_id) is first and first.state == PENDING  # the key is free again


async def test_a_running_task_being_cancelled_answers_no_new_submission_of_its_key(harness: Any) -> None:
    # Its cancel is under way (a subworker stops it and reports a moment later): it ends CANCELLED.
    harness.task(lambda n: n, name="report")
    coordinator = harness.coordinator(local_concurrency=0)
    first, _ = coordinator.submit(harness.spec("report", 1, unique_key="k"))
    first.state, first.worker = RUNNING, "some-worker"  # taken by a subworker, as far as cancel is concerned

    class Stopping:
        def cancel_running(self, record: Any) -> bool:
            return True

        def schedule(self) -> None:
            pass

    coordinator.dispatcher = Stopping()  # type: ignore[assignment]
    assert coordinator.cancel(first.task_id) == (True, RUNNING)
    second, duplicate = coordinator.submit(harness.spec("report", 1, unique_key="k"))

    assert not duplicate and second is not first


async def test_a_workflow_whose_steps_share_a_uniqueness_key_is_refused(harness: Any) -> None:
    harness.task(lambda n: n, name="build", unique=True)
    coordinator = harness.coordinator(local_concurrency=0)
    steps = [harness.spec("build", 7), harness.spec("build", 7)]

    with pytest.raises(RequestRefused, match="step 2 .*same uniqueness key"):
        coordinator.submit_workflow("wf-twins", steps)
    assert len(coordinator.active) == 0


async def test_a_unique_step_that_would_take_an_earlier_steps_result_is_refused(harness: Any) -> None:
    # Its key would be made of the arguments given now, without the result that joins them later
    harness.task(lambda n: n, name="build", unique=True)
    harness.task(lambda: 7, name="seven")
    coordinator = harness.coordinator(local_concurrency=0)
    first = harness.spec("seven")
    piped = harness.spec("build")
    piped.dependencies.task_ids.append(first.task_id)
    piped.dependencies.input = task_pb2.DEPENDENCY_INPUT_RESULT

    with pytest.raises(RequestRefused, match="unique task 'build' cannot take an earlier step's result") as refused:
        coordinator.submit_workflow("wf-piped", [first, piped])
    assert len(coordinator.active) == 0
    # It recommends what a client can do: a step given a unique_key is refused in the client
    assert "make it immutable (.si(...))" in refused.value.message and "unique_key" not in refused.value.message

    # Immutable (takes no result), or (from a hand-made request) with a key of its own, it is accepted
    immutable = harness.spec("build", 7)
    immutable.dependencies.task_ids.append(first.task_id)
    keyed = harness.spec("build", unique_key="build-after-seven")
    keyed.dependencies.task_ids.append(first.task_id)
    keyed.dependencies.input = task_pb2.DEPENDENCY_INPUT_RESULT
    ids, _ = coordinator.submit_workflow("wf-ok", [first, immutable, keyed])
    assert len(ids) == 3


def waiting_unique_step(harness: Any, *args: Any, **spec_fields: Any) -> list[task_pb2.TaskSpec]:
    """A workflow whose unique ``build`` step waits for an earlier ``seven`` step (both tasks registered here)."""
    harness.task(lambda n=0: n, name="build", unique=True)
    harness.task(lambda: 7, name="seven")
    first = harness.spec("seven")
    build = harness.spec("build", *args, **spec_fields)
    build.dependencies.task_ids.append(first.task_id)
    return [first, build]


async def test_a_plain_submission_is_not_answered_by_a_waiting_workflow_step_holding_its_key(harness: Any) -> None:
    # The step's fate is its workflow's (DependencyFailed, cancel_workflow): a caller answered by it would share it
    steps = waiting_unique_step(harness, 7)
    coordinator = harness.coordinator(local_concurrency=0)
    (_, step_id), _ = coordinator.submit_workflow("wf-other", steps)

    mine, duplicate = coordinator.submit(harness.spec("build", 7))

    assert not duplicate and mine.task_id != step_id
    assert mine.state == PENDING and not mine.spec.workflow_id  # queued as a task of its own
    # It holds the key for plain submissions: the next one is answered by it, not by the step
    again, duplicate = coordinator.submit(harness.spec("build", 7))
    assert duplicate and again is mine
    # A workflow step with the key is still refused while either holds it
    with pytest.raises(RequestRefused, match="a live task holds its uniqueness key"):
        coordinator.submit_workflow("wf-late", [harness.spec("build", 7)])
    # And the other workflow's cancel leaves it be
    assert coordinator.cancel_workflow("wf-other") == 2
    assert mine.state == PENDING
    with pytest.raises(RequestRefused, match="a live task holds its uniqueness key"):
        coordinator.submit_workflow("wf-late", [harness.spec("build", 7)])
    coordinator.cancel(mine.task_id)
    assert coordinator.submit_workflow("wf-late", [harness.spec("build", 7)])[1] is False  # the key is free


async def test_a_plain_submission_with_a_unique_key_is_not_answered_by_a_workflow_step_holding_it(
    harness: Any,
) -> None:
    steps = waiting_unique_step(harness, unique_key="k")
    coordinator = harness.coordinator(local_concurrency=0)
    (_, step_id), _ = coordinator.submit_workflow("wf-other", steps)

    mine, duplicate = coordinator.submit(harness.spec("seven", unique_key="k"))

    assert not duplicate and mine.task_id != step_id and mine.state == PENDING


async def test_a_retry_is_not_refused_for_a_key_only_a_workflow_step_holds(harness: Any) -> None:
    # As a new submission of the key would be queued, so is the retry of a task submitted alone
    steps = waiting_unique_step(harness, 7)
    coordinator = harness.coordinator(local_concurrency=0)
    mine, _ = coordinator.submit(harness.spec("build", 7))
    coordinator.cancel(mine.task_id)
    coordinator.submit_workflow("wf-other", steps)

    assert coordinator.retry(mine.task_id) is mine and mine.state == PENDING
    assert coordinator.submit(harness.spec("build", 7)) == (mine, True)  # it holds the key again


async def test_the_retry_of_a_workflow_step_is_refused_while_a_task_submitted_alone_holds_its_key(
    harness: Any,
) -> None:
    # A step is never answered by another task, so a step does not run beside one that holds its key either
    steps = waiting_unique_step(harness, 7)
    coordinator = harness.coordinator(local_concurrency=0)
    (_, step_id), _ = coordinator.submit_workflow("wf", steps)
    coordinator.cancel(step_id)
    mine, _ = coordinator.submit(harness.spec("build", 7))

    with pytest.raises(RequestRefused, match=f"live task {mine.task_id} holds task {step_id}'s uniqueness key"):
        coordinator.retry(step_id)
