"""deploy/monitoring: the alert rules pass promtool (syntax and unit tests) and every metric they and the
Grafana dashboard query is one the control plane exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fastworker.controlplane.coordinator import Counters
from fastworker.controlplane.exporter import ControlPlaneCollector
from fastworker.controlplane.metrics import TaskMetrics
from fastworker.controlplane.snapshot import Snapshot, WorkerGauges

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is not on PATH: `bash scripts/test` installs it (Debian's prometheus package)"
    return found


def exported_names() -> set[str]:
    """Every sample name a control plane exports, with one task, one failure and one worker."""
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


def queried_names(text: str) -> set[str]:
    return set(re.findall(r"\bfastworker_[a-z_]+\b", text))


def test_the_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([promtool(), *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_the_rules_and_the_dashboard_query_is_exported() -> None:
    exported = exported_names()
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    expressions += " " + " ".join(v["query"] for v in dashboard["templating"]["list"] if isinstance(v["query"], str))
    for source, text in (("alerts.yml", (MONITORING / "alerts.yml").read_text()), ("dashboard", expressions)):
        unknown = queried_names(text) - exported
        assert not unknown, f"{source} queries metrics the control plane does not export: {sorted(unknown)}"
    assert len(dashboard["panels"]) >= 10 and dashboard["uid"] == "fastworker"
