"""Virtual environments for peers, created once under bench/.peers/ (git-ignored) and reused between runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REMOTE_DIR = Path(__file__).resolve().parent / "remote"
#: Timeout for creating a venv or one pip install, in seconds.
INSTALL_TIMEOUT = 900


def _log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def ensure_venv(folder: Path, base_python: str, requirements: Sequence[str]) -> Path:
    """The python of a venv at ``folder`` made with ``base_python`` holding ``requirements``; built once.

    A marker file records what was installed; a venv without it (an interrupted build) or with
    other requirements is rebuilt from scratch.
    """
    python = folder / "bin" / "python"
    marker = folder / ".fwbench-ready"
    wanted = "\n".join([base_python, *requirements])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not Path(base_python).exists() and shutil.which(base_python) is None:
        raise RuntimeError(f"base interpreter {base_python!r} not found (set it with the --*-python option)")
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _log(f"creating {folder} with {base_python}: pip install {' '.join(requirements)}")
    _run([base_python, "-m", "venv", str(folder)])
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements])
    marker.write_text(wanted)
    return python


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")


def peer_env(**extra: str) -> dict[str, str]:
    """A clean environment for peer processes: no PYTHONPATH or FASTWORKER_* of ours, remote/ importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FASTWORKER_")}
    env.update({"PYTHONPATH": str(REMOTE_DIR), "PYTHONDONTWRITEBYTECODE": "1", **extra})
    return env


def run_driver(
    python: Path, script: str, args: Sequence[str], env: dict[str, str], timeout: float
) -> dict[str, object]:
    """Run ``remote/<script>`` with the peer's python; it prints one JSON object as its last stdout line."""
    done = subprocess.run(
        [str(python), str(REMOTE_DIR / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{script} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    result: dict[str, object] = json.loads(lines[-1])
    return result
