"""The link follows the control plane instance that accepted the worker, announced or not."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pynng
import pytest

from fastworker.client.task import TaskRegistry
from fastworker.protocol.framing import decode_frame, encode_frame, new_envelope
from fastworker.protocol.v1 import worker_pb2
from fastworker.worker import runtime
from fastworker.worker.link import FAREWELL_TIMEOUT_AFTER_SHUTDOWN, REQUEST_TIMEOUT, ControlPlaneLink
from fastworker.worker.runtime import Worker, WorkerSettings

BOUND = 10.0


async def answer_registration(rep: pynng.Rep0, instance_id: str, accepted: bool) -> None:
    """Answer one RegisterRequest as a control plane with this instance id."""
    request = decode_frame(await rep.arecv())
    assert request.WhichOneof("body") == "register"
    reply = new_envelope(request.correlation_id)
    reply.register_reply.accepted = accepted
    reply.register_reply.instance_id = instance_id
    await rep.asend(encode_frame(reply))


async def registered_with(instance_id: str, *, accepted: bool = True) -> ControlPlaneLink:
    """A link that knows instance "old" (from its last announcement) and registers with a control plane that answers."""
    with pynng.Rep0() as rep:
        listener = rep.listen("tcp://127.0.0.1:0")
        port = socket.ntohs(listener.local_address.port)  # nng gives it in network byte order
        link = ControlPlaneLink("tcp://127.0.0.1:1")  # nothing announces there: no announcement ever arrives
        link.instance_id = "old"
        link._channel.dial(f"tcp://127.0.0.1:{port}")
        try:
            async with asyncio.timeout(BOUND):
                server = asyncio.create_task(answer_registration(rep, instance_id, accepted))
                await link.register(worker_pb2.RegisterRequest(worker_id="w1"))
                await server
        except BaseException:
            link.close()
            raise
    return link


async def test_a_worker_registered_by_a_restarted_control_plane_takes_its_instance_before_the_announcement() -> None:
    # Given a worker that knows the old instance, told "not registered" by a restarted control plane
    # When it registers and the new instance accepts it before its announcement arrived
    link = await registered_with("new")
    try:
        # Then the new instance is the current one: outcomes of the tasks it dispatches are kept for it
        # (with "old", the pull loop dropped them as stale and the control plane re-ran each task)
        assert link.instance_id == "new"
        assert not link.instance_changed.is_set()
    finally:
        link.close()


async def test_a_refused_registration_does_not_change_the_instance() -> None:
    link = await registered_with("other", accepted=False)
    try:
        assert link.instance_id == "old"
    finally:
        link.close()


def _discovery_frame(body: str, instance_id: str) -> bytes:
    envelope = new_envelope()
    if body == "shutdown_notice":
        envelope.shutdown_notice.instance_id = instance_id
        envelope.shutdown_notice.reason = "SIGTERM"
    else:
        envelope.announcement.instance_id = instance_id
        envelope.announcement.dispatch_address = "tcp://127.0.0.1:1"
    return encode_frame(envelope)


async def test_a_leaving_worker_waits_briefly_for_a_control_plane_that_announced_its_shutdown() -> None:
    link = ControlPlaneLink("tcp://127.0.0.1:1")
    try:
        link._on_discovery(_discovery_frame("announcement", "cp1"))
        link.last_contact = time.monotonic()
        assert link.farewell_timeout(5.0) == REQUEST_TIMEOUT  # a live control plane: the usual bound
        link._on_discovery(_discovery_frame("shutdown_notice", "someone-else"))
        assert link.farewell_timeout(5.0) == REQUEST_TIMEOUT  # another instance's notice is not ours
        link._on_discovery(_discovery_frame("shutdown_notice", "cp1"))
        assert link.farewell_timeout(5.0) == FAREWELL_TIMEOUT_AFTER_SHUTDOWN
        link.farewell_unanswered()
        assert link.farewell_timeout(5.0) is None  # it announced its end and then did not answer: gone
        link._on_discovery(_discovery_frame("announcement", "cp2"))  # a new control plane
        assert link.farewell_timeout(5.0) == REQUEST_TIMEOUT
    finally:
        link.close()


async def test_a_leaving_worker_does_not_wait_for_a_control_plane_silent_past_the_heartbeat_timeout() -> None:
    link = ControlPlaneLink("tcp://127.0.0.1:1")
    try:
        assert link.farewell_timeout(5.0) is None  # never answered at all
        link.last_contact = time.monotonic() - 6.0
        assert link.farewell_timeout(5.0) is None  # it has taken back (or is taking back) this worker's tasks
        link.last_contact = time.monotonic() - 4.0
        assert link.farewell_timeout(5.0) == REQUEST_TIMEOUT
    finally:
        link.close()


async def test_a_worker_that_hears_no_control_plane_says_why_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime, "UNHEARD_WARNING_EVERY", 0.2)
    worker = Worker(WorkerSettings(task_modules=()), TaskRegistry())
    worker._link = ControlPlaneLink("tcp://127.0.0.1:9")  # nothing listens on the discard port
    try:
        looking = asyncio.create_task(worker._first_registration())
        await asyncio.sleep(0.5)
        worker.request_stop("test over")
        async with asyncio.timeout(BOUND):
            await looking
    finally:
        worker._link.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) >= 2
    assert (
        "still no control plane after 0 s: could not connect to tcp://127.0.0.1:9: nothing listens there" in warnings[0]
    )
