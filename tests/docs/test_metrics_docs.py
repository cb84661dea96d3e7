"""The two ``/metrics`` endpoints: while the dashboard's reuses the control plane's metric names, the docs say to scrape one.

Scraping both double-counts every ``sum(rate(...))``; an operator learns that only from the docs.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fastworker.controlplane.coordinator import Counters
from fastworker.controlplane.exporter import ControlPlaneCollector
from fastworker.controlplane.metrics import TaskMetrics
from fastworker.controlplane.snapshot import Snapshot, WorkerGauges
from fastworker.dashboard.web.exposition import build_metrics

DOCS = Path(__file__).resolve().parents[2] / "docs"


def control_plane_sample_names() -> set[str]:
    """Every sample name the control plane's own ``/metrics`` has with one task and one worker."""
    metrics = TaskMetrics()
    metrics.submitted("t")
    metrics.failed("t", "KeyError")
    snapshot = Snapshot(
        tasks=metrics.snapshot(),
        queues=[("normal", 0, 0.0, False)],
        workers=[WorkerGauges("w", 0, 4, 0.5, False, 0, 0, 0)],
        counters=Counters(),
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(lambda: snapshot))
    text = generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def dashboard_sample_names() -> set[str]:
    """Every sample name the standalone dashboard's ``/metrics`` has with one queue level and one worker."""
    queues = [{"queue": "default", "priority": "normal", "depth": 0, "oldest_age": 0.0, "paused": False, "servers": 1}]
    workers = [{"worker_id": "w", "in_flight": 0, "capacity": 4, "processed": 0, "failed": 0, "rss_bytes": 0}]
    return {family.name for family in build_metrics({}, queues, workers)}


def test_while_the_two_metrics_endpoints_share_names_the_docs_say_to_scrape_one() -> None:
    shared = control_plane_sample_names() & dashboard_sample_names()
    if not shared:
        return  # the dashboard has names of its own: scraping both is harmless
    assert "fastworker_tasks_succeeded_total" in shared
    for page in ("dashboard.md", "operations.md"):
        text = " ".join((DOCS / page).read_text().split())
        assert "the same metric names" in text, f"docs/{page} does not warn that both share {sorted(shared)[:3]}..."
        assert "not both" in text or "never both" in text, f"docs/{page} does not say to scrape only one"
