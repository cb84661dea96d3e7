"""What one metrics scrape reports, copied on the loop so nothing changes under it.

Kept apart from :mod:`fastworker.controlplane.exporter`, which renders a snapshot with
``prometheus_client``: the control plane imports this module at start and that one only at the
first scrape (~1 MiB it does not hold while nobody scrapes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastworker.controlplane.coordinator import Coordinator, Counters, NamedQueueLevel
from fastworker.controlplane.fleet import Fleet
from fastworker.controlplane.metrics import NameCounts
from fastworker.controlplane.queue import LEVELS, level_name


@dataclass
class WorkerGauges:
    """One connected subworker, as a scrape sees it."""

    worker_id: str
    in_flight: int
    capacity: int
    heartbeat_age: float
    draining: bool
    processed: int
    failed: int
    rss_bytes: int


@dataclass
class Snapshot:
    """Everything one scrape reports, copied at one moment on the loop."""

    tasks: dict[str, NameCounts]
    #: (priority name, depth, seconds the oldest has waited, paused) per level, highest first.
    queues: list[tuple[str, int, float, bool]]
    workers: list[WorkerGauges]
    counters: Counters
    #: The same per named queue and level, with the queue's servers.
    named_queues: list[NamedQueueLevel] = field(default_factory=list)
    scheduled: int = 0
    running: int = 0
    result_cache_size: int = 0
    result_cache_hits: int = 0
    result_cache_misses: int = 0
    accepting: bool = True
    uptime: float = 0.0
    local_concurrency: int = 0


def take_snapshot(coordinator: Coordinator, fleet: Fleet | None) -> Snapshot:
    """Copy what a scrape reports (on the loop: nothing changes while it is copied)."""
    now = coordinator.clock()
    with coordinator.lock:  # slot threads count starts under it
        tasks = coordinator.metrics.snapshot()
    queue = coordinator.queue
    queues = [
        (level_name(level), queue.depth(level), queue.oldest_age(level, now), level in queue.paused) for level in LEVELS
    ]
    workers = [
        WorkerGauges(
            w.worker_id,
            len(w.leases),
            w.capacity,
            max(0.0, now - w.last_seen),
            w.draining,
            w.processed,
            w.failed,
            w.rss_bytes,
        )
        for w in (fleet or ())
    ]
    counters = Counters(**vars(coordinator.counters))
    return Snapshot(
        tasks=tasks,
        queues=queues,
        named_queues=coordinator.named_queues(now),
        workers=workers,
        counters=counters,
        scheduled=coordinator.scheduled_count,
        running=coordinator.running_total,
        result_cache_size=len(coordinator.cache),
        result_cache_hits=coordinator.cache.hits,
        result_cache_misses=coordinator.cache.misses,
        accepting=coordinator.accepting,
        uptime=now - coordinator.started_at,
        local_concurrency=coordinator.local.concurrency,
    )
