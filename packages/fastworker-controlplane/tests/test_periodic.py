"""The periodic scheduler: schedules, overlap, misfire policies, restarts, refusals, validation and the timer."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time

import pytest

from fastworker.client.task import MIN_EVERY
from fastworker.controlplane import periodic
from fastworker.controlplane.periodic import (
    CRON_SCAN_LIMIT,
    MAX_CATCH_UP,
    MisfirePolicy,
    PeriodicScheduler,
    PeriodicSpec,
    SkipReason,
)

#: Bound on every real-time wait, in seconds.
WAIT_BOUND = 5.0

START = 1_000.0


class FakeClock:
    """A settable clock."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Submitter:
    """Records submissions and answers with task ids, or None while refusing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.refuse = False
        self.fail = False

    def __call__(self, name: str, scheduled_for: float) -> str | None:
        if self.fail:
            raise RuntimeError("submit exploded")
        if self.refuse:
            return None
        self.calls.append((name, scheduled_for))
        return f"id-{len(self.calls)}"

    @property
    def slots(self) -> list[float]:
        return [at for _, at in self.calls]


class Running:
    """A settable is_running that records what it was asked."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.asked: list[str] = []

    def __call__(self, name: str) -> bool:
        self.asked.append(name)
        return name in self.names


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.UTC).timestamp()


def make(
    *specs: PeriodicSpec,
    clock: FakeClock | None = None,
    misfire: MisfirePolicy | str = MisfirePolicy.RUN_ONCE,
    last_runs: dict[str, float] | None = None,
) -> tuple[PeriodicScheduler, FakeClock, Submitter, Running]:
    clock = clock or FakeClock()
    submit, running = Submitter(), Running()
    scheduler = PeriodicScheduler(
        specs, submit=submit, is_running=running, clock=clock, misfire=misfire, last_runs=last_runs
    )
    return scheduler, clock, submit, running


def every(name: str, seconds: float, *, allow_overlap: bool = False) -> PeriodicSpec:
    return PeriodicSpec(name, every=seconds, cron=None, allow_overlap=allow_overlap)


def fast(name: str, seconds: float) -> PeriodicSpec:
    """An ``every`` spec below MIN_EVERY, for the tests of the real timer only (kept short).

    The floor is for what users define; the scheduler itself runs any positive interval.
    """
    spec = every(name, MIN_EVERY)
    object.__setattr__(spec, "every", seconds)
    return spec


def cron(name: str, expr: str) -> PeriodicSpec:
    return PeriodicSpec(name, every=None, cron=expr)


# ------------------------------------------------------------------------------------------- every


def test_every_fires_at_start_plus_n_intervals() -> None:
    scheduler, clock, submit, _ = make(every("tick", 10))
    assert scheduler.next_due() == START + 10
    clock.now = START + 9.9
    assert scheduler.fire_due() == []
    for n in (1, 2, 3):
        clock.now = START + 10 * n
        assert scheduler.fire_due() == [("tick", f"id-{n}")]
        assert scheduler.next_due() == START + 10 * (n + 1)
        assert scheduler.fire_due() == []  # the same instant again fires nothing
    assert submit.calls == [("tick", START + 10), ("tick", START + 20), ("tick", START + 30)]
    stats = scheduler.stats["tick"]
    assert stats["fired"] == 3
    assert stats["skipped_overlap"] == stats["misfired"] == stats["refused"] == stats["errors"] == 0
    assert stats["last_fired"] == START + 30
    assert stats["next_due"] == START + 40


