"""The process harness cleans up after itself: no folder per daemon left in the temp dir."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_SCRIPT = textwrap.dedent(
    """
    from fastworker.controlplane.testing import run_controlplane
    with run_controlplane() as cp:
        print(cp.log_path)
    print(cp.log_path.exists())  # the log stays readable after stop, until the process exits
    """
)


def test_a_folder_the_harness_made_is_removed_when_the_process_exits() -> None:
    run = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    log_path, readable_after_stop = run.stdout.split()
    assert readable_after_stop == "True"
    assert Path(log_path).parent.name.startswith("fastworker-cp-")
    assert not Path(log_path).parent.exists()


def test_a_workdir_given_by_the_caller_is_kept(tmp_path: Path) -> None:
    script = _SCRIPT.replace("run_controlplane()", f"run_controlplane(workdir={str(tmp_path)!r})")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    log_path, _ = run.stdout.split()
    assert Path(log_path).parent == tmp_path
    assert Path(log_path).exists()
