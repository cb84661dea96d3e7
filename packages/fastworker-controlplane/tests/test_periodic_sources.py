"""Where a periodic task's schedule comes from: one rule, as for every other task option.

The control plane's own definition wins; else the earliest-registered connected subworker that
defines the task; a subworker whose schedule differs is logged once and changes nothing; when the
worker in force leaves the next earliest one's applies; when nobody defines the task, nothing is
submitted. A schedule taking over resumes after the task's last run, so no slot runs twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from fastworker.controlplane import periodic
from fastworker.controlplane.periodic import PeriodicScheduler, PeriodicSpec
from fastworker.controlplane.server import periodic_specs
from fastworker.protocol.v1 import task_pb2

START = 1_000.0
LOGGER = "fastworker.controlplane.periodic"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Worker:
    """What ``follow_fleet`` reads of a registered subworker (``fleet.WorkerRecord``)."""

    worker_id: str
    definitions: Mapping[str, task_pb2.TaskDefinition] = field(default_factory=dict)


def worker(worker_id: str, **tasks: float | str | None) -> Worker:
    """A worker defining each task: ``every`` seconds (a number), a cron (a str) or no schedule (None)."""
    definitions = {}
    for name, schedule in tasks.items():
        definition = task_pb2.TaskDefinition(name=name)
        if isinstance(schedule, str):
            definition.cron = schedule
        elif schedule is not None:
            definition.every = schedule
        definitions[name] = definition
    return Worker(worker_id, definitions)


def every(name: str, seconds: float) -> PeriodicSpec:
    return PeriodicSpec(name, every=seconds, cron=None)


@pytest.fixture
def rig() -> Iterator[tuple[PeriodicScheduler, Clock, list[tuple[str, float]]]]:
    clock = Clock()
    calls: list[tuple[str, float]] = []

    def submit(name: str, slot: float) -> str:
        calls.append((name, slot))
        return f"id-{len(calls)}"

    scheduler = PeriodicScheduler([], submit=submit, is_running=lambda name: False, clock=clock)
    yield scheduler, clock, calls


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def infos(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]


# ---------------------------------------------------------------------------------- own definitions


def test_the_control_plane_own_schedule_wins_and_a_differing_worker_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    calls: list[tuple[str, float]] = []
    scheduler = PeriodicScheduler(
        [every("beat", 10)], submit=lambda n, s: calls.append((n, s)) or "id", is_running=lambda n: False, clock=clock
    )
    fleet = [worker("w1", beat=2)]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        scheduler.follow_fleet(fleet)
        scheduler.follow_fleet([*fleet, worker("w2", other=None)])  # the fleet changes again: no second warning

    assert scheduler.specs == (every("beat", 10),)
    assert scheduler.sources == {"beat": None}
    assert warnings(caplog) == [
        "periodic task 'beat': worker w1 defines every 2 s, but every 10 s (the control plane's task modules) "
        "is in force; its schedule is ignored"
    ]
    clock.now = START + 10
    scheduler.fire_due()
    assert calls == [("beat", START + 10)]


def test_a_task_the_control_plane_defines_without_a_schedule_is_not_made_periodic_by_a_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    calls: list[tuple[str, float]] = []
    scheduler = PeriodicScheduler(
        [],
        submit=lambda n, s: calls.append((n, s)) or "id",
        is_running=lambda n: False,
        clock=clock,
        local_names=["beat"],
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        scheduler.follow_fleet([worker("w1", beat=2)])
    clock.now = START + 60
    assert scheduler.fire_due() == [] and calls == []
    assert scheduler.specs == ()
    assert warnings(caplog) == [
        "periodic task 'beat': worker w1 defines every 2 s, but no schedule (the control plane's task modules) "
        "is in force; its schedule is ignored"
    ]


# ------------------------------------------------------------------------------------- the fleet


def test_of_two_workers_that_disagree_the_earliest_registered_wins_with_one_warning(
    rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, clock, calls = rig
    w1, w2 = worker("w1", beat=10), worker("w2", beat=3)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        scheduler.follow_fleet([w1])
        scheduler.follow_fleet([w1, w2])
        scheduler.follow_fleet([w1, w2, worker("w3", unrelated=None)])

    assert scheduler.specs == (every("beat", 10),) and scheduler.sources == {"beat": "w1"}
    assert warnings(caplog) == [
        "periodic task 'beat': worker w2 defines every 3 s, but every 10 s (worker w1) is in force; "
        "its schedule is ignored"
    ]
    assert infos(caplog) == ["periodic task 'beat': every 10 s, from worker w1"]
    clock.now = START + 9.9
    assert scheduler.fire_due() == []  # w2's 3 s slots do not run
    clock.now = START + 10
    assert scheduler.fire_due() == [("beat", "id-1")]


def test_when_the_worker_in_force_leaves_the_next_earliest_schedule_applies_after_the_last_run(
    rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, clock, calls = rig
    w1, w2 = worker("w1", beat=10), worker("w2", beat=3)
    scheduler.follow_fleet([w1, w2])
    clock.now = START + 10
    scheduler.fire_due()
    clock.now = START + 11

    with caplog.at_level(logging.INFO, logger=LOGGER):
        scheduler.follow_fleet([w2])

    assert scheduler.specs == (every("beat", 3),) and scheduler.sources == {"beat": "w2"}
    assert infos(caplog) == ["periodic task 'beat': now every 3 s, from worker w2 (was every 10 s, from worker w1)"]
    assert scheduler.next_due() == START + 13  # w2's slots after the last run, not from scratch
    clock.now = START + 13
    scheduler.fire_due()
    clock.now = START + 16
    scheduler.fire_due()
    assert calls == [("beat", START + 10), ("beat", START + 13), ("beat", START + 16)]
    assert scheduler.stats["beat"]["fired"] == 3  # one task, one history


def test_a_takeover_never_runs_a_slot_that_already_ran(rig: Any) -> None:
    scheduler, clock, calls = rig
    scheduler.follow_fleet([worker("w1", beat=4), worker("w2", beat=2)])
    clock.now = START + 4
    scheduler.fire_due()  # w1's slot at START + 4, which is also one of w2's
    scheduler.follow_fleet([worker("w2", beat=2)])
    clock.now = START + 4.5
    assert scheduler.fire_due() == []
    clock.now = START + 6
    scheduler.fire_due()
    assert [slot for _, slot in calls] == [START + 4, START + 6]


def test_the_same_schedule_from_the_next_worker_keeps_its_slots_and_logs_the_new_source(
    rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, clock, calls = rig
    scheduler.follow_fleet([worker("w1", beat=10), worker("w2", beat=10)])
    clock.now = START + 7
    with caplog.at_level(logging.INFO, logger=LOGGER):
        scheduler.follow_fleet([worker("w2", beat=10)])
    assert scheduler.next_due() == START + 10
    assert scheduler.sources == {"beat": "w2"}
    assert infos(caplog) == ["periodic task 'beat': every 10 s, now from worker w2 (was from worker w1)"]
    assert warnings(caplog) == []


def test_the_earliest_definer_without_a_schedule_makes_the_task_not_periodic(
    rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, clock, calls = rig
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        scheduler.follow_fleet([worker("w1", beat=None), worker("w2", beat=2)])
    clock.now = START + 60
    assert scheduler.fire_due() == [] and scheduler.specs == ()
    assert warnings(caplog) == [
        "periodic task 'beat': worker w2 defines every 2 s, but no schedule (worker w1) is in force; "
        "its schedule is ignored"
    ]


def test_when_nobody_defines_the_task_any_more_nothing_is_submitted_until_a_definer_is_back(
    rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, clock, calls = rig
    scheduler.follow_fleet([worker("w1", beat=10)])
    clock.now = START + 10
    scheduler.fire_due()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        scheduler.follow_fleet([worker("w9", other=None)])
    assert infos(caplog) == [
        "periodic task 'beat': no longer scheduled (every 10 s): no connected subworker defines it any more"
    ]
    clock.now = START + 45
    assert scheduler.fire_due() == [] and calls == [("beat", START + 10)]
    assert scheduler.next_due() is None
    assert scheduler.last_runs == {"beat": START + 10}  # kept for the journal and for a return

    scheduler.follow_fleet([worker("w1", beat=10)])  # back: resumes after its last run, the misfire policy decides
    assert scheduler.fire_due() == [("beat", "id-2")]
    assert calls[-1] == ("beat", START + 40)  # run_once: one run for the missed slots
    assert scheduler.next_due() == START + 50


def test_a_worker_registering_again_as_a_new_process_goes_to_the_back_of_the_order(rig: Any) -> None:
    scheduler, clock, calls = rig
    scheduler.follow_fleet([worker("w1", beat=10), worker("w2", beat=5)])
    scheduler.follow_fleet([worker("w2", beat=5), worker("w1", beat=10)])  # w1 restarted: registered after w2
    assert scheduler.sources == {"beat": "w2"} and scheduler.specs == (every("beat", 5),)


def test_a_worker_that_left_is_warned_about_again_when_it_is_back_with_its_differing_schedule(
    rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, clock, calls = rig
    w1 = worker("w1", beat=10)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        scheduler.follow_fleet([w1, worker("w2", beat=3)])
        scheduler.follow_fleet([w1])
        scheduler.follow_fleet([w1, worker("w2", beat=3)])
    assert len(warnings(caplog)) == 2


def test_a_definition_gives_its_allow_overlap_and_a_cron_schedule_too(rig: Any) -> None:
    scheduler, clock, calls = rig
    definition = task_pb2.TaskDefinition(name="beat", every=5, allow_overlap=True)
    scheduler.follow_fleet([Worker("w1", {"beat": definition}), worker("w2", nightly="0 3 * * *")])
    assert set(scheduler.specs) == {
        PeriodicSpec("beat", every=5.0, cron=None, allow_overlap=True),
        PeriodicSpec("nightly", every=None, cron="0 3 * * *"),
    }
    assert periodic_specs([definition]) == [PeriodicSpec("beat", every=5.0, cron=None, allow_overlap=True)]


def test_a_worker_definitions_are_read_once_per_registration(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler, clock, calls = rig
    read: list[str] = []
    real = periodic.schedule_of

    def counting(definition: task_pb2.TaskDefinition) -> PeriodicSpec | None:
        read.append(definition.name)
        return real(definition)

    monkeypatch.setattr(periodic, "schedule_of", counting)
    fleet = [worker(f"w{i}", beat=10, **{f"task{j}": None for j in range(20)}) for i in range(50)]
    for size in range(1, len(fleet) + 1):  # fifty registrations, one at a time
        scheduler.follow_fleet(fleet[:size])
    assert len(read) == 50 * 21  # each worker's definitions once, not once per fleet change
    fleet[0] = worker("w0", beat=10)  # w0 registered again (a new process): read again
    scheduler.follow_fleet(fleet)
    assert len(read) == 50 * 21 + 1


# ------------------------------------------------------------------------- with the real fleet


async def test_the_real_fleet_gives_registration_order_and_a_deregistration_hands_over(dispatch_rig: Any) -> None:
    rig = dispatch_rig()
    calls: list[tuple[str, float]] = []
    scheduler = PeriodicScheduler(
        [], submit=lambda n, s: calls.append((n, s)) or "id", is_running=lambda n: False, clock=rig.clock
    )

    def register(worker_id: str, seconds: float) -> None:
        envelope = rig.envelope()
        body = envelope.register
        body.worker_id, body.host, body.pid, body.capacity, body.version = worker_id, "h", 1, 1, "0.1.0"
        body.tasks.append(task_pb2.TaskDefinition(name="beat", every=seconds))
        pipe = 2000 + len(rig.pipes)
        rig.pipes[worker_id] = pipe
        assert rig.send(envelope, pipe).envelope.register_reply.accepted
        scheduler.follow_fleet(rig.fleet)  # as the server does on every fleet change

    register("w1", 10)
    register("w2", 3)
    assert scheduler.sources == {"beat": "w1"}
    request = rig.deregister("w1", [])
    async with asyncio.timeout(10):
        while not request.answered:
            await asyncio.sleep(0.002)
    scheduler.follow_fleet(rig.fleet)
    assert scheduler.sources == {"beat": "w2"} and scheduler.specs == (every("beat", 3),)
    rig.dispatcher.lose(rig.fleet.get("w2"), "gone")
    scheduler.follow_fleet(rig.fleet)
    assert scheduler.specs == ()
