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

    with pytest.raises(RequestRefused, match="unique task 'build' cannot take an earlier step's result"):
        coordinator.submit_workflow("wf-piped", [first, piped])
    assert len(coordinator.active) == 0

    # Immutable (takes no result), or with a key of its own, it is accepted
    immutable = harness.spec("build", 7)
    immutable.dependencies.task_ids.append(first.task_id)
    keyed = harness.spec("build", unique_key="build-after-seven")
    keyed.dependencies.task_ids.append(first.task_id)
    keyed.dependencies.input = task_pb2.DEPENDENCY_INPUT_RESULT
    ids, _ = coordinator.submit_workflow("wf-ok", [first, immutable, keyed])
    assert len(ids) == 3