def test_with_a_lead_runs_are_submitted_that_long_before_their_slots_for_those_slots() -> None:
    # The control plane's lead: each run is queued (SCHEDULED) a little before its slot, for its slot
    clock = FakeClock()
    submit, running = Submitter(), Running()
    scheduler = PeriodicScheduler(
        [every("tick", 10), every("fast", 1), cron("minutely", "* * * * *")],
        submit=submit,
        is_running=running,
        clock=clock,
        lead=2.0,
    )
    first_minute = math.floor(START / 60) * 60 + 60
    assert scheduler.next_due() == START + 1 - 0.5  # "fast": at most half its interval early
    clock.now = START + 0.5
    assert scheduler.fire_due() == [("fast", "id-1")]
    assert submit.calls == [("fast", START + 1)]
    clock.now = START + 8
    scheduler.fire_due()
    assert ("tick", START + 10) in submit.calls and scheduler.stats["tick"]["next_due"] == START + 20
    assert scheduler.stats["tick"]["misfired"] == 0  # two seconds early is on time, not a miss
    clock.now = first_minute - 2
    scheduler.fire_due()
    assert ("minutely", first_minute) in submit.calls
    # The overlap rule is asked at submission: a run still going then skips the slot
    running.names.add("tick")
    clock.now = START + 28
    scheduler.fire_due()
    assert ("tick", START + 30) not in submit.calls and scheduler.stats["tick"]["skipped_overlap"] == 1


def test_every_slots_do_not_drift_with_small_late_wake_ups() -> None:
    scheduler, clock, submit, _ = make(every("tick", 1.1))
    for n in range(1, 1001):
        clock.now = START + n * 1.1 + 0.55  # always half an interval late, within the grace
        scheduler.fire_due()
    assert len(submit.calls) == 1000
    assert submit.slots[-1] == pytest.approx(START + 1100.0)
    assert scheduler.stats["tick"]["misfired"] == 0


def test_next_due_is_the_earliest_over_all_tasks_and_fire_due_orders_by_slot() -> None:
    empty, *_ = make()
    assert empty.next_due() is None
    assert empty.fire_due() == []
    scheduler, clock, submit, _ = make(every("slow", 30), every("fast", 20))
    assert scheduler.next_due() == START + 20
    clock.now = START + 60
    names = [name for name, _ in scheduler.fire_due()]
    assert names == ["fast", "slow"]  # fast was due first (START + 40 missed, START + 60 on time)


# -------------------------------------------------------------------------------------------- cron


def test_cron_fires_on_five_minute_boundaries_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(time, "tzset"):  # a local zone with a half-hour offset must not move the slots
        monkeypatch.setenv("TZ", "Asia/Kolkata")
        time.tzset()
    try:
        clock = FakeClock(utc(2024, 1, 1, 12, 3, 20))
        scheduler, _, submit, _ = make(cron("sync", "*/5 * * * *"), clock=clock)
        assert scheduler.next_due() == utc(2024, 1, 1, 12, 5)
        clock.now = utc(2024, 1, 1, 12, 4, 59)
        assert scheduler.fire_due() == []
        for minute in (5, 10, 15):
            clock.now = utc(2024, 1, 1, 12, minute, 0, 200_000)
            assert [name for name, _ in scheduler.fire_due()] == ["sync"]
        assert submit.slots == [utc(2024, 1, 1, 12, 5), utc(2024, 1, 1, 12, 10), utc(2024, 1, 1, 12, 15)]
        for slot in submit.slots:
            when = dt.datetime.fromtimestamp(slot, dt.UTC)
            assert when.minute % 5 == 0 and when.second == 0 and when.microsecond == 0
        assert scheduler.next_due() == utc(2024, 1, 1, 12, 20)
    finally:
        monkeypatch.undo()
        if hasattr(time, "tzset"):
            time.tzset()


def test_cron_first_slot_is_the_next_matching_minute() -> None:
    clock = FakeClock(utc(2024, 3, 1, 23, 59, 59))
    scheduler, *_ = make(cron("hourly", "0 * * * *"), cron("alias", "@daily"), clock=clock)
    assert scheduler.stats["hourly"]["next_due"] == utc(2024, 3, 2, 0, 0)
    assert scheduler.stats["alias"]["next_due"] == utc(2024, 3, 2, 0, 0)
    exactly_on = FakeClock(utc(2024, 3, 2, 0, 0))
    scheduler, *_ = make(cron("hourly", "0 * * * *"), clock=exactly_on)
    assert scheduler.next_due() == utc(2024, 3, 2, 1, 0)  # strictly after the start


