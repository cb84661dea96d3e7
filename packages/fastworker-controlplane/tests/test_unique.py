"""Unique tasks: a submission whose key a live task holds is answered with that task's id and queues nothing."""

from __future__ import annotations

from typing import Any

from fastworker.controlplane.records import PENDING, SUCCESS


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
