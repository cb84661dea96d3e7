"""Per task name metrics: what the coordinator counts as tasks run, and how it is exported (bounded labels)."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fastworker.client import Retry
from fastworker.controlplane.coordinator import Counters
from fastworker.controlplane.exporter import ControlPlaneCollector
from fastworker.controlplane.metrics import (
    MAX_EXCEPTION_TYPES,
    MAX_LABEL_LENGTH,
    MAX_TASK_NAMES,
    OTHER,
    TIME_BUCKETS,
    TaskMetrics,
)
from fastworker.controlplane.snapshot import Snapshot, take_snapshot

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(snapshot: Any) -> Samples:
    """Render through prometheus_client and parse the text back: every sample by (name, sorted labels)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(lambda: snapshot))
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_counts_by_outcome_and_histograms_per_task_name(harness: Any) -> None:
    # Given tasks that succeed, fail with their own exception, and fail once then succeed on retry
    harness.task(lambda x: x + 1, name="inc")

    def boom() -> None:
        raise KeyError("missing")

    harness.task(boom, name="boom")
    attempts = {"n": 0}

    def flaky() -> str:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise Retry(delay=0.01)
        return "ok"

    harness.task(flaky, name="flaky", retries=2)
    coordinator = harness.coordinator(local_concurrency=2)

    # When each runs to its final state
    ids = [coordinator.submit(harness.spec("inc", i))[0].task_id for i in range(3)]
    ids.append(coordinator.submit(harness.spec("boom"))[0].task_id)
    ids.append(coordinator.submit(harness.spec("flaky"))[0].task_id)
    for task_id in ids:
        await harness.final(coordinator, task_id)

    # Then the exported counters say so, per name and per exception type
    samples = scrape(take_snapshot(coordinator, None))
    assert samples[("fastworker_tasks_submitted_total", (("task", "inc"),))] == 3
    assert samples[("fastworker_tasks_started_total", (("task", "inc"),))] == 3
    assert samples[("fastworker_tasks_succeeded_total", (("task", "inc"),))] == 3
    assert samples[("fastworker_tasks_failed_total", (("exception", "KeyError"), ("task", "boom")))] == 1
    assert samples[("fastworker_tasks_retried_total", (("task", "flaky"),))] == 1
    assert samples[("fastworker_tasks_started_total", (("task", "flaky"),))] == 2
    assert samples[("fastworker_tasks_succeeded_total", (("task", "flaky"),))] == 1
    assert ("fastworker_tasks_failed_total", (("exception", "Retry"), ("task", "flaky"))) not in samples
    # and each attempt that ran is in the runtime histogram, each start in the queue-wait one
    assert samples[("fastworker_task_runtime_seconds_count", (("task", "inc"),))] == 3
    assert samples[("fastworker_task_runtime_seconds_count", (("task", "flaky"),))] == 2
    assert samples[("fastworker_task_queue_wait_seconds_count", (("task", "flaky"),))] == 2
    assert samples[("fastworker_task_runtime_seconds_bucket", (("le", "+Inf"), ("task", "inc")))] == 3
    assert samples[("fastworker_task_runtime_seconds_sum", (("task", "inc"),))] >= 0
    assert samples[("fastworker_queue_depth", (("priority", "normal"),))] == 0
    assert samples[("fastworker_workers_online", ())] == 0

    # A retry() of the failed one is a retry in /metrics as in stats (it counted in stats only)
    coordinator.retry(ids[3])
    await harness.final(coordinator, ids[3])
    samples = scrape(take_snapshot(coordinator, None))
    assert samples[("fastworker_tasks_retried_total", (("task", "boom"),))] == 1
    assert coordinator.counters.retried == 2  # flaky's automatic retry and this one