def test_cron_in_a_time_zone_follows_its_daylight_saving_time() -> None:
    # "0 3 * * *" in Paris: 01:00 UTC in summer (CEST), 02:00 UTC in winter (CET); the spring change
    # (2026-03-29) moves it from one to the other, and the run is neither skipped nor doubled.
    spec = PeriodicSpec("nightly", every=None, cron="0 3 * * *", timezone="Europe/Paris")
    clock = FakeClock(utc(2026, 3, 27, 12, 0))
    scheduler, _, submit, _ = make(spec, clock=clock)
    for _ in range(3):  # the 28th, the 29th (the change), the 30th
        clock.now = scheduler.next_due() or 0.0
        scheduler.fire_due()
    assert submit.slots == [utc(2026, 3, 28, 2, 0), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 1, 0)]
    summer = make(spec, clock=FakeClock(utc(2026, 7, 1, 12, 0)))[0]
    assert summer.next_due() == utc(2026, 7, 2, 1, 0)
    assert make(cron("nightly", "0 3 * * *"), clock=FakeClock(utc(2026, 7, 1, 12, 0)))[0].next_due() == utc(
        2026, 7, 2, 3, 0
    )  # without a time zone: UTC


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"every": 60.0, "timezone": "Europe/Paris"}, "timezone applies to a cron schedule"),
    ],
)
def test_a_bad_time_zone_is_refused_naming_the_task(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"periodic task 'nightly': .*{message}"):
        PeriodicSpec("nightly", every=fields.get("every"), cron=fields.get("cron"), timezone=fields["timezone"])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ overlap


def test_a_slot_while_the_previous_run_is_running_is_skipped_and_counted() -> None:
    scheduler, clock, submit, running = make(every("tick", 10))
    running.names.add("tick")
    clock.now = START + 10
    assert scheduler.fire_due() == [("tick", None)]
    assert submit.calls == []
    assert scheduler.stats["tick"]["skipped_overlap"] == 1
    assert scheduler.next_due() == START + 20
    running.names.clear()
    clock.now = START + 20
    assert scheduler.fire_due() == [("tick", "id-1")]
    assert submit.calls == [("tick", START + 20)]
    assert scheduler.stats["tick"]["fired"] == 1
    assert scheduler.stats["tick"]["skipped_overlap"] == 1


def test_slots_skipped_for_a_long_run_are_logged_once_a_minute_with_the_count_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A task that runs longer than its 1 s interval skipped (and logged) a slot every second, for ever
    scheduler, clock, _, running = make(every("tick", 1))
    running.names.add("tick")
    with caplog.at_level(logging.INFO, logger="fastworker.controlplane.periodic"):
        for n in range(1, 122):
            clock.now = START + n
            scheduler.fire_due()
    lines = [r.getMessage() for r in caplog.records if "skipping the slot" in r.getMessage()]
    assert scheduler.stats["tick"]["skipped_overlap"] == 121
    assert len(lines) == 3  # at 1 s, 61 s and 121 s
    assert lines[0].endswith("the previous run has not finished")
    assert lines[1].endswith("(and 59 more like it not logged since the last line)")


