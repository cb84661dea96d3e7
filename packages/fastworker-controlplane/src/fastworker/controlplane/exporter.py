"""The control plane's state as Prometheus metric families, rendered off the loop.

:func:`fastworker.controlplane.snapshot.take_snapshot` copies what a scrape reports on the loop;
:class:`ControlPlaneCollector` turns that snapshot into families for ``prometheus_client`` on the
HTTP server's thread. Counters are exported as counters (rates are ``rate()``'s job), label
values are bounded (see ``fastworker.controlplane.metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from fastworker.controlplane.coordinator import NamedQueueLevel
from fastworker.controlplane.metrics import OTHER, TIME_BUCKETS, NameCounts
from fastworker.controlplane.queue import LEVELS, level_name
from fastworker.controlplane.snapshot import Snapshot, WorkerGauges
from fastworker.controlplane.version import __version__

#: Control-plane-wide counters exported as ``fastworker_<name>_total``: (Counters field, help).
_PLANE_COUNTERS = (
    ("rejected_frames", "Frames refused as malformed, oversize or unauthenticated."),
    ("auth_failures", "Frames refused because they failed authentication."),
    ("late_outcomes", "Subworker outcomes ignored because the task had been taken back."),
    ("duplicate_worker_ids", "Registrations refused because a live worker held the id."),
    ("connections_refused", "Connections refused by --max-connections or --max-connections-per-peer."),
    ("connections_idle_closed", "Connections closed for silence or to make room."),
    ("connections_dropped_unread", "Connections closed for not reading their replies."),
    ("executed_locally", "Task attempts the control plane ran on its own slots."),
    ("workers_lost", "Subworkers dropped: heartbeats stopped, connection dropped, or a new process took the id."),
)


#: Named queues exported by name; the others are summed under ``queue="__other__"`` (bounded labels).
MAX_NAMED_QUEUES = 100


def _named_queue_families(levels: list[NamedQueueLevel]) -> Iterator[Metric]:
    """Depth and age per named queue and priority, and who serves each queue (0: its tasks wait)."""
    depth = GaugeMetricFamily(
        "fastworker_named_queue_depth",
        "Tasks waiting to start, per named queue and priority.",
        labels=["queue", "priority"],
    )
    oldest = GaugeMetricFamily(
        "fastworker_named_queue_oldest_age_seconds",
        "Seconds the oldest waiting task of a named queue and priority has waited (0 when none waits).",
        labels=["queue", "priority"],
    )
    servers = GaugeMetricFamily(
        "fastworker_named_queue_servers",
        "Subworkers serving a named queue, plus 1 when the control plane's own slots do (0: its tasks wait).",
        labels=["queue"],
    )
    # Queue names come from submissions: past MAX_NAMED_QUEUES, the rest are summed under OTHER.
    depths: dict[tuple[str, int], int] = {}
    ages: dict[tuple[str, int], float] = {}
    served: dict[str, int] = {}
    for level in levels:
        queue = level.queue if level.queue in served or len(served) < MAX_NAMED_QUEUES else OTHER
        key = (queue, level.level)
        depths[key] = depths.get(key, 0) + level.depth
        ages[key] = max(ages.get(key, 0.0), level.oldest_age)
        if queue != OTHER:
            served[queue] = level.servers
        elif level.level == LEVELS[0]:  # once per queue, not per level
            served[OTHER] = served.get(OTHER, 0) + level.servers
    for (queue, level_number), count in depths.items():
        depth.add_metric([queue, level_name(level_number)], count)
        oldest.add_metric([queue, level_name(level_number)], ages[(queue, level_number)])
    for queue, count in served.items():
        servers.add_metric([queue], count)
    yield from (depth, oldest, servers)


def families(snapshot: Snapshot) -> Iterator[Metric]:
    """The metric families of one snapshot."""
    yield from _task_families(snapshot.tasks)
    depth = GaugeMetricFamily("fastworker_queue_depth", "Tasks waiting to start, per priority.", labels=["priority"])
    oldest = GaugeMetricFamily(
        "fastworker_queue_oldest_age_seconds",
        "Seconds the oldest waiting task of a priority has waited (0 when none waits).",
        labels=["priority"],
    )
    paused = GaugeMetricFamily("fastworker_queue_paused", "1 while a priority level is paused.", labels=["priority"])
    for name, count, age, is_paused in snapshot.queues:
        depth.add_metric([name], count)
        oldest.add_metric([name], age)
        paused.add_metric([name], 1 if is_paused else 0)
    yield from (depth, oldest, paused)
    yield from _named_queue_families(snapshot.named_queues)
    yield GaugeMetricFamily(
        "fastworker_tasks_scheduled",
        "Tasks waiting for their eta, countdown, retry or dependencies.",
        value=snapshot.scheduled,
    )
    yield GaugeMetricFamily(
        "fastworker_tasks_running", "Tasks running now, here and on subworkers.", value=snapshot.running
    )
    yield GaugeMetricFamily(
        "fastworker_result_cache_entries", "Finished tasks kept in the result cache.", value=snapshot.result_cache_size
    )
    yield CounterMetricFamily(
        "fastworker_result_cache_hits", "Result lookups that found the task.", value=snapshot.result_cache_hits
    )
    yield CounterMetricFamily(
        "fastworker_result_cache_misses",
        "Result lookups that did not find the task.",
        value=snapshot.result_cache_misses,
    )
    yield GaugeMetricFamily(
        "fastworker_local_slots", "Tasks the control plane runs at once itself.", value=snapshot.local_concurrency
    )
    yield from _worker_families(snapshot.workers)
    for field_name, text in _PLANE_COUNTERS:
        yield CounterMetricFamily(f"fastworker_{field_name}", text, value=getattr(snapshot.counters, field_name))
    yield GaugeMetricFamily(
        "fastworker_accepting",
        "1 while the control plane accepts tasks (0 while it shuts down).",
        value=snapshot.accepting,
    )
    yield GaugeMetricFamily(
        "fastworker_uptime_seconds", "Seconds since the control plane started.", value=snapshot.uptime
    )
    info = GaugeMetricFamily("fastworker_build_info", "The control plane's version (always 1).", labels=["version"])
    info.add_metric([__version__], 1)
    yield info


def _task_families(tasks: dict[str, NameCounts]) -> Iterator[Metric]:
    simple = (
        ("submitted", "Tasks accepted, per task name."),
        ("started", "Task attempts started, per task name."),
        ("succeeded", "Tasks that ended in SUCCESS, per task name."),
        ("retried", "Failed attempts that were retried, per task name."),
        ("cancelled", "Tasks that ended in CANCELLED (expired ones included), per task name."),
    )
    names = sorted(tasks)
    for attribute, text in simple:
        family = CounterMetricFamily(f"fastworker_tasks_{attribute}", text, labels=["task"])
        for name in names:
            family.add_metric([name], getattr(tasks[name], attribute))
        yield family
    # Counters broken down by a second label: (attribute holding {label value: count}, metric, label, help)
    for attribute, metric, label, text in (
        (
            "failed",
            "fastworker_tasks_failed",
            "exception",
            "Tasks that ended in FAILURE, per task name and error type.",
        ),
        (
            "periodic_skipped",
            "fastworker_periodic_slots_skipped",
            "reason",
            "Slots of a periodic task that got no run, per task name and reason (overlap, missed, refused, error).",
        ),
    ):
        family = CounterMetricFamily(metric, text, labels=["task", label])
        for name in names:
            for key, count in sorted(getattr(tasks[name], attribute).items()):
                family.add_metric([name, key], count)
        yield family
    for attribute, metric, text in (
        ("runtime", "fastworker_task_runtime_seconds", "Seconds each attempt ran, per task name."),
        (
            "queue_wait",
            "fastworker_task_queue_wait_seconds",
            "Seconds from when an attempt could run (queued, its eta or retry due) to its start, per task name.",
        ),
    ):
        histograms = HistogramMetricFamily(metric, text, labels=["task"])
        for name in names:
            histogram = getattr(tasks[name], attribute)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*TIME_BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            histograms.add_metric([name], buckets, histogram.sum)
        yield histograms


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def _worker_families(workers: list[WorkerGauges]) -> Iterator[Metric]:
    yield GaugeMetricFamily("fastworker_workers_online", "Subworkers registered now.", value=len(workers))
    online = GaugeMetricFamily("fastworker_worker_online", "1 for each subworker registered now.", labels=["worker"])
    in_flight = GaugeMetricFamily(
        "fastworker_worker_in_flight", "Tasks leased to a subworker (running or prefetched).", labels=["worker"]
    )
    capacity = GaugeMetricFamily("fastworker_worker_capacity", "A subworker's slots.", labels=["worker"])
    heartbeat = GaugeMetricFamily(
        "fastworker_worker_last_heartbeat_age_seconds",
        "Seconds since a subworker was last heard from.",
        labels=["worker"],
    )
    draining = GaugeMetricFamily("fastworker_worker_draining", "1 while a subworker drains to stop.", labels=["worker"])
    processed = CounterMetricFamily(
        "fastworker_worker_processed",
        "Runs a subworker ended in success since it registered (failed and cancelled ones: _failed_total).",
        labels=["worker"],
    )
    failed = CounterMetricFamily(
        "fastworker_worker_failed",
        "Runs that failed or were cancelled on a subworker since it registered.",
        labels=["worker"],
    )
    rss = GaugeMetricFamily(
        "fastworker_worker_rss_bytes", "A subworker's resident memory, as it reports it.", labels=["worker"]
    )
    for worker in sorted(workers, key=lambda w: w.worker_id):
        labels = [worker.worker_id]
        online.add_metric(labels, 1)
        in_flight.add_metric(labels, worker.in_flight)
        capacity.add_metric(labels, worker.capacity)
        heartbeat.add_metric(labels, worker.heartbeat_age)
        draining.add_metric(labels, 1 if worker.draining else 0)
        processed.add_metric(labels, worker.processed)
        failed.add_metric(labels, worker.failed)
        rss.add_metric(labels, worker.rss_bytes)
    yield from (online, in_flight, capacity, heartbeat, draining, processed, failed, rss)


class ControlPlaneCollector(Collector):
    """A ``prometheus_client`` collector over snapshots taken by ``snapshot`` (which may raise to fail the scrape)."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """The families of a fresh snapshot (called by the registry for each scrape)."""
        yield from families(self._snapshot())