async def test_a_cancelled_waiting_task_counts_as_cancelled_without_a_runtime(harness: Any) -> None:
    started, release = harness.gate(), harness.gate()

    def block() -> None:
        started.set()
        assert release.wait(10)

    harness.task(block, name="block")
    harness.task(lambda: None, name="later")
    coordinator = harness.coordinator(local_concurrency=1)
    coordinator.submit(harness.spec("block"))
    while not started.is_set():
        await asyncio.sleep(0.005)
    waiting, _ = coordinator.submit(harness.spec("later"))
    coordinator.cancel(waiting.task_id)
    release.set()

    samples = scrape(take_snapshot(coordinator, None))
    assert samples[("fastworker_tasks_cancelled_total", (("task", "later"),))] == 1
    assert samples[("fastworker_tasks_started_total", (("task", "later"),))] == 0
    assert samples[("fastworker_task_runtime_seconds_count", (("task", "later"),))] == 0


def test_task_names_beyond_the_bound_share_one_label() -> None:
    metrics = TaskMetrics()
    for i in range(MAX_TASK_NAMES + 50):
        metrics.submitted(f"task-{i}")
    counts = metrics.snapshot()
    assert len(counts) == MAX_TASK_NAMES + 1
    assert counts[OTHER].submitted == 50
    metrics.submitted("task-0")  # a name that has its own label keeps it
    assert metrics.snapshot()["task-0"].submitted == 2


def test_exception_types_beyond_the_bound_share_one_label() -> None:
    metrics = TaskMetrics()
    for i in range(MAX_EXCEPTION_TYPES + 5):
        metrics.failed("t", f"Error{i}")
    failed = metrics.snapshot()["t"].failed
    assert len(failed) == MAX_EXCEPTION_TYPES + 1
    assert failed[OTHER] == 5


def test_histogram_buckets_are_cumulative_in_the_export_and_negative_times_count_as_zero() -> None:
    metrics = TaskMetrics()
    for seconds in (-3.0, 0.0005, 0.02, 7.0, 10_000.0):
        metrics.ran("t", seconds)
    histogram = metrics.snapshot()["t"].runtime
    assert sum(histogram.counts) == 5
    assert histogram.counts[0] == 2  # -3 (clamped) and 0.0005 are both <= the first bound
    assert histogram.counts[-1] == 1  # 10,000 s is beyond the last bound: +Inf only
    assert abs(histogram.sum - (0.0005 + 0.02 + 7.0 + 10_000.0)) < 1e-9
    assert len(histogram.counts) == len(TIME_BUCKETS) + 1


def test_a_snapshot_is_a_copy() -> None:
    metrics = TaskMetrics()
    metrics.submitted("t")
    copy = metrics.snapshot()
    metrics.submitted("t")
    metrics.ran("t", 1.0)
    assert copy["t"].submitted == 1
    assert sum(copy["t"].runtime.counts) == 0


def test_a_task_name_longer_than_a_label_keeps_its_counts_under_the_cut_name() -> None:
    # Task names have no length limit, but labels are cut: every update must find the cut entry
    name = "t" * (MAX_LABEL_LENGTH + 50)
    metrics = TaskMetrics()
    for _ in range(3):
        metrics.submitted(name)
    metrics.started(name, 0.5)
    metrics.succeeded(name)
    counts = metrics.snapshot()
    assert list(counts) == [name[:MAX_LABEL_LENGTH]]
    only = counts[name[:MAX_LABEL_LENGTH]]
    assert (only.submitted, only.started, only.succeeded) == (3, 1, 1)
    assert sum(only.queue_wait.counts) == 1


def test_periodic_slots_skipped_are_exported_per_task_name_and_reason() -> None:
    # A periodic task skipping slots (for a run still going, or missed) showed on no metric
    metrics = TaskMetrics()
    metrics.periodic_slots_skipped("beat", "overlap", 1)
    metrics.periodic_slots_skipped("beat", "overlap", 2)
    metrics.periodic_slots_skipped("beat", "missed", 4)
    metrics.submitted("other")
    snapshot = Snapshot(tasks=metrics.snapshot(), queues=[], workers=[], counters=Counters())

    samples = scrape(snapshot)

    skipped = "fastworker_periodic_slots_skipped_total"
    assert samples[(skipped, (("reason", "overlap"), ("task", "beat")))] == 3
    assert samples[(skipped, (("reason", "missed"), ("task", "beat")))] == 4
    assert [key for key in samples if key[0] == skipped and ("task", "other") in key[1]] == []
