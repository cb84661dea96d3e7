"""examples/quickstart/quickstart.py runs with one command and prints what its tasks returned."""

from __future__ import annotations

from typing import Any


def test_the_single_file_quickstart_runs_its_tasks_on_a_control_plane_it_starts(run_example: Any) -> None:
    finished = run_example(["examples/quickstart/quickstart.py"])
    assert finished.returncode == 0, finished.output
    for line in (
        "add(1, 2) = 3",
        "text.shout('hello') = 'HELLO!'",
        "100 add tasks: sum of results = 9900",
        "by name, without importing the task: add(20, 22) = 42",
        "divide(1, 0) failed remotely: ZeroDivisionError: division by zero",
        "control plane: 103 succeeded, 1 failed",
        "control plane stopped (exit code 0)",
    ):
        assert line in finished.output, finished.output
