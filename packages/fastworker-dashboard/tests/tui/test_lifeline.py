"""fastworker-top ends for sure: a terminal that hung up is noticed, and a quit that hangs is cut short."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from fastworker.dashboard.tui._lifeline import terminal_gone


def test_a_pseudo_terminal_whose_other_side_closed_is_gone() -> None:
    master, slave = pty.openpty()
    try:
        assert not terminal_gone(slave)
        os.close(master)
        assert terminal_gone(slave)
    finally:
        os.close(slave)


def test_end_within_ends_the_process_with_its_code_unless_cancelled_first() -> None:
    def run(code: str) -> int:
        script = f"import time\nfrom fastworker.dashboard.tui._lifeline import end_within\n{code}\ntime.sleep(30)\n"
        return subprocess.run([sys.executable, "-c", script], timeout=20).returncode

    assert run("end_within(0.1, 7)") == 7
    assert run("end_within(0.1, 7).cancel()\ntime.sleep(0.5)\nraise SystemExit(3)") == 3
