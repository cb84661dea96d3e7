"""examples/testing_project: a user's project whose own tests use the pytest plugin's fixtures.

Run here as its user would (``pytest examples/testing_project``). ``-p`` names the plugin for
checkouts where fastworker-controlplane is not installed; where it is (its pytest11 entry point
carries the same name), the flag is a no-op.
"""

from __future__ import annotations

from typing import Any


def test_the_user_project_passes_with_eager_and_live_fixtures(run_example: Any) -> None:
    finished = run_example(
        [
            "-m",
            "pytest",
            "-p",
            "fastworker.controlplane.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-v",
            "examples/testing_project",
        ],
        timeout=180,
    )
    assert finished.returncode == 0, finished.output
    assert "6 passed" in finished.output, finished.output
    for test in (
        "test_billing_eager.py::test_bill_computes_the_total_and_queues_the_email PASSED",
        "test_billing_live.py::test_bill_runs_on_the_worker PASSED",
        "test_billing_live.py::test_the_sync_client_sees_the_same_control_plane PASSED",
    ):
        assert test in finished.output, finished.output
