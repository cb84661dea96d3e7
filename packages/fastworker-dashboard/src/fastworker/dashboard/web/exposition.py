"""Writes the control plane's stats, queues and workers in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastworker.dashboard.queues import queue_name

#: The content type Prometheus expects for this format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MetricType = Literal["counter", "gauge"]


def escape_label_value(value: str) -> str:
    r"""Escape a label value: backslash, double quote and line feed become ``\\``, ``\"`` and ``\n``."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a decimal point, ``NaN``, ``+Inf`` and ``-Inf`` spelled as Prometheus does."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class Metric:
    """One metric family: its name, type, help text and samples (labels, value)."""

    name: str
    kind: MetricType
    help: str
    samples: list[tuple[Mapping[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Metric:
        """Append a sample; returns self for chaining."""
        self.samples.append((labels, value))
        return self

    def render(self) -> str:
        """The family's ``# HELP``, ``# TYPE`` and sample lines."""
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            label_text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
            selector = f"{{{label_text}}}" if label_text else ""
            lines.append(f"{self.name}{selector} {format_value(value)}")
        return "\n".join(lines)


def render(metrics: Iterable[Metric]) -> str:
    """The exposition text for metric families (ends with a newline, as the format requires)."""
    return "\n".join(m.render() for m in metrics) + "\n"


def _number(stats: Mapping[str, Any], key: str) -> float:
    value = stats.get(key, 0)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return math.nan


_COUNTERS = (
    ("fastworker_tasks_submitted_total", "submitted", "Tasks accepted by the control plane."),
    ("fastworker_tasks_succeeded_total", "succeeded", "Tasks that ended in SUCCESS."),
    ("fastworker_tasks_failed_total", "failed", "Tasks that ended in FAILURE."),
    ("fastworker_tasks_cancelled_total", "cancelled", "Tasks that ended in CANCELLED."),
    ("fastworker_tasks_retried_total", "retried", "Re-runs of tasks (automatic retries and operator retries)."),
    ("fastworker_result_cache_hits_total", "cache_hits", "Result cache lookups that found the task."),
    ("fastworker_result_cache_misses_total", "cache_misses", "Result cache lookups that did not find the task."),
    (
        "fastworker_rejected_frames_total",
        "rejected_frames",
        "Frames refused as malformed, oversized or unauthenticated.",
    ),
    ("fastworker_executed_locally_total", "executed_locally", "Task attempts the control plane ran on its own slots."),
    ("fastworker_auth_failures_total", "auth_failures", "Frames refused because they failed authentication."),
    ("fastworker_workers_lost_total", "workers_lost", "Subworkers dropped (silent, disconnected, or replaced)."),
)
_GAUGES = (
    ("fastworker_tasks_running", "running", "Tasks executing now."),
    ("fastworker_tasks_scheduled", "scheduled", "Tasks waiting for their countdown, ETA or periodic slot."),
    ("fastworker_tasks_queued", "queued", "Tasks waiting in the priority queues."),
    ("fastworker_workers_online", "workers", "Subworkers registered now."),
    ("fastworker_result_cache_entries", "cache_size", "Finished tasks kept in the result cache."),
    ("fastworker_uptime_seconds", "uptime", "Seconds since the control plane started."),
)


#: Named queues exported by name, as the control plane's own exporter does; the rest share :data:`OTHER_QUEUE`.
MAX_NAMED_QUEUES = 100
#: The label value the queues beyond :data:`MAX_NAMED_QUEUES` are summed under (queue names come from submissions).
OTHER_QUEUE = "__other__"


def _level_families(queues: Sequence[Mapping[str, Any]]) -> list[Metric]:
    """Depth, oldest age and paused flag per priority level, across every named queue (one sample per level)."""
    depth: dict[str, float] = {}
    oldest: dict[str, float] = {}
    paused: dict[str, bool] = {}
    for queue in queues:
        level = str(queue.get("priority", ""))
        depth[level] = depth.get(level, 0) + _number(queue, "depth")
        oldest[level] = max(oldest.get(level, 0.0), _number(queue, "oldest_age"))
        paused[level] = paused.get(level, False) or bool(queue.get("paused"))
    depth_metric = Metric("fastworker_queue_depth", "gauge", "Tasks waiting per priority level, in every queue.")
    oldest_metric = Metric(
        "fastworker_queue_oldest_age_seconds", "gauge", "Age of the oldest waiting task per level, in every queue."
    )
    paused_metric = Metric("fastworker_queue_paused", "gauge", "1 when the priority level is paused (in every queue).")
    for level in depth:  # in the order listed: critical first
        depth_metric.add(depth[level], priority=level)
        oldest_metric.add(oldest[level], priority=level)
        paused_metric.add(1 if paused[level] else 0, priority=level)
    return [depth_metric, oldest_metric, paused_metric]


def _named_queue_families(queues: Sequence[Mapping[str, Any]]) -> list[Metric]:
    """Depth and oldest age per named queue and level, and who serves each queue (0: its tasks wait)."""
    depths: dict[tuple[str, str], float] = {}
    ages: dict[tuple[str, str], float] = {}
    servers: dict[str, float] = {}
    named: set[str] = set()
    counted: set[str] = set()
    for queue in queues:
        name = queue_name(queue)
        if name in named or len(named) < MAX_NAMED_QUEUES:
            named.add(name)
            label = name
        else:
            label = OTHER_QUEUE
        key = (label, str(queue.get("priority", "")))
        depths[key] = depths.get(key, 0) + _number(queue, "depth")
        ages[key] = max(ages.get(key, 0.0), _number(queue, "oldest_age"))
        if name not in counted and queue.get("servers") is not None:  # once per queue, not per level
            counted.add(name)
            servers[label] = servers.get(label, 0) + _number(queue, "servers")
    depth = Metric("fastworker_named_queue_depth", "gauge", "Tasks waiting per named queue and priority level.")
    oldest = Metric(
        "fastworker_named_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest waiting task per named queue and level.",
    )
    served = Metric(
        "fastworker_named_queue_servers",
        "gauge",
        "Subworkers serving a named queue, plus 1 when the control plane's own slots do (0: its tasks wait).",
    )
    for (label, level), count in depths.items():
        depth.add(count, queue=label, priority=level)
        oldest.add(ages[(label, level)], queue=label, priority=level)
    for label, count in servers.items():
        served.add(count, queue=label)
    return [depth, oldest, served]


def build_metrics(
    stats: Mapping[str, Any], queues: Sequence[Mapping[str, Any]], workers: Sequence[Mapping[str, Any]]
) -> list[Metric]:
    """Every metric family the dashboard exports, from one stats/queues/workers snapshot."""
    families = [Metric(name, "counter", text).add(_number(stats, key)) for name, key, text in _COUNTERS]
    families += [Metric(name, "gauge", text).add(_number(stats, key)) for name, key, text in _GAUGES]

    families += _level_families(queues)
    families += _named_queue_families(queues)

    in_flight = Metric("fastworker_worker_in_flight", "gauge", "Tasks running on each worker.")
    capacity = Metric("fastworker_worker_capacity", "gauge", "Tasks each worker may run at once.")
    processed = Metric("fastworker_worker_processed_total", "counter", "Tasks each worker has finished.")
    worker_failed = Metric("fastworker_worker_failed_total", "counter", "Tasks that failed on each worker.")
    rss = Metric("fastworker_worker_rss_bytes", "gauge", "Resident memory of each worker.")
    for worker in workers:
        worker_id = str(worker.get("worker_id", ""))
        in_flight.add(_number(worker, "in_flight"), worker=worker_id)
        capacity.add(_number(worker, "capacity"), worker=worker_id)
        processed.add(_number(worker, "processed"), worker=worker_id)
        worker_failed.add(_number(worker, "failed"), worker=worker_id)
        rss.add(_number(worker, "rss_bytes"), worker=worker_id)
    families += [in_flight, capacity, processed, worker_failed, rss]
    return families
