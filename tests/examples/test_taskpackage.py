"""examples/taskpackage/run.py: a package of task modules loaded by name, run on a subworker."""

from __future__ import annotations

from typing import Any


def test_the_task_package_runs_on_its_subworker(run_example: Any) -> None:
    finished = run_example(["examples/taskpackage/run.py"])
    assert finished.returncode == 0, finished.output
    for line in (
        "subworker acme-1 (pid",
        "emails.send_welcome -> {'to': 'ada@example.com', 'subject': 'Welcome, Ada!'}",
        "reports.monthly -> 2026-11: total 25.00 over 2 sales",
        "20 reports.checksum tasks -> 20 distinct digests",
        "bad address -> FAILURE after 1 attempt(s): not an email address: 'not-an-address'",
        "ran on: acme-1",
        "stopped both",
    ):
        assert line in finished.output, finished.output
