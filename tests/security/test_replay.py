"""A captured sealed frame is useless after a control-plane restart (issue 14, item 6).

The nonce memory that refuses replays lives in the control plane's process, so a restart forgets
it; within the 60 s time window a captured frame would be accepted again. Requests are therefore
addressed to the control plane instance they were sent to. Here real processes with a secret:
a real client's submit and "purge low" frames are recorded as they leave the client, the control
plane restarts on the same addresses (with and without ``--journal``), and both frames are
replayed to it: each is refused with an ``AUTHENTICATION`` error and counted, no task is created
and the queue is not purged, while the client that stayed connected across the restart keeps
working (its next submit runs exactly once).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pynng
import pytest
from fwsec_support import StartControlPlane

from fastworker.client import Client, TaskNotFound
from fastworker.protocol import decode_frame
from fastworker.protocol.auth import is_sealed
from fastworker.protocol.v1 import error_pb2

SECRET = "replay-s3cret"
RAW_TIMEOUT_MS = 5000
#: How long the connected client stays deaf to announcements after the restart.
DEAF_SECONDS = 1.5


def raw_request(address: str, data: bytes) -> bytes:
    """Send ``data`` from a fresh Req0 socket (the attacker) and return the reply."""
    with pynng.Req0(recv_timeout=RAW_TIMEOUT_MS, send_timeout=RAW_TIMEOUT_MS) as sock:
        sock.dial(address, block=True)
        sock.send(data)
        reply: bytes = sock.recv()
        return reply


def wiretap(client: Client) -> list[bytes]:
    """Record every request frame the client puts on the wire, exactly as sent (sealed)."""
    channel = client._channel
    assert channel is not None
    sent: list[bytes] = []
    send: Callable[..., Awaitable[bytes]] = channel.request

    async def recording(data: bytes, timeout: float, **options: Any) -> bytes:
        sent.append(data)
        return await send(data, timeout, **options)

    channel.request = recording  # type: ignore[method-assign]
    return sent


def deafen(client: Client) -> Callable[[], None]:
    """Make the client miss announcements until the returned function is called (a slow joiner, forced)."""
    subscription = client._subscription
    assert subscription is not None
    hear = subscription._on_message
    subscription._on_message = lambda data: None
    return lambda: setattr(subscription, "_on_message", hear)


def executions(directory: Path, task_id: str) -> int:
    """How many times ``fwsec.record`` ran to completion for this task."""
    return len(list(directory.glob(f"{task_id}.*")))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("journal", [False, True], ids=["memory", "journal"])
async def test_captured_submit_and_purge_frames_are_refused_after_a_restart(
    start_cp: StartControlPlane, tmp_path: Path, journal: bool
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    flags = ["--secret", SECRET, *(["--journal", str(tmp_path / "tasks.journal")] if journal else [])]
    first = start_cp(*flags)
    client = Client(first.discovery, secret=SECRET, request_timeout=20)
    try:
        await client.connect()
        tapped = wiretap(client)
        captured_id = str(uuid.uuid4())
        await client.send("fwsec.record", (captured_id, str(runs)), task_id=captured_id)
        captured_submit = tapped[-1]
        await client.purge("low")
        captured_purge = tapped[-1]
        assert await client.result(captured_id, timeout=20) == captured_id
        assert all(is_sealed(frame) for frame in tapped)

        hear_again = deafen(client)
        assert await asyncio.to_thread(first.stop) == 0
        second = start_cp(*flags, discovery=first.discovery, client=first.client, dispatch=first.dispatch)

        # The client stayed connected. Its next submit goes out sealed for the old instance (it has
        # not heard the new one), is refused unread, and is sent again once the client hears the
        # new instance: it succeeds, and runs exactly once.
        honest_id = str(uuid.uuid4())
        honest = asyncio.ensure_future(
            client.submit("fwsec.record", honest_id, str(runs), task_id=honest_id, timeout=30)
        )
        await asyncio.sleep(DEAF_SECONDS)
        assert not honest.done()
        hear_again()
        assert await honest == honest_id
        assert (await client.stats())["auth_failures"] == 1  # the honest attempt sealed for the old instance
        await client.pause("low")
        waiting = [await client.delay("fwsec.noop", priority="low") for _ in range(3)]
        before = await client.stats()
        low_before = {q["priority"]: q["depth"] for q in await client.queues()}["low"]
        assert low_before == len(waiting)

        for frame in (captured_submit, captured_purge):
            reply = await asyncio.to_thread(raw_request, second.client, frame)
            assert not is_sealed(reply), "the restarted control plane answered a replayed frame"
            refusal = decode_frame(reply)
            assert refusal.error.code == error_pb2.ERROR_CODE_AUTHENTICATION, refusal

        after = await client.stats()
        assert after["auth_failures"] == before["auth_failures"] + 2
        assert after["submitted"] == before["submitted"]
        assert {q["priority"]: q["depth"] for q in await client.queues()}["low"] == len(waiting)
        if journal:
            assert (await client.status(captured_id)).attempts == 1  # restored, not run again
        else:
            with pytest.raises(TaskNotFound):
                await client.status(captured_id)
        await asyncio.sleep(0.5)  # a replayed submit, had it been accepted, would have run by now
        assert executions(runs, captured_id) == 1
        assert executions(runs, honest_id) == 1
        assert await client.status(honest_id) is not None
        assert second.process.poll() is None
    finally:
        await client.aclose()
