"""``--secret-file PATH`` / ``FASTWORKER_SECRET_FILE``: the shared secret read from a file, never on a command line.

Where the secret comes from, first found wins: ``--secret``, ``--secret-file``, the file named by
``FASTWORKER_SECRET_FILE``, ``FASTWORKER_SECRET``. Giving both flags, or a file that is missing or
empty, is a usage error (exit 2) whose message names the file. The files are read again when they
change, so a fleet rotates its secret in three steps with ``--secret-fallbacks-file`` and no
restart. Against real processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import AuthenticationError, Client, SyncClient
from fastworker.client.secretfile import SecretFiles
from fastworker.controlplane.testing import run_controlplane
from fastworker.protocol.auth import RELOAD_INTERVAL

HERE = Path(__file__).resolve().parent

SECRET = "file-borne-s3cret"
#: Every daemon and CLI that takes the secret (console scripts of the dev virtualenv).
COMMANDS = {
    "fastworker-controlplane": [],
    "fastworker-worker": ["--task-modules", "fwtests_worker_tasks"],
    "fastworker": ["stats"],
    "fastworker-dashboard": [],
    "fastworker-top": [],
}
USAGE_TIMEOUT = 60
#: Seconds a refused request may take, far below its client's request timeout.
PROMPTLY = 20.0


def script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def run_cli(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with a clean ``FASTWORKER_*`` environment (plus ``env``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    return subprocess.run(
        argv, capture_output=True, text=True, env={**clean, **(env or {})}, timeout=USAGE_TIMEOUT, check=False
    )


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")  # as editors and `echo` write it: the newline is not part of the secret
    return path


def test_a_control_plane_started_with_secret_file_serves_clients_with_that_secret(
    start_cp: Any, secret_file: Path
) -> None:
    control_plane = start_cp("--secret-file", str(secret_file))
    assert SECRET.encode() not in Path(f"/proc/{control_plane.pid}/cmdline").read_bytes()
    with SyncClient(control_plane.discovery, secret=SECRET) as client:
        assert client.submit("fwtests.add", 1, 2, timeout=20) == 3
    with pytest.raises(AuthenticationError):
        with SyncClient(control_plane.discovery, secret=SECRET + "\n", connect_timeout=2) as client:
            client.stats()

    stats = run_cli(
        [script("fastworker"), "--control-plane", control_plane.discovery, "--json"]
        + ["--secret-file", str(secret_file), "stats"]
    )
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["submitted"] == 1


def test_the_secret_file_env_var_beats_the_secret_env_var_in_daemons_and_clients(
    secret_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"FASTWORKER_SECRET_FILE": str(secret_file), "FASTWORKER_SECRET": "not-the-secret"}
    python_path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    with run_controlplane(
        task_modules=["fwtests_tasks"], env={**env, "PYTHONPATH": python_path}, workdir=tmp_path
    ) as control_plane:
        assert SECRET.encode() not in Path(f"/proc/{control_plane.pid}/cmdline").read_bytes()
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with SyncClient(control_plane.discovery) as client:  # Client() reads FASTWORKER_SECRET_FILE too
            assert client.submit("fwtests.add", 2, 3, timeout=20) == 5
        with SyncClient(control_plane.discovery, secret=SECRET) as client:
            assert client.stats()["submitted"] == 1


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_or_empty_secret_file_or_both_flags_is_a_usage_error_naming_the_file(
    command: str, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-secret"
    empty = tmp_path / "empty-secret"
    empty.write_text("\n")
    argv = [script(command), "--control-plane" if command != "fastworker-controlplane" else "--no-dashboard"]
    if command != "fastworker-controlplane":
        argv.append("tcp://127.0.0.1:1")
    extra = COMMANDS[command]

    by_flag = run_cli([*argv, "--secret-file", str(missing), *extra])
    assert by_flag.returncode == 2, by_flag.stderr
    assert f"cannot read the secret file {missing}" in by_flag.stderr

    by_env = run_cli([*argv, *extra], env={"FASTWORKER_SECRET_FILE": str(empty)})
    assert by_env.returncode == 2, by_env.stderr
    assert f"the secret file {empty} is empty" in by_env.stderr

    both = run_cli([*argv, "--secret", SECRET, "--secret-file", str(missing), *extra])
    assert both.returncode == 2, both.stderr
    assert "--secret or --secret-file, not both" in both.stderr

    fallbacks = run_cli([*argv, "--secret", SECRET, *extra], env={"FASTWORKER_SECRET_FALLBACKS_FILE": str(missing)})
    assert fallbacks.returncode == 2, fallbacks.stderr
    assert f"cannot read the secret fallbacks file {missing}" in fallbacks.stderr


def test_a_fleet_rotates_its_secret_in_three_steps_with_no_restart_and_no_refused_request(
    start_cp_for_workers: Any, start_worker: Any, tmp_path: Path
) -> None:
    secret, fallbacks = tmp_path / "secret", tmp_path / "fallbacks"
    secret.write_text("old-secret\n")
    fallbacks.write_text("")
    files = ["--secret-file", str(secret), "--secret-fallbacks-file", str(fallbacks)]
    control_plane = start_cp_for_workers(*files)
    start_worker(control_plane, "rotating-worker", *files)

    def put(path: Path, text: str) -> None:  # a new file put in place, as a Kubernetes Secret volume does
        path.with_suffix(".new").write_text(text)
        os.replace(path.with_suffix(".new"), path)

    ran = 0
    with SyncClient(control_plane.discovery, secret=SecretFiles(str(secret), str(fallbacks))) as client:
        assert client.submit("fwtests_worker.whoami", timeout=20) == "rotating-worker"
        for step, (sealing, accepted) in enumerate(
            [("old-secret", "new-secret"), ("new-secret", "old-secret"), ("new-secret", "")], start=1
        ):
            put(fallbacks, accepted + "\n" if accepted else "")
            put(secret, sealing + "\n")
            # Every process (control plane, worker, this client) takes the step within the interval,
            # each at its own moment: tasks keep running through the worker all the while.
            until = time.monotonic() + 2 * RELOAD_INTERVAL + 0.5
            while time.monotonic() < until:
                assert client.submit("fwtests_worker.whoami", timeout=20) == "rotating-worker", f"step {step}"
                ran += 1
                time.sleep(0.02)
    assert ran > 30

    with SyncClient(control_plane.discovery, secret="new-secret") as client:
        assert client.submit("fwtests_worker.whoami", timeout=20) == "rotating-worker"
        assert client.stats()["failed"] == 0
    with pytest.raises(AuthenticationError):  # the old secret is gone everywhere
        with SyncClient(control_plane.discovery, secret="old-secret", connect_timeout=2) as client:
            client.stats()


async def test_a_client_sealing_with_a_secret_the_control_plane_does_not_accept_is_told_at_once(
    start_cp: Any, tmp_path: Path
) -> None:
    # Given a client that took rotation step 2 before the control plane took step 1: it seals with the
    # new secret, and opens the control plane's announcements with the old one, its fallback
    control_plane = start_cp("--secret", "old-secret")
    secret, fallbacks = tmp_path / "secret", tmp_path / "fallbacks"
    secret.write_text("new-secret\n")
    fallbacks.write_text("old-secret\n")
    client = Client(
        control_plane.discovery, secret=SecretFiles(str(secret), str(fallbacks)), request_timeout=10 * PROMPTLY
    )
    try:
        await client.connect()
        # Then the control plane's refusal is raised as it arrives, not once the request timeout passed:
        # it came from the very instance the request was addressed to, so no restart will answer it
        with pytest.raises(AuthenticationError, match="refused our authentication"):
            await asyncio.wait_for(client.stats(), PROMPTLY)
    finally:
        await client.aclose()
