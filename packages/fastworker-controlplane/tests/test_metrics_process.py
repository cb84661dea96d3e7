"""GET /metrics and /healthz of a real control-plane process after known work, checked by promtool.

In the ``controlplane`` tox environment the dashboard distribution is not installed: these metrics
are the control plane's own. ``promtool`` (Prometheus's linter) comes from Debian's prometheus
package; ``scripts/test`` puts it on PATH.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastworker.client import Client, TaskFailed, TaskState
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker, start_controlplane, start_worker
from fastworker.controlplane.version import __version__

HERE = Path(__file__).resolve().parent


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[RunningControlPlane]:
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    running = start_controlplane(task_modules=["cpmetrics_tasks"], env={"PYTHONPATH": path}, workdir=tmp_path)
    try:
        yield running
    finally:
        running.stop()


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


async def test_metrics_after_known_work_are_exact_and_promtool_clean(control_plane: RunningControlPlane) -> None:
    assert control_plane.metrics is not None
    async with Client(control_plane.discovery) as client:
        for i in range(5):
            assert await client.submit("metrics.add", i, 1, timeout=10) == i + 1
        for key in ("a", "b"):
            with pytest.raises(TaskFailed):
                await client.submit("metrics.missing", key, timeout=10)
        assert await client.submit("metrics.flaky", timeout=10) == "ok"

    status, body = get(f"{control_plane.metrics}/metrics")
    assert status == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    add, missing, flaky = (("task", "metrics.add"),), (("task", "metrics.missing"),), (("task", "metrics.flaky"),)
    assert samples[("fastworker_tasks_submitted_total", add)] == 5
    assert samples[("fastworker_tasks_succeeded_total", add)] == 5
    assert samples[("fastworker_tasks_failed_total", (("exception", "KeyError"), *missing))] == 2
    assert samples[("fastworker_tasks_retried_total", flaky)] == 1
    assert samples[("fastworker_tasks_started_total", flaky)] == 2
    assert samples[("fastworker_task_runtime_seconds_count", add)] == 5
    assert samples[("fastworker_task_runtime_seconds_bucket", (("le", "+Inf"), *add))] == 5
    assert samples[("fastworker_task_queue_wait_seconds_count", flaky)] == 2
    # the retry's 0.05 s delay is spent scheduled, not queued: its queue wait counts from its due time
    assert samples[("fastworker_task_queue_wait_seconds_bucket", (("le", "1.0"), *flaky))] == 2
    assert samples[("fastworker_queue_depth", (("priority", "normal"),))] == 0
    assert samples[("fastworker_workers_online", ())] == 0
    assert samples[("fastworker_auth_failures_total", ())] == 0
    assert ("fastworker_build_info", (("version", __version__),)) in samples
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert "fastworker_throughput_tasks_per_second" not in body.decode()

    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH: `bash scripts/test` installs it (Debian's prometheus package)"
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.strip() == b"" and checked.stderr.strip() == b"", "promtool found lint problems"

    assert get(f"{control_plane.metrics}/healthz") == (200, b"ok\n")


def samples_of(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def test_a_live_subworker_s_gauges_are_exported_and_promtool_clean(tmp_path: Path) -> None:
    # Given a control plane that runs nothing itself and one subworker with one slot
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path}
    control_plane = start_controlplane(extra_args=["--local-concurrency", "0"], env=env, workdir=tmp_path)
    try:
        worker = start_worker(
            control_plane.discovery,
            task_modules=["cpmetrics_tasks"],
            concurrency=1,
            worker_id="metrics-w1",
            env=env,
            workdir=tmp_path,
        )
        try:
            await _check_worker_series(control_plane, tmp_path / "release", worker)
        finally:
            worker.stop()
    finally:
        control_plane.stop()


async def _check_worker_series(control_plane: RunningControlPlane, release: Path, worker: RunningWorker) -> None:
    assert control_plane.metrics is not None
    one = (("worker", "metrics-w1"),)
    async with Client(control_plane.discovery) as client:
        # When a task runs on it (held until the test releases it)
        task_id = await client.delay("metrics.wait_for", str(release))
        deadline = time.monotonic() + 20
        while (await client.status(task_id)).state is not TaskState.RUNNING:
            assert time.monotonic() < deadline, "the task never started on the subworker"
            await asyncio.sleep(0.05)
        status, body = get(f"{control_plane.metrics}/metrics")
        assert status == 200
        samples = samples_of(body)
        # Then the worker is online, with the task in flight and a fresh heartbeat
        assert samples[("fastworker_workers_online", ())] == 1
        assert samples[("fastworker_worker_online", one)] == 1
        assert samples[("fastworker_worker_in_flight", one)] == 1
        assert samples[("fastworker_worker_capacity", one)] == 1
        assert samples[("fastworker_worker_draining", one)] == 0
        # (heartbeats come every second; a worker silent for --heartbeat-timeout, 5 s, is dropped)
        assert 0 <= samples[("fastworker_worker_last_heartbeat_age_seconds", one)] < 5
        assert samples[("fastworker_tasks_started_total", (("task", "metrics.wait_for"),))] == 1
        # and promtool finds nothing to say about an exposition with worker series
        promtool = shutil.which("promtool")
        assert promtool, "promtool is not on PATH: `bash scripts/test` installs it (Debian's prometheus package)"
        checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
        assert checked.stdout.strip() == b"" and checked.stderr.strip() == b"", "promtool found lint problems"

        # When it finishes, nothing is in flight any more and the success is counted
        release.touch()
        assert await client.result(task_id, timeout=30) == "released"
    samples = samples_of(get(f"{control_plane.metrics}/metrics")[1])
    assert samples[("fastworker_worker_in_flight", one)] == 0
    assert samples[("fastworker_tasks_succeeded_total", (("task", "metrics.wait_for"),))] == 1
    assert samples[("fastworker_workers_lost_total", ())] == 0

    # When the worker dies without a word, its series end and the loss is counted (what the alert reads)
    worker.process.kill()
    deadline = time.monotonic() + 30
    while samples_of(get(f"{control_plane.metrics}/metrics")[1])[("fastworker_workers_online", ())] != 0:
        assert time.monotonic() < deadline, "the killed worker was never dropped"
        await asyncio.sleep(0.1)
    samples = samples_of(get(f"{control_plane.metrics}/metrics")[1])
    assert samples[("fastworker_workers_lost_total", ())] == 1
    assert ("fastworker_worker_online", one) not in samples
    async with Client(control_plane.discovery) as client:
        assert (await client.stats())["workers_lost"] == 1


async def test_libraries_an_idle_control_plane_does_not_use_load_only_when_first_needed(
    control_plane: RunningControlPlane,
) -> None:
    """Idle, the control plane holds neither the metrics nor the cron library, the process pool or the
    subworker's runtime (~4 MiB together, issue 18's idle bound): a scrape loads the metrics library."""
    assert control_plane.metrics is not None
    heavy = [
        "croniter",
        "dateutil",
        "fastworker.worker.pool",
        "fastworker.worker.runtime",
        "multiprocessing",
        "prometheus_client",
    ]
    async with Client(control_plane.discovery) as client:
        assert await client.submit("metrics.loaded", heavy, timeout=10) == []
        status, body = get(f"{control_plane.metrics}/healthz")
        assert status == 200
        assert await client.submit("metrics.loaded", heavy, timeout=10) == []
        status, body = get(f"{control_plane.metrics}/metrics")
        assert status == 200 and b"fastworker_tasks_submitted_total" in body
        assert await client.submit("metrics.loaded", heavy, timeout=10) == ["prometheus_client"]


async def test_slots_a_periodic_task_skips_while_its_run_goes_on_are_counted(tmp_path: Path) -> None:
    # Given a periodic task (every 1 s) whose first run goes on until the test releases it
    release = tmp_path / "release"
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "CPMETRICS_RELEASE": str(release)}
    control_plane = start_controlplane(task_modules=["cpmetrics_periodic"], env=env, workdir=tmp_path)
    try:
        assert control_plane.metrics is not None
        # Then the slots that come meanwhile are skipped by the overlap rule, and /metrics counts them
        key = ("fastworker_periodic_slots_skipped_total", (("reason", "overlap"), ("task", "metrics.slow_beat")))
        deadline = time.monotonic() + 30
        while samples_of(get(f"{control_plane.metrics}/metrics")[1]).get(key, 0) < 2:
            assert time.monotonic() < deadline, "no skipped slot counted within 30 s"
            await asyncio.sleep(0.1)
    finally:
        release.touch()
        control_plane.stop()