async def test_a_burst_of_skipped_slots_that_ends_is_summed_up_in_the_log_an_interval_later(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The skips left out of the log were only told with the next skip: a task that stopped
    # overrunning left them untold for ever
    monkeypatch.setattr(periodic, "OVERLAP_LOG_INTERVAL", 2.2)  # so the summary comes 1.2 s later here
    scheduler, clock, _, running = make(every("tick", 1))
    running.names.add("tick")
    with caplog.at_level(logging.INFO, logger="fastworker.controlplane.periodic"):
        for n in (1, 2, 3):  # the first is logged, the next two left out
            clock.now = START + n
            scheduler.fire_due()
        running.names.clear()

        async def summed_up() -> list[str]:
            while True:
                lines = [r.getMessage() for r in caplog.records if "skipping the slot" in r.getMessage()]
                if len(lines) == 2:
                    return lines
                await asyncio.sleep(0.05)

        lines = await asyncio.wait_for(summed_up(), WAIT_BOUND)
    assert lines[1] == (
        f"periodic task 'tick': skipping the slot at {START + 3:.3f}, the previous run has not finished"
        " (and 1 more like it not logged since the last line)"
    )


def test_the_missed_slots_line_does_not_call_a_missed_slot_on_time(caplog: pytest.LogCaptureFixture) -> None:
    # It read "missed 1 slot(s) (run_once): 1 run now (the latest slot, 0.50 s late, is on time)"
    scheduler, clock, submit, _ = make(every("tick", 1))
    clock.now = START + 2.5  # a stall: the slot at +1 passed unfired, the one at +2 is on time
    with caplog.at_level(logging.INFO, logger="fastworker.controlplane.periodic"):
        scheduler.fire_due()
    assert submit.slots == [START + 2]
    assert [r.getMessage() for r in caplog.records if "missed" in r.getMessage()] == [
        "periodic task 'tick' missed 1 slot(s) (run_once): 1 run now;"
        " the current slot (0.50 s late) is on time, the missed ones came before it"
    ]


class SkipCounter:
    """Records what the scheduler reports as slots without a run."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, SkipReason], int] = {}

    def __call__(self, name: str, reason: SkipReason, count: int) -> None:
        self.counts[(name, reason)] = self.counts.get((name, reason), 0) + count


def test_every_slot_without_a_run_is_counted_under_one_reason() -> None:
    # Slots skipped for overlap, refused or failed submissions reached no counter an operator could see
    clock, submit, running, skipped = FakeClock(), Submitter(), Running(), SkipCounter()
    scheduler = PeriodicScheduler(
        [every("tick", 10)], submit=submit, is_running=running, clock=clock, count_skipped=skipped
    )
    running.names.add("tick")
    clock.now = START + 10
    scheduler.fire_due()
    running.names.clear()
    submit.refuse = True
    clock.now = START + 20
    scheduler.fire_due()
    submit.refuse, submit.fail = False, True
    clock.now = START + 30
    scheduler.fire_due()
    submit.fail = False
    clock.now = START + 40
    scheduler.fire_due()
    assert submit.slots == [START + 40]
    assert skipped.counts == {
        ("tick", SkipReason.OVERLAP): 1,
        ("tick", SkipReason.REFUSED): 1,
        ("tick", SkipReason.ERROR): 1,
    }


@pytest.mark.parametrize(
    ("policy", "late", "runs"),
    [
        ("skip", 0.5, 1),  # the current slot is on time: it runs, the 4 before it are dropped
        ("skip", 5.0, 0),  # all 5 are late: none runs
        ("run_once", 5.0, 1),  # one run for the 5
        ("run_all", 5.0, 5),
    ],
)
def test_missed_slots_the_misfire_policy_does_not_run_are_counted(policy: str, late: float, runs: int) -> None:
    clock, submit, skipped = FakeClock(), Submitter(), SkipCounter()
    scheduler = PeriodicScheduler(
        [every("tick", 10, allow_overlap=True)],
        submit=submit,
        is_running=Running(),
        clock=clock,
        misfire=policy,
        count_skipped=skipped,
    )
    clock.now = START + 50 + late  # slots 10 to 50 passed unfired
    scheduler.fire_due()
    assert len(submit.calls) == runs
    assert skipped.counts == ({("tick", SkipReason.MISSED): 5 - runs} if runs < 5 else {})


def test_run_all_counts_the_missed_slots_beyond_its_cap() -> None:
    clock, submit, skipped = FakeClock(), Submitter(), SkipCounter()
    scheduler = PeriodicScheduler(
        [every("tick", 1, allow_overlap=True)],
        submit=submit,
        is_running=Running(),
        clock=clock,
        misfire="run_all",
        count_skipped=skipped,
    )
    clock.now = START + MAX_CATCH_UP + 30.5
    scheduler.fire_due()
    assert len(submit.calls) == MAX_CATCH_UP
    assert skipped.counts == {("tick", SkipReason.MISSED): 30}


def test_allow_overlap_fires_even_while_running() -> None:
    scheduler, clock, submit, running = make(every("tick", 10, allow_overlap=True))
    running.names.add("tick")
    for n in (1, 2):
        clock.now = START + 10 * n
        assert scheduler.fire_due() == [("tick", f"id-{n}")]
    assert running.asked == []  # never consulted
    assert scheduler.stats["tick"]["skipped_overlap"] == 0


# ------------------------------------------------------------------------------------------ misfire


def test_run_once_after_a_long_gap_fires_once_then_resumes() -> None:
    scheduler, clock, submit, _ = make(every("tick", 10), misfire=MisfirePolicy.RUN_ONCE)
    clock.now = START + 105  # slots START+10 .. START+100 passed: 10 missed
    assert scheduler.fire_due() == [("tick", "id-1")]
    assert submit.calls == [("tick", START + 100)]  # the run stands for the latest missed slot
    assert scheduler.stats["tick"]["misfired"] == 10
    assert scheduler.next_due() == START + 110  # the schedule keeps its phase
    clock.now = START + 110
    assert scheduler.fire_due() == [("tick", "id-2")]
    assert scheduler.stats["tick"]["misfired"] == 10
    assert scheduler.stats["tick"]["fired"] == 2


def test_skip_after_a_long_gap_fires_nothing_until_the_next_slot() -> None:
    scheduler, clock, submit, _ = make(every("tick", 10), misfire="skip")
    assert scheduler.misfire is MisfirePolicy.SKIP
    clock.now = START + 105
    assert scheduler.fire_due() == []
    assert submit.calls == []
    assert scheduler.stats["tick"]["misfired"] == 10
    assert scheduler.next_due() == START + 110
    clock.now = START + 110
    assert scheduler.fire_due() == [("tick", "id-1")]
    assert submit.calls == [("tick", START + 110)]


def test_skip_still_runs_an_on_time_slot_after_missed_ones() -> None:
    scheduler, clock, submit, _ = make(every("tick", 10), misfire=MisfirePolicy.SKIP)
    clock.now = START + 100.5  # START+100 is on time (within the grace); the 9 before it are missed
    assert len(scheduler.fire_due()) == 1
    assert submit.calls == [("tick", START + 100)]
    assert scheduler.stats["tick"]["misfired"] == 9


def test_run_all_after_a_long_gap_fires_every_missed_slot() -> None:
    scheduler, clock, submit, _ = make(every("tick", 10), misfire=MisfirePolicy.RUN_ALL)
    clock.now = START + 105
    assert [tid for _, tid in scheduler.fire_due()] == [f"id-{n}" for n in range(1, 11)]
    assert submit.slots == [START + 10 * n for n in range(1, 11)]
    assert scheduler.stats["tick"]["misfired"] == 10
    assert scheduler.next_due() == START + 110


def test_run_all_is_capped_at_the_latest_slots() -> None:
    scheduler, clock, submit, _ = make(every("tick", 10), misfire=MisfirePolicy.RUN_ALL)
    clock.now = START + 10 * 1000 + 5
    assert len(scheduler.fire_due()) == MAX_CATCH_UP
    assert submit.slots == [START + 10 * n for n in range(1000 - MAX_CATCH_UP + 1, 1001)]
    assert scheduler.stats["tick"]["misfired"] == 1000
    assert scheduler.next_due() == START + 10 * 1001


def test_run_all_without_overlap_only_runs_while_nothing_is_pending() -> None:
    clock = FakeClock()
    submit = Submitter()
    scheduler = PeriodicScheduler(
        [every("tick", 10)],
        submit=submit,
        is_running=lambda name: bool(submit.calls),  # the first catch-up run stays pending
        clock=clock,
        misfire=MisfirePolicy.RUN_ALL,
    )
    clock.now = START + 35
    assert scheduler.fire_due() == [("tick", "id-1"), ("tick", None), ("tick", None)]
    assert scheduler.stats["tick"]["skipped_overlap"] == 2


@pytest.mark.parametrize(
    ("policy", "fired"),
    [(MisfirePolicy.RUN_ONCE, 1), (MisfirePolicy.SKIP, 0), (MisfirePolicy.RUN_ALL, 1)],
)
def test_a_single_late_wake_up_is_a_misfire(policy: MisfirePolicy, fired: int) -> None:
    scheduler, clock, submit, _ = make(every("tick", 10), misfire=policy)
    clock.now = START + 15  # the slot at START+10 is 5 s late, more than the 1 s grace
    scheduler.fire_due()
    assert len(submit.calls) == fired
    assert scheduler.stats["tick"]["misfired"] == 1
    assert scheduler.next_due() == START + 20


@pytest.mark.parametrize(
    ("policy", "runs"),
    [(MisfirePolicy.RUN_ONCE, 1), (MisfirePolicy.SKIP, 0), (MisfirePolicy.RUN_ALL, 12)],
)
def test_cron_misfire_after_an_hour_down(policy: MisfirePolicy, runs: int) -> None:
    clock = FakeClock(utc(2024, 1, 1, 12, 2))
    scheduler, _, submit, _ = make(cron("sync", "*/5 * * * *"), clock=clock, misfire=policy)
    clock.now = utc(2024, 1, 1, 13, 2)  # 12:05 .. 13:00 passed: 12 slots
    scheduler.fire_due()
    assert len(submit.calls) == runs
    if runs:
        assert submit.slots[-1] == utc(2024, 1, 1, 13, 0)
    assert scheduler.stats["sync"]["misfired"] == 12
    assert scheduler.next_due() == utc(2024, 1, 1, 13, 5)


def test_cron_catch_up_after_a_very_long_gap_stays_bounded() -> None:
    clock = FakeClock(utc(2024, 1, 1))
    scheduler, _, submit, _ = make(cron("minutely", "* * * * *"), clock=clock, misfire=MisfirePolicy.RUN_ALL)
    clock.now = utc(2024, 1, 31, 0, 0, 30)  # 30 days of minutes
    began = time.perf_counter()
    assert len(scheduler.fire_due()) == MAX_CATCH_UP
    assert time.perf_counter() - began < 2.0
    assert submit.slots == [utc(2024, 1, 31) - 60 * n for n in range(MAX_CATCH_UP - 1, -1, -1)]
    assert scheduler.stats["minutely"]["misfired"] == CRON_SCAN_LIMIT  # counted up to the scan limit
    assert scheduler.next_due() == utc(2024, 1, 31, 0, 1)


# ------------------------------------------------------------------------------------------ restart


def test_last_runs_are_honoured_after_a_restart() -> None:
    scheduler, clock, submit, _ = make(every("tick", 60), clock=FakeClock(START + 30), last_runs={"tick": START})
    assert scheduler.next_due() == START + 60  # not restart + 60
    assert scheduler.stats["tick"]["last_fired"] == START
    clock.now = START + 60
    assert scheduler.fire_due() == [("tick", "id-1")]
    assert scheduler.last_runs == {"tick": START + 60}


def test_slots_missed_while_down_go_through_the_misfire_policy() -> None:
    scheduler, clock, submit, _ = make(every("tick", 60), clock=FakeClock(START + 200), last_runs={"tick": START})
    assert scheduler.next_due() == START + 60
    assert scheduler.fire_due() == [("tick", "id-1")]
    assert submit.calls == [("tick", START + 180)]
    assert scheduler.stats["tick"]["misfired"] == 3
    assert scheduler.next_due() == START + 240


def test_cron_last_runs_after_a_restart() -> None:
    clock = FakeClock(utc(2024, 1, 1, 12, 7))
    scheduler, _, submit, _ = make(cron("sync", "*/5 * * * *"), clock=clock, last_runs={"sync": utc(2024, 1, 1, 12, 5)})
    assert scheduler.next_due() == utc(2024, 1, 1, 12, 10)
    assert scheduler.fire_due() == []


def test_last_runs_of_tasks_added_later_are_kept_and_honoured() -> None:
    scheduler, clock, submit, _ = make(last_runs={"late": START - 5, "never": 1.0})
    assert scheduler.last_runs == {"late": START - 5, "never": 1.0}
    clock.now = START + 100
    scheduler.add(every("late", 10))
    assert scheduler.next_due() == START + 5
    assert scheduler.last_runs == {"late": START - 5, "never": 1.0}
    scheduler.fire_due()
    assert scheduler.last_runs == {"late": START + 95, "never": 1.0}


def test_a_restarted_scheduler_continues_from_the_reported_last_runs() -> None:
    first, clock, _, _ = make(every("tick", 10), cron("sync", "* * * * *"))
    clock.now = START + 120
    first.fire_due()
    second, _, submit, _ = make(every("tick", 10), cron("sync", "* * * * *"), clock=clock, last_runs=first.last_runs)
    assert second.next_due() == first.next_due()
    assert second.fire_due() == []


# ------------------------------------------------------------------------------------ refusal, errors


def test_a_refused_submit_is_recorded_and_the_schedule_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    scheduler, clock, submit, _ = make(every("tick", 10))
    submit.refuse = True
    clock.now = START + 10
    with caplog.at_level(logging.WARNING, logger="fastworker.controlplane.periodic"):
        assert scheduler.fire_due() == [("tick", None)]
    assert "refused" in caplog.text
    stats = scheduler.stats["tick"]
    assert (stats["refused"], stats["fired"], stats["last_fired"]) == (1, 0, 0.0)
    assert scheduler.next_due() == START + 20
    submit.refuse = False
    clock.now = START + 20
    assert scheduler.fire_due() == [("tick", "id-1")]
    assert scheduler.stats["tick"]["refused"] == 1
    assert scheduler.stats["tick"]["fired"] == 1


def test_a_raising_submit_is_logged_counted_and_does_not_stop_other_tasks(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    calls: list[str] = []

    def submit(name: str, scheduled_for: float) -> str | None:
        if name == "bad":
            raise RuntimeError("boom")
        calls.append(name)
        return "ok"

    scheduler = PeriodicScheduler(
        [every("bad", 10), every("good", 10)], submit=submit, is_running=lambda name: False, clock=clock
    )
    clock.now = START + 10
    with caplog.at_level(logging.ERROR, logger="fastworker.controlplane.periodic"):
        assert scheduler.fire_due() == [("bad", None), ("good", "ok")]
    assert "boom" in caplog.text
    assert scheduler.stats["bad"]["errors"] == 1
    assert scheduler.next_due() == START + 20


# ---------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 10.0, "cron": "* * * * *"}, "mutually exclusive"),
        ({"every": None, "cron": None}, "neither"),
        ({"every": 0, "cron": None}, "more than 0"),
        ({"every": -5.0, "cron": None}, "more than 0"),
        ({"every": 0.001, "cron": None}, r"every must be at least 0\.1 s .*, got 0\.001"),
        ({"every": math.nan, "cron": None}, "finite"),
        ({"every": math.inf, "cron": None}, "finite"),
        ({"every": None, "cron": "not a cron"}, "5 fields"),
        ({"every": None, "cron": "0 0 * * * 30"}, "5 fields"),
        ({"every": None, "cron": ""}, "5 fields"),
        ({"every": None, "cron": "61 * * * *"}, r"61 is out of the minute field.s range \(0-59\)"),
        ({"every": None, "cron": "*/0 * * * *"}, "invalid cron expression"),
        ({"every": None, "cron": "a b c d e"}, "invalid cron expression"),
        ({"every": None, "cron": "@reboot"}, "5 fields"),
        ({"every": None, "cron": "0 0 31 2 *"}, "never matches"),
    ],
)
def test_invalid_specs_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        PeriodicSpec("job", **kwargs)  # type: ignore[arg-type]
    assert "'job'" in str(raised.value)


def test_spec_type_and_name_errors() -> None:
    with pytest.raises(TypeError, match="every must be a number"):
        PeriodicSpec("job", every=True, cron=None)
    with pytest.raises(TypeError, match="every must be a number"):
        PeriodicSpec("job", every="10", cron=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cron must be a str"):
        PeriodicSpec("job", every=None, cron=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        PeriodicSpec("", every=1.0, cron=None)
    assert PeriodicSpec("job", every=5, cron=None).every == 5.0


def test_scheduler_argument_errors() -> None:
    with pytest.raises(ValueError, match="bogus"):
        make(misfire="bogus")
    with pytest.raises(ValueError, match="finite"):
        make(last_runs={"tick": math.nan})
    with pytest.raises(TypeError, match="PeriodicSpec"):
        make()[0].add(("tick", 10.0, None))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- add


def test_add_of_an_existing_name_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    scheduler, clock, submit, _ = make(every("tick", 10))
    clock.now = START + 10
    scheduler.fire_due()
    before = scheduler.stats
    clock.now = START + 15
    scheduler.add(every("tick", 10))  # the same spec again: silent
    with caplog.at_level(logging.WARNING, logger="fastworker.controlplane.periodic"):
        scheduler.add(every("tick", 3))
    assert "already scheduled" in caplog.text
    assert scheduler.stats == before
    assert scheduler.specs == (every("tick", 10),)
    assert scheduler.next_due() == START + 20


def test_a_task_added_later_starts_from_when_it_was_added() -> None:
    scheduler, clock, submit, _ = make(every("tick", 10))
    clock.now = START + 7
    scheduler.add(every("late", 10))
    assert scheduler.stats["late"]["next_due"] == START + 17
    clock.now = START + 10
    assert scheduler.fire_due() == [("tick", "id-1")]
    clock.now = START + 17
    assert scheduler.fire_due() == [("late", "id-2")]
    assert submit.calls[-1] == ("late", START + 17)


# --------------------------------------------------------------------------------------------- timer


async def wait_for_calls(submit: Submitter, count: int) -> None:
    async def enough() -> None:
        while len(submit.calls) < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(enough(), WAIT_BOUND)


async def test_start_fires_from_a_timer_and_stop_stops_it() -> None:
    submit = Submitter()
    scheduler = PeriodicScheduler([fast("tick", 0.05)], submit=submit, is_running=lambda name: False)
    scheduler.start(asyncio.get_running_loop())
    started = scheduler.running
    assert started
    try:
        await asyncio.sleep(0.2)
        await wait_for_calls(submit, 2)  # about 3 by now; only a lower bound is asserted
    finally:
        scheduler.stop()
    assert not scheduler.running
    fired = len(submit.calls)
    assert fired >= 2
    slots = submit.slots
    assert all(later > earlier for earlier, later in zip(slots, slots[1:], strict=False))
    await asyncio.sleep(0.15)
    assert len(submit.calls) == fired


async def test_a_task_added_after_start_gets_the_timer() -> None:
    submit = Submitter()
    scheduler = PeriodicScheduler([], submit=submit, is_running=lambda name: False)
    scheduler.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(0.02)
        assert submit.calls == []
        scheduler.add(fast("tick", 0.03))
        await wait_for_calls(submit, 2)
    finally:
        scheduler.stop()


async def test_the_timer_survives_a_raising_submit() -> None:
    submit = Submitter()
    submit.fail = True
    scheduler = PeriodicScheduler([fast("tick", 0.03)], submit=submit, is_running=lambda name: False)
    scheduler.start(asyncio.get_running_loop())
    try:

        async def errors(count: int) -> None:
            while scheduler.stats["tick"]["errors"] < count:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(errors(2), WAIT_BOUND)
        submit.fail = False
        await wait_for_calls(submit, 1)
    finally:
        scheduler.stop()


def test_a_long_every_without_remembered_runs_warns_that_restarts_push_it_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Without --journal an every=3600 task's first run is an hour after each start: a control plane
    # redeployed more often than hourly never ran it, and nothing said so
    with caplog.at_level(logging.WARNING, logger="fastworker.controlplane.periodic"):
        make(every("hourly", 3600), every("often", 30))
    warned = [r.getMessage() for r in caplog.records if "without --journal" in r.getMessage()]
    assert len(warned) == 1
    assert "'hourly' runs every 3600 s, next in 3600 s" in warned[0] and "cron=" in warned[0]

    # Once per task: not again when its schedule comes and goes with subworkers
    scheduler, *_ = make(every("hourly", 3600))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastworker.controlplane.periodic"):
        scheduler._start(every("hourly", 3600), "w1", None)
    assert not [r for r in caplog.records if "without --journal" in r.getMessage()]

    # With remembered last runs (a journal, even an empty one) there is no trap to warn about
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastworker.controlplane.periodic"):
        make(every("hourly", 3600), last_runs={})
    assert not [r for r in caplog.records if "without --journal" in r.getMessage()]
