"""Shared-secret authentication on every channel, against real processes.

With ``--secret`` the control plane seals every frame it sends and refuses every frame that is not
sealed with the same secret, is too old, or was seen before; each refusal is answered with an
``AUTHENTICATION`` error where request/reply allows one, and counted.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pynng
import pytest

from fastworker.client import AuthenticationError, Client, SyncClient, TaskState
from fastworker.controlplane.testing import stop_process
from fastworker.protocol import decode_frame, encode_frame, new_envelope
from fastworker.protocol.auth import FrameAuth, is_sealed
from fastworker.protocol.v1 import error_pb2, worker_pb2

HERE = Path(__file__).resolve().parent
SECRET = "integration-s3cret"
RAW_TIMEOUT_MS = 3000


def raw_request(address: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh Req0 socket and return the reply (fails the test if none comes)."""
    with pynng.Req0(recv_timeout=RAW_TIMEOUT_MS, send_timeout=RAW_TIMEOUT_MS) as sock:
        sock.dial(address, block=True)
        sock.send(data)
        reply: bytes = sock.recv()
        return reply


def status_frame(task_id: str) -> bytes:
    envelope = new_envelope(5)
    envelope.status.task_ids.append(task_id)
    return encode_frame(envelope)


def assert_refused(reply: bytes, reason: str) -> None:
    assert not is_sealed(reply)  # refusals are plain: the sender may hold no secret
    envelope = decode_frame(reply)
    assert envelope.error.code == error_pb2.ERROR_CODE_AUTHENTICATION
    assert reason in envelope.error.message


@pytest.fixture
def secured(start_cp_for_workers: Any, start_worker: Any) -> Any:
    control_plane = start_cp_for_workers("--secret", SECRET)
    start_worker(control_plane, "trusted", "--secret", SECRET, concurrency=2)
    return control_plane


def test_clients_and_workers_with_the_secret_work_end_to_end(secured: Any) -> None:
    with SyncClient(secured.discovery, secret=SECRET) as client:
        assert client.submit("fwtests_worker.whoami", timeout=10) == "trusted"
        ids = client.delay_many([("fwtests_worker.sleep_for", (0,), {}) for _ in range(50)])
        assert client.results(ids, timeout=20) == ["trusted"] * 50
        assert [w["worker_id"] for w in client.workers()] == ["trusted"]
        assert client.stats()["auth_failures"] == 0


async def test_a_client_without_the_secret_or_with_a_wrong_one_gets_an_authentication_error(secured: Any) -> None:
    without = Client(secured.discovery, connect_timeout=2)
    with pytest.raises(AuthenticationError, match="requires the shared secret"):
        await without.delay("fwtests_worker.whoami")
    await without.aclose()

    wrong = Client(secured.discovery, secret="not-the-secret", connect_timeout=2)
    with pytest.raises(AuthenticationError, match="authentication failed"):
        await wrong.connect()
    await wrong.aclose()


async def test_a_wrong_secret_is_reported_at_the_first_announcement_not_after_the_connect_timeout(secured: Any) -> None:
    # connect_timeout far beyond the bound of the wait: the error must come from the announcement
    for secret, says in ((None, "requires the shared secret"), ("not-the-secret", "authentication failed")):
        client = Client(secured.discovery, secret=secret, connect_timeout=3600)
        try:
            with pytest.raises(AuthenticationError, match=says):
                await asyncio.wait_for(client.connect(), timeout=30)
            with pytest.raises(AuthenticationError, match=says):  # and again for the next call
                await asyncio.wait_for(client.delay("fwtests_worker.whoami"), timeout=30)
        finally:
            await client.aclose()


def test_unsealed_forged_and_replayed_frames_are_refused_and_counted(secured: Any) -> None:
    with SyncClient(secured.discovery, secret=SECRET) as client:
        client.submit("fwtests_worker.whoami", timeout=10)
        address = client._client._channel.address  # the client endpoint the announcement named
        assert address
        task_id = client.delay("fwtests_worker.sleep_for", 0)
        before = client.stats()["auth_failures"]

        assert_refused(raw_request(address, status_frame(task_id)), "requires the shared secret")
        forged = FrameAuth("guessed-secret").seal(status_frame(task_id))
        assert_refused(raw_request(address, forged), "authentication failed")
        instance = client._client._instance_id  # requests are addressed to the running instance
        stale = FrameAuth(SECRET, clock=lambda: time.time() - 3600).seal(status_frame(task_id), recipient=instance)
        assert_refused(raw_request(address, stale), "replay or clock skew")

        sealer = FrameAuth(SECRET)
        genuine = sealer.seal(status_frame(task_id), recipient=instance)
        first = raw_request(address, genuine)
        assert is_sealed(first)
        answer = decode_frame(sealer.open(first))
        assert answer.status_reply.tasks[0].task_id == task_id
        assert_refused(raw_request(address, genuine), "replayed")

        assert client.stats()["auth_failures"] == before + 4
        assert client.submit("fwtests_worker.whoami", timeout=10) == "trusted"  # still serving


def test_a_fake_worker_without_the_secret_cannot_register_or_take_tasks(secured: Any) -> None:
    with SyncClient(secured.discovery, secret=SECRET) as client:
        client.submit("fwtests_worker.whoami", timeout=10)
        envelope = new_envelope(9)
        envelope.register.CopyFrom(
            worker_pb2.RegisterRequest(worker_id="impostor", host="evil", pid=1, capacity=100, version="0")
        )
        envelope.register.tasks.add(name="fwtests_worker.whoami")
        reply = raw_request(secured.dispatch, encode_frame(envelope))
        assert_refused(reply, "requires the shared secret")
        task_id = client.delay("fwtests_worker.whoami")
        assert client.result(task_id, timeout=10) == "trusted"
        assert [w["worker_id"] for w in client.workers()] == ["trusted"]
        assert client.status(task_id).state is TaskState.SUCCESS


def test_a_worker_with_a_wrong_secret_never_joins_says_why_and_is_alive_but_not_ready(
    start_cp_for_workers: Any, tmp_path: Path, http_get: Any
) -> None:
    control_plane = start_cp_for_workers("--secret", SECRET)
    log = tmp_path / "wrong-worker.log"
    argv = [sys.executable, "-m", "fastworker.worker", "--control-plane", control_plane.discovery]
    argv += ["--task-modules", "fwtests_worker_tasks", "--worker-id", "wrong", "--secret", "wrong-secret"]
    argv += ["--health-address", "127.0.0.1:0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 10
        while "authentication failed" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        with SyncClient(control_plane.discovery, secret=SECRET) as client:
            assert client.workers() == []
        # Its probes: alive (restarting it would not help), but not ready, saying why
        found = re.search(r"health on (http://127\.0\.0\.1:\d+)/healthz", log.read_text())
        assert found, log.read_text()
        assert http_get(found.group(1) + "/healthz") == (200, b"ok\n")
        status, reason = http_get(found.group(1) + "/readyz")
        assert status == 503 and b"announcements fail authentication" in reason, reason
    finally:
        stop_process(process)


def test_listening_beyond_loopback_without_a_secret_is_warned_about_and_with_one_it_is_not(
    start_cp_for_workers: Any,
) -> None:
    exposed = start_cp_for_workers("--client-address", "tcp://0.0.0.0:0")
    secured = start_cp_for_workers("--client-address", "tcp://0.0.0.0:0", "--secret", SECRET)
    warning = "with no --secret: anyone who reaches these ports can submit tasks"
    assert warning in exposed.log() and "listening beyond loopback (tcp://0.0.0.0:" in exposed.log()
    assert warning not in secured.log()
