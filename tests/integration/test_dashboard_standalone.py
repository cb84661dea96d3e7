"""``fastworker-dashboard`` as its own process against a remote control plane (no in-process dashboard)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from fastworker.controlplane.testing import stop_process, wait_for_ready_file


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


def test_a_standalone_dashboard_reads_a_remote_control_plane_and_stops_cleanly(
    start_cp_for_workers: Any, start_worker: Any, tmp_path: Path
) -> None:
    control_plane = start_cp_for_workers()
    assert control_plane.dashboard is None
    start_worker(control_plane, "standalone-w1", concurrency=1)
    ready = tmp_path / "dashboard-ready.json"
    log_path = tmp_path / "dashboard.log"
    argv = [
        sys.executable,
        "-m",
        "fastworker.dashboard.web",
        "--control-plane",
        control_plane.discovery,
        "--dashboard-address",
        "127.0.0.1:0",
        "--read-only",
        "--ready-file",
        str(ready),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        info = wait_for_ready_file(ready, process, log_path, timeout=30)
        url = str(info["dashboard"])
        assert info["pid"] == process.pid and url.startswith("http://127.0.0.1:")

        overview = fetch(url + "/")
        assert "standalone-w1" in overview and 'href="/tasks"' in overview
        assert "Purge" not in overview  # read-only: no action buttons
        metrics = fetch(url + "/metrics")
        assert "fastworker_workers_online 1" in metrics
    finally:
        code = stop_process(process)
        print(log_path.read_text())
    assert code == 0
    assert not ready.exists()  # it serves no more
