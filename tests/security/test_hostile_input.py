"""Hostile input against a real control plane: garbage floods, forged frames, huge frames, submission floods.

Every listening Rep0 socket (the client address and the dispatch address) gets 10,000 garbage
frames from several raw ``pynng.Req0`` sockets at once; every frame must get an error reply, be
counted in ``rejected_frames`` (and ``auth_failures`` with a secret), and leave the control plane
serving at its usual speed with its memory where it was. Discovery is a PUB socket that receives
nothing: garbage dials to it must disturb nothing. A 100 MB frame is dropped by nng at the
transport (``recv_max_size``) before the control plane allocates it. A client flooding 200,000
submissions into ``--max-queue 1000`` gets ``QueueFull`` for the excess.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import pynng
import pytest
from fwsec_support import RssSampler, StartControlPlane, StartWorker, hwm_mb, rss_mb
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fastworker.client import Client, QueueFull, SyncClient, TaskState
from fastworker.controlplane.testing import RunningControlPlane
from fastworker.protocol import FRAME_PREFIX, DecodeError, IncompatibleProtocol, decode_frame, encode_frame
from fastworker.protocol import new_envelope as _new_envelope
from fastworker.protocol.auth import SEALED_PREFIX, FrameAuth, is_sealed
from fastworker.protocol.payload import encode_arguments
from fastworker.protocol.v1 import error_pb2, task_pb2, worker_pb2
from fastworker.protocol.v1.envelope_pb2 import Envelope

#: Garbage frames per socket.
FLOOD = 10_000
#: Raw Req0 sockets sending at once.
SENDERS = 8
#: Sequential submits measured before and after a flood.
LATENCY_SAMPLES = 200
#: Largest RSS growth tolerated across a flood, in MB.
RSS_BOUND_MB = 50
SECRET = "security-suite-s3cret"
RAW_TIMEOUT_MS = 10_000

#: Request kinds each channel serves (a decodable frame of another kind is refused and counted).
CLIENT_KINDS = frozenset(
    {
        "submit",
        "submit_batch",
        "status",
        "wait",
        "cancel",
        "retry",
        "stats",
        "queues",
        "workers",
        "registered_tasks",
        "events",
        "tasks",
        "task_detail",
        "purge",
        "pause",
        "drain",
        "submit_workflow",
        "workflow",
        "limits",
        "set_limits",
    }
)
DISPATCH_KINDS = frozenset({"register", "work_request", "results", "heartbeat", "deregister"})
SERVED = {"client": CLIENT_KINDS, "dispatch": DISPATCH_KINDS}
#: Envelope bodies no channel serves: what the control plane sends (errors, dispatches, notices,
#: announcements, events), and ``task_started`` (a worker's claims ride on its work requests and results).
NOT_SERVED = frozenset(
    {
        "error",
        "ack",
        "dispatch",
        "task_started",
        "cancel_task",
        "drain_worker",
        "announcement",
        "shutdown_notice",
        "event",
    }
)


def test_every_request_kind_of_the_protocol_is_attacked_on_its_channel() -> None:
    """A request kind added to the protocol must join the hostile generators (new kinds were missed once)."""
    bodies = {f.name for f in Envelope.DESCRIPTOR.oneofs_by_name["body"].fields if not f.name.endswith("_reply")}
    assert bodies - NOT_SERVED == CLIENT_KINDS | DISPATCH_KINDS


def new_envelope(correlation_id: int = 1) -> Envelope:
    return _new_envelope(correlation_id)


def address_of(control_plane: RunningControlPlane, channel: str) -> str:
    return control_plane.client if channel == "client" else control_plane.dispatch


# ------------------------------------------------------------------------------------ frame making


def base_frames(channel: str) -> list[bytes]:
    """Valid frames of the kinds a peer of this channel sends: the seeds that garbage is mutated from."""
    envelopes: list[Envelope] = []
    if channel == "client":
        e = new_envelope(3)
        spec = e.submit.task
        spec.task_id, spec.name = "seed-task-0001", "fwsec.noop"
        spec.arguments.CopyFrom(encode_arguments((1, "two", [3.0]), {"k": b"v"}))
        e.submit.wait = 5.0
        envelopes.append(e)
        e = new_envelope(4)
        for i in range(3):
            e.submit_batch.tasks.add(task_id=f"seed-batch-{i}", name="fwsec.noop", priority=task_pb2.PRIORITY_HIGH)
        envelopes.append(e)
        e = new_envelope(5)
        e.status.task_ids.extend(["seed-task-0001", "nope"])
        envelopes.append(e)
        e = new_envelope(6)
        e.stats.SetInParent()
        envelopes.append(e)
        e = new_envelope(7)
        e.cancel.task_id = "seed-task-0001"
        envelopes.append(e)
        e = new_envelope(8)
        e.tasks.limit, e.tasks.name = 50, "fwsec"
        envelopes.append(e)
    else:
        e = new_envelope(9)
        e.register.CopyFrom(worker_pb2.RegisterRequest(worker_id="decoy", host="h", pid=1, capacity=2, version="0"))
        e.register.tasks.add(name="fwsec.decoy")
        envelopes.append(e)
        e = new_envelope(10)
        e.heartbeat.sender_id, e.heartbeat.in_flight = "decoy", 1
        envelopes.append(e)
        e = new_envelope(11)
        e.work_request.worker_id, e.work_request.hold = "decoy", 1.0
        e.work_request.held_task_ids.append("seed-task-0001")
        envelopes.append(e)
        e = new_envelope(12)
        outcome = e.results.outcomes.add(task_id="seed-task-0001", attempt=1, state=task_pb2.TASK_STATE_SUCCESS)
        outcome.result.CopyFrom(task_pb2.Payload(codec=task_pb2.CODEC_MSGPACK, data=b"\x01"))
        e.results.worker_id = "decoy"
        envelopes.append(e)
    # A reply-type body: well formed, but no channel serves it.
    e = new_envelope(13)
    e.stats_reply.submitted = 7
    envelopes.append(e)
    return [encode_frame(e) for e in envelopes]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One to four structural mutations (truncate, flip a bit, set a byte, insert, delete, duplicate); never a no-op."""
    while (mutated := _mutate_once(rng, frame)) == frame:
        pass
    return mutated


def _mutate_once(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        size = len(data)
        kind = rng.randrange(6)
        if kind == 0 and size:
            del data[rng.randrange(size) :]
        elif kind == 1 and size:
            data[rng.randrange(size)] ^= 1 << rng.randrange(8)
        elif kind == 2 and size:
            data[rng.randrange(size)] = rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x08, 0x12])
        elif kind == 3:
            at = rng.randint(0, size)
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 4 and size:
            at = rng.randrange(size)
            del data[at : at + rng.randint(1, 16)]
        elif size:
            at = rng.randrange(size)
            data[at:at] = data[at : at + rng.randint(1, 32)]
    return bytes(data)


def expected_refusal(frame: bytes, channel: str) -> int | None:
    """The error code the control plane must answer for this frame, or None if the frame is a valid request."""
    try:
        envelope = decode_frame(frame)
    except IncompatibleProtocol:
        return error_pb2.ERROR_CODE_INCOMPATIBLE_VERSION
    except DecodeError:
        return error_pb2.ERROR_CODE_PROTOCOL
    if envelope.WhichOneof("body") in SERVED[channel]:
        return None
    return error_pb2.ERROR_CODE_PROTOCOL


def garbage_frames(rng: random.Random, channel: str, count: int) -> tuple[list[bytes], list[int], Counter[str]]:
    """``count`` frames that are not valid requests for ``channel``, the code each must get, and the mix."""
    seeds = base_frames(channel)
    frames: list[bytes] = []
    codes: list[int] = []
    mix: Counter[str] = Counter()
    while len(frames) < count:
        roll = rng.random()
        if roll < 0.25:
            kind, frame = "random bytes", rng.randbytes(rng.choice([0, 1, 2, 3, 8, 64, 512, 2048]))
        elif roll < 0.40:
            kind, frame = "random body", FRAME_PREFIX + rng.randbytes(rng.randint(0, 1024))
        elif roll < 0.45:
            kind = "other header"
            frame = rng.choice([SEALED_PREFIX, b"FW\x00", b"FW\xff", b"GET / HTTP/1.1\r\n\r\n", b"\x00SP\x00"])
            frame += rng.randbytes(rng.randint(0, 64))
        elif roll < 0.50:
            seed = bytearray(rng.choice(seeds))
            seed[3:5] = b"\x08" + bytes([rng.randint(2, 127)])  # protocol_version is field 1, first
            kind, frame = "unknown version", bytes(seed)
        elif roll < 0.52:
            kind, frame = "not a request", seeds[-1]
        else:
            kind, frame = "mutated frame", mutate(rng, rng.choice(seeds))
        code = expected_refusal(frame, channel)
        if code is None:
            continue  # a mutation that is still a valid request: not garbage, and it could change state
        frames.append(frame)
        codes.append(code)
        mix[kind] += 1
    return frames, codes, mix


# ------------------------------------------------------------------------------------------ sending


def flood(
    address: str, frames: Sequence[bytes], senders: int = SENDERS, timeout_ms: int = RAW_TIMEOUT_MS
) -> list[bytes | None]:
    """Send every frame from ``senders`` raw Req0 sockets at once; the reply to each (None if none came)."""
    replies: list[bytes | None] = [None] * len(frames)
    failures: list[BaseException] = []

    def run(first: int) -> None:
        try:
            with pynng.Req0(recv_timeout=timeout_ms, send_timeout=timeout_ms) as sock:
                sock.dial(address, block=True)
                for index in range(first, len(frames), senders):
                    sock.send(frames[index])
                    try:
                        replies[index] = sock.recv()
                    except pynng.Timeout:
                        replies[index] = None
        except BaseException as exc:  # reported by the test, not lost in a thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not failures, failures
    return replies


def raw_request(address: str, frame: bytes, timeout_ms: int = 5000) -> bytes | None:
    with pynng.Req0(recv_timeout=timeout_ms, send_timeout=timeout_ms) as sock:
        sock.dial(address, block=True)
        sock.send(frame)
        try:
            reply: bytes = sock.recv()
        except pynng.Timeout:
            return None
        return reply


def error_code(reply: bytes | None) -> int | str:
    """The error code in a plain reply frame, or a word saying what else came back."""
    if reply is None:
        return "no reply"
    if is_sealed(reply):
        return "sealed"
    envelope = decode_frame(reply)
    if envelope.WhichOneof("body") != "error":
        return str(envelope.WhichOneof("body"))
    return envelope.error.code


def submit_latencies(client: SyncClient, count: int = LATENCY_SAMPLES) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.submit("fwsec.noop", timeout=10)
        times.append(time.perf_counter() - started)
    return times


def assert_not_stalled(before: list[float], after: list[float]) -> tuple[float, float]:
    """The generous stall check: p50 after a flood under 3x the p50 before, plus 1 ms."""
    p50_before, p50_after = statistics.median(before), statistics.median(after)
    assert p50_after < 3 * p50_before + 0.001, (
        f"submit p50 {p50_after * 1e3:.2f} ms after the flood vs {p50_before * 1e3:.2f} ms before"
    )
    return p50_before * 1e3, p50_after * 1e3


def stats(control_plane: RunningControlPlane, secret: str | None = None) -> dict[str, Any]:
    with SyncClient(control_plane.discovery, secret=secret) as client:
        return client.stats()


# ------------------------------------------------------------------------------------------- floods


@pytest.mark.timeout(180)
@pytest.mark.parametrize("channel", ["client", "dispatch"])
def test_ten_thousand_garbage_frames_each_get_an_error_reply_are_counted_and_leave_the_control_plane_as_it_was(
    start_cp: StartControlPlane, channel: str, security_report: Callable[..., None]
) -> None:
    control_plane = start_cp()
    rng = random.Random(f"garbage-{channel}")
    frames, codes, mix = garbage_frames(rng, channel, FLOOD)

    with SyncClient(control_plane.discovery) as client:
        submit_latencies(client, 50)  # warm up
        before = submit_latencies(client)
        rejected_before = client.stats()["rejected_frames"]
        rss_before = rss_mb(control_plane.pid)

        started = time.monotonic()
        with RssSampler(control_plane.pid) as sampler:
            replies = flood(address_of(control_plane, channel), frames)
        took = time.monotonic() - started

        assert control_plane.process.poll() is None, "the control plane died"
        got = [error_code(reply) for reply in replies]
        wrong = [(i, codes[i], got[i], frames[i][:40]) for i in range(len(frames)) if got[i] != codes[i]]
        assert wrong == [], f"{len(wrong)} frames got another answer than their error, e.g. {wrong[:5]}"
        assert client.stats()["rejected_frames"] - rejected_before == len(frames)

        after = submit_latencies(client)
        p50_before, p50_after = assert_not_stalled(before, after)
        rss_after = rss_mb(control_plane.pid)
    assert sampler.peak - rss_before < RSS_BOUND_MB, f"RSS peaked at {sampler.peak:.1f} MB from {rss_before:.1f} MB"
    assert rss_after - rss_before < RSS_BOUND_MB, f"RSS {rss_before:.1f} -> {rss_after:.1f} MB"
    security_report(
        frames_sent=len(frames),
        seconds=round(took, 1),
        mix=dict(mix),
        p50_ms=f"{p50_before:.2f}->{p50_after:.2f}",
        rss_mb=f"{rss_before:.0f}->{rss_after:.0f} (peak {sampler.peak:.0f})",
    )


def hostile_sealed_frames(
    rng: random.Random, channel: str, genuine: list[bytes], count: int
) -> tuple[list[bytes], Counter[str]]:
    """Unauthenticated, forged, stale, altered and replayed frames (replays of ``genuine``, already accepted)."""
    seeds = base_frames(channel)
    forger = FrameAuth("not-the-secret")
    stale = FrameAuth(SECRET, clock=lambda: time.time() - 3600)
    future = FrameAuth(SECRET, clock=lambda: time.time() + 3600)
    sealer = FrameAuth(SECRET)
    frames: list[bytes] = []
    mix: Counter[str] = Counter()
    for _ in range(count):
        roll = rng.random()
        if roll < 0.15:
            kind, frame = "plain valid frame", rng.choice(seeds)
        elif roll < 0.30:
            kind, frame = "garbage", rng.randbytes(rng.choice([0, 3, 64, 512]))
        elif roll < 0.45:
            kind, frame = "wrong secret", forger.seal(rng.choice(seeds))
        elif roll < 0.55:
            kind, frame = "stale or future", rng.choice([stale, future]).seal(rng.choice(seeds))
        elif roll < 0.70:
            kind, frame = "altered", mutate(rng, sealer.seal(rng.choice(seeds)))
        elif roll < 0.75:
            kind, frame = "sealed garbage header", SEALED_PREFIX + rng.randbytes(rng.randint(0, 80))
        else:
            kind, frame = "replayed", rng.choice(genuine)
        frames.append(frame)
        mix[kind] += 1
    return frames, mix


def genuine_frames(channel: str, count: int, instance_id: str) -> list[bytes]:
    """Correctly sealed harmless requests (a stats query, or an unknown worker's heartbeat) addressed to the instance."""
    sealer = FrameAuth(SECRET)
    frames = []
    for i in range(count):
        envelope = new_envelope(100 + i)
        if channel == "client":
            envelope.stats.SetInParent()
        else:
            envelope.heartbeat.sender_id = "nobody"
        frames.append(sealer.seal(encode_frame(envelope), recipient=instance_id))
    return frames


@pytest.mark.timeout(180)
@pytest.mark.parametrize("channel", ["client", "dispatch"])
def test_ten_thousand_unauthenticated_forged_and_replayed_frames_are_refused_and_counted_with_a_secret(
    start_cp: StartControlPlane, channel: str, security_report: Callable[..., None]
) -> None:
    control_plane = start_cp("--secret", SECRET)
    address = address_of(control_plane, channel)
    rng = random.Random(f"forged-{channel}")

    with SyncClient(control_plane.discovery, secret=SECRET) as client:
        genuine = genuine_frames(channel, 100, client._client._instance_id)
        submit_latencies(client, 50)
        before = submit_latencies(client)
        counters = client.stats()
        rss_before = rss_mb(control_plane.pid)
        opener = FrameAuth(SECRET)
        for frame in genuine:  # accepted once each: the replays below are the second sight
            reply = raw_request(address, frame)
            assert reply is not None and is_sealed(reply)
            answer = decode_frame(opener.open(reply))
            assert answer.WhichOneof("body") == ("stats_reply" if channel == "client" else "error")
        frames, mix = hostile_sealed_frames(rng, channel, genuine, FLOOD)

        started = time.monotonic()
        with RssSampler(control_plane.pid) as sampler:
            replies = flood(address, frames)
        took = time.monotonic() - started

        assert control_plane.process.poll() is None, "the control plane died"
        got = Counter(error_code(reply) for reply in replies)
        assert got == {error_pb2.ERROR_CODE_AUTHENTICATION: len(frames)}, got
        now = client.stats()
        assert now["auth_failures"] - counters["auth_failures"] == len(frames)
        assert now["rejected_frames"] - counters["rejected_frames"] == len(frames)

        after = submit_latencies(client)
        p50_before, p50_after = assert_not_stalled(before, after)
        rss_after = rss_mb(control_plane.pid)
    assert sampler.peak - rss_before < RSS_BOUND_MB, f"RSS peaked at {sampler.peak:.1f} MB from {rss_before:.1f} MB"
    assert rss_after - rss_before < RSS_BOUND_MB, f"RSS {rss_before:.1f} -> {rss_after:.1f} MB"
    security_report(
        frames_sent=len(frames),
        seconds=round(took, 1),
        mix=dict(mix),
        p50_ms=f"{p50_before:.2f}->{p50_after:.2f}",
        rss_mb=f"{rss_before:.0f}->{rss_after:.0f} (peak {sampler.peak:.0f})",
    )


def host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address)
    assert parts.hostname and parts.port, address
    return parts.hostname, parts.port


def raw_tcp_garbage(address: str, rng: random.Random, rounds: int = 20) -> int:
    """Connect with plain TCP (no SP handshake), write garbage or nothing, hang up; returns how often nng hung up first."""
    hung_up = 0
    for i in range(rounds):
        with socket.create_connection(host_port(address), timeout=2) as conn:
            try:
                if i % 4:
                    conn.sendall(rng.randbytes(rng.choice([1, 8, 100, 10_000])))
                if i % 3 == 0:
                    conn.sendall(b"\x00SP\x00\x00\x10\x00\x00" + rng.randbytes(64))  # an SP header, then junk
            except (BrokenPipeError, ConnectionResetError):
                hung_up += 1  # nng closed the connection on the bad handshake: what it should do
    return hung_up


def test_garbage_dials_to_discovery_and_raw_tcp_garbage_on_every_port_disturb_nothing(
    start_cp: StartControlPlane, security_report: Callable[..., None]
) -> None:
    control_plane = start_cp()
    rng = random.Random("dials")
    with SyncClient(control_plane.discovery) as client:
        assert client.submit("fwsec.echo", 1, timeout=10) == 1
        counters = client.stats()

        # Discovery publishes only: a Req0 or Rep0 peer is refused at the SP handshake, a Pub0 peer
        # is another publisher that nobody reads, and raw TCP never completes a handshake.
        with pynng.Req0(send_timeout=500) as req, pynng.Pub0() as pub, pynng.Rep0() as rep:
            req.dial(control_plane.discovery, block=False)
            pub.dial(control_plane.discovery, block=False)
            rep.dial(control_plane.discovery, block=False)
            for _ in range(20):
                pub.send(rng.randbytes(100))
                pub.send(FRAME_PREFIX + rng.randbytes(100))
            with pytest.raises(pynng.Timeout):
                req.send(b"anyone there?")
            time.sleep(0.3)
        hung_up = sum(
            raw_tcp_garbage(address, rng)
            for address in (control_plane.discovery, control_plane.client, control_plane.dispatch)
        )

        assert control_plane.process.poll() is None, "the control plane died"
        # A subscriber still hears announcements; clients still find the control plane and get served.
        with pynng.Sub0(topics=FRAME_PREFIX, recv_timeout=3000) as sub:
            sub.dial(control_plane.discovery, block=True)
            announcement = decode_frame(sub.recv())
            assert announcement.WhichOneof("body") == "announcement"
            assert announcement.announcement.client_address == control_plane.client
        with SyncClient(control_plane.discovery) as fresh:
            assert fresh.submit("fwsec.echo", 2, timeout=10) == 2
        assert client.submit("fwsec.echo", 3, timeout=10) == 3
        # Nothing reached the request handlers: no frame was refused, none was accepted.
        now = client.stats()
        assert now["rejected_frames"] == counters["rejected_frames"]
        assert now["submitted"] == counters["submitted"] + 2
    security_report(dials="req/pub/rep on discovery; 60 raw TCP garbage connections", hung_up_by_nng=hung_up)


# --------------------------------------------------------------------------------------- huge frames


@pytest.mark.timeout(120)
@pytest.mark.parametrize("channel", ["client", "dispatch"])
def test_a_100_mb_frame_is_dropped_at_the_transport_without_the_memory_jumping(
    start_cp: StartControlPlane, channel: str, security_report: Callable[..., None]
) -> None:
    control_plane = start_cp()
    address = address_of(control_plane, channel)
    huge = FRAME_PREFIX + os.urandom(1024) * (100 * 1024)  # 100 MB
    with SyncClient(control_plane.discovery) as client:
        client.submit("fwsec.noop", timeout=10)
        rejected_before = client.stats()["rejected_frames"]
        rss_before, hwm_before = rss_mb(control_plane.pid), hwm_mb(control_plane.pid)

        connections = Counter[str]()
        with RssSampler(control_plane.pid, interval=0.002) as sampler:
            with pynng.Req0(recv_timeout=3000, send_timeout=20_000) as sock:
                sock.add_post_pipe_connect_cb(lambda pipe: connections.update(["opened"]))
                sock.add_post_pipe_remove_cb(lambda pipe: connections.update(["dropped"]))
                sock.dial(address, block=True)
                sock.send(huge)
                try:
                    reply: bytes | None = sock.recv()
                except pynng.Timeout:
                    reply = None
        hwm_after = hwm_mb(control_plane.pid)

        # What happens (nng 1.x, recv_max_size = frame limit + 1 KiB on both Rep0 sockets): the
        # control plane's TCP transport reads the 8-byte length header, sees it is over the limit,
        # and closes the connection without reading the body. No reply comes; nng's Req0 redials
        # and resends, and is dropped again each time. The control plane never sees the frame, so
        # it is not counted in rejected_frames.
        assert reply is None, f"unexpected reply {reply[:100]!r}"
        assert connections["dropped"] >= 1, connections
        assert control_plane.process.poll() is None, "the control plane died"
        assert client.submit("fwsec.echo", "still here", timeout=10) == "still here"
        assert error_code(raw_request(address, b"small garbage")) == error_pb2.ERROR_CODE_PROTOCOL
        assert client.stats()["rejected_frames"] == rejected_before + 1  # the small garbage only
    assert sampler.peak - rss_before < 20, f"RSS peaked at {sampler.peak:.1f} MB from {rss_before:.1f} MB"
    assert hwm_after - hwm_before < 20, f"VmHWM {hwm_before:.1f} -> {hwm_after:.1f} MB"
    security_report(
        frame_mb=len(huge) // 2**20,
        reply="none",
        connections=dict(connections),
        rss_peak_growth_mb=round(sampler.peak - rss_before, 1),
        hwm_growth_mb=round(hwm_after - hwm_before, 1),
        samples=sampler.samples,
    )


# ----------------------------------------------------------------------------------- submission flood


@pytest.mark.timeout(240)
async def test_a_flood_of_200_000_submissions_gets_queue_full_beyond_max_queue_and_memory_stays_bounded(
    start_cp: StartControlPlane, start_worker: StartWorker, security_report: Callable[..., None]
) -> None:
    control_plane = start_cp("--max-queue", "1000", "--local-concurrency", "0")
    accepted: list[str] = []
    refusals: Counter[str] = Counter()
    async with Client(control_plane.discovery) as client:
        await client.stats()
        rss_before = rss_mb(control_plane.pid)

        async def batches() -> None:
            for _ in range(100):  # 100 batches of 1,000: 100,000 tasks
                try:
                    accepted.extend(await client.delay_many([("fwsec.noop", ())] * 1000))
                except QueueFull as exc:
                    ids = exc.task_ids  # type: ignore[attr-defined]
                    accepted.extend(i for i in ids if i is not None)
                    refusals["QueueFull (batched)"] += sum(1 for i in ids if i is None)

        async def singles() -> None:
            for _ in range(10):  # 10 waves of 10,000 concurrent delays: 100,000 tasks
                results = await asyncio.gather(
                    *(client.delay("fwsec.noop") for _ in range(10_000)), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, str):
                        accepted.append(result)
                    else:
                        refusals[f"{type(result).__name__} (single)"] += 1

        started = time.monotonic()
        with RssSampler(control_plane.pid, interval=0.01) as sampler:
            await asyncio.gather(batches(), singles())
        took = time.monotonic() - started
        rss_after = rss_mb(control_plane.pid)

        assert control_plane.process.poll() is None, "the control plane died"
        assert set(refusals) <= {"QueueFull (batched)", "QueueFull (single)"}, refusals
        assert len(accepted) == 1000, f"{len(accepted)} accepted, refusals {refusals}"
        assert sum(refusals.values()) == 200_000 - 1000
        counters = await client.stats()
        assert (counters["queued"], counters["submitted"]) == (1000, 1000)
        assert sampler.peak - rss_before < 100, f"RSS peaked at {sampler.peak:.1f} MB from {rss_before:.1f} MB"
        assert rss_after - rss_before < RSS_BOUND_MB, f"RSS {rss_before:.1f} -> {rss_after:.1f} MB"

        # A worker joins: every accepted task runs.
        await asyncio.to_thread(start_worker, control_plane.discovery, "drainer", concurrency=4)
        infos = await client.wait_many(accepted, timeout=90)
        assert Counter(info.state for info in infos) == {TaskState.SUCCESS: 1000}
    security_report(
        submissions=200_000,
        accepted=len(accepted),
        refused=dict(refusals),
        seconds=round(took, 1),
        rss_mb=f"{rss_before:.0f}->{rss_after:.0f} (peak {sampler.peak:.0f})",
    )


# ------------------------------------------------------------------------- valid but absurd requests

ABSURD_FLOATS = [0.0, -0.0, -1.0, float("inf"), float("-inf"), float("nan"), 1e308, -1e308, 5e-324, 1e-9, 2.0**63]


def absurd_scalar(rng: random.Random, field: FieldDescriptor) -> Any:
    kind = field.type
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        value = rng.choice(ABSURD_FLOATS)
        return value if kind == FieldDescriptor.TYPE_DOUBLE or abs(value) < 3e38 or value != value else 0.0
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(["", " ", "fwsec.noop", "fwsec.echo", "x" * 300, "\x00", "é\u2028", "* * * * *", "@hourly"])
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 1, 16]))
    if kind == FieldDescriptor.TYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values] + [-1, 99, 2**31 - 1])
    signed = kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    )
    wide = kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    )
    bits = 64 if wide else 32
    if signed:
        return rng.choice([0, 1, -1, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    return rng.choice([0, 1, 2, 2**bits - 1, 100_000])


def fill_absurd(rng: random.Random, message: Message, depth: int = 3) -> None:
    """Set random fields (one per oneof) to absurd values, nesting ``depth`` levels."""
    for field in message.DESCRIPTOR.fields:
        if (field.containing_oneof is not None and rng.random() < 0.7) or rng.random() < 0.4:
            continue
        if field.containing_oneof is not None and message.WhichOneof(field.containing_oneof.name):
            continue
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and field.message_type.GetOptions().map_entry:
            for _ in range(rng.randint(0, 2)):
                getattr(message, field.name)[absurd_scalar(rng, field.message_type.fields_by_name["key"])] = (
                    absurd_scalar(rng, field.message_type.fields_by_name["value"])
                )
        elif field.is_repeated:
            container = getattr(message, field.name)
            for _ in range(rng.randint(0, 3)):
                if is_message:
                    if depth > 0:
                        fill_absurd(rng, container.add(), depth - 1)
                else:
                    container.append(absurd_scalar(rng, field))
        elif is_message:
            child = getattr(message, field.name)
            child.SetInParent()
            if depth > 0:
                fill_absurd(rng, child, depth - 1)
        else:
            setattr(message, field.name, absurd_scalar(rng, field))


def absurd_requests(rng: random.Random, channel: str, count: int) -> list[tuple[str, bytes]]:
    kinds = sorted(SERVED[channel] - {"pause", "purge", "drain"})  # admin actions are tried apart, below
    requests = []
    for i in range(count):
        envelope = new_envelope(i)
        kind = rng.choice(kinds)
        body = getattr(envelope, kind)
        body.SetInParent()
        fill_absurd(rng, body)
        if kind == "submit" and rng.random() < 0.7:
            body.task.name = rng.choice(["fwsec.noop", "fwsec.echo"])
            body.task.task_id = f"absurd-{i}"
            if rng.random() < 0.5:
                body.task.arguments.CopyFrom(encode_arguments((), {}))
        requests.append((kind, encode_frame(envelope)))
    return requests


LONG_POLLS = frozenset({"wait", "events", "work_request", "submit"})


@pytest.mark.timeout(180)
@pytest.mark.parametrize("channel", ["client", "dispatch"])
def test_valid_requests_with_absurd_values_are_answered_without_internal_errors_and_the_control_plane_keeps_serving(
    start_cp: StartControlPlane, start_worker: StartWorker, channel: str, security_report: Callable[..., None]
) -> None:
    control_plane = start_cp("--heartbeat-timeout", "2")
    requests = absurd_requests(random.Random(f"absurd-{channel}"), channel, 2000)
    answers: Counter[tuple[str, str]] = Counter()
    undecodable: list[tuple[str, bytes, bytes]] = []
    with SyncClient(control_plane.discovery) as client:
        client.submit("fwsec.noop", timeout=10)
        frames = [frame for _, frame in requests]
        replies = flood(address_of(control_plane, channel), frames, senders=16, timeout_ms=3000)
        for (kind, frame), reply in zip(requests, replies, strict=True):
            if reply is None:
                assert kind in LONG_POLLS, f"no reply to a {kind} request"
                answers[kind, "no reply (long poll)"] += 1
                continue
            try:
                envelope = decode_frame(reply)
            except DecodeError:
                undecodable.append((kind, frame, reply))
                answers[kind, "undecodable reply"] += 1
                continue
            body = envelope.WhichOneof("body")
            answers[kind, error_pb2.ErrorCode.Name(envelope.error.code) if body == "error" else str(body)] += 1
        assert control_plane.process.poll() is None, "the control plane died"
        internal = Counter(
            kind for (kind, answer), n in answers.items() for _ in range(n) if answer.endswith("INTERNAL")
        )
        assert internal == {}, f"internal errors answering {internal}; all answers: {answers}"
        assert undecodable == [], (
            f"{len(undecodable)} replies do not decode (e.g. to {undecodable[0][1]!r}: {undecodable[0][2]!r}); "
            f"answers: {answers}"
        )
        for level in ("critical", "high", "normal", "low"):
            client.resume(level)
        for name in ("fwsec.echo", "fwsec.noop"):  # absurd set_limits may have throttled them to nothing
            client.set_limits(name, clear=True)
        assert client.submit("fwsec.echo", "alive", timeout=10) == "alive"
        # A real worker can still join and work.
        start_worker(control_plane.discovery, "honest", concurrency=2, ready_timeout=15)
        ids = client.delay_many([("fwsec.echo", (n,)) for n in range(20)])
        assert client.results(ids, timeout=20) == list(range(20))
    log = control_plane.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
    security_report(requests=len(requests), answers={f"{k}: {a}": n for (k, a), n in sorted(answers.items())})


HOSTILE_DEFINITIONS = {
    "invalid cron": task_pb2.TaskDefinition(name="fwsec.poison", cron="not a cron"),
    "cron that never matches": task_pb2.TaskDefinition(name="fwsec.poison", cron="0 0 31 2 *"),
    "padded name, periodic": task_pb2.TaskDefinition(name=" fwsec.poison ", every=1.0),
    "empty name, periodic": task_pb2.TaskDefinition(name="", every=1.0),
    "every 5e-324 s": task_pb2.TaskDefinition(name="fwsec.poison", every=5e-324),
    "every 1e-9 s, overlapping": task_pb2.TaskDefinition(name="fwsec.poison", every=1e-9, allow_overlap=True),
    "every nan": task_pb2.TaskDefinition(name="fwsec.poison", every=float("nan")),
    "every and cron": task_pb2.TaskDefinition(name="fwsec.poison", every=1.0, cron="* * * * *"),
    "retries -1": task_pb2.TaskDefinition(name="fwsec.noop", retries=-1),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", sorted(HOSTILE_DEFINITIONS))
def test_a_registration_with_a_hostile_task_definition_is_answered_and_honest_workers_still_join(
    start_cp: StartControlPlane, start_worker: StartWorker, case: str
) -> None:
    control_plane = start_cp("--heartbeat-interval", "0.2", "--heartbeat-timeout", "30")
    envelope = new_envelope(1)
    envelope.register.CopyFrom(worker_pb2.RegisterRequest(worker_id="hostile", host="h", pid=1, capacity=1))
    envelope.register.tasks.append(HOSTILE_DEFINITIONS[case])
    with pynng.Req0(recv_timeout=5000, send_timeout=5000) as hostile:  # stays connected: the worker stays listed
        hostile.dial(control_plane.dispatch, block=True)
        hostile.send(encode_frame(envelope))
        answer = decode_frame(hostile.recv())
        assert answer.WhichOneof("body") in ("register_reply", "error")
        assert answer.WhichOneof("body") == "register_reply" or answer.error.code != error_pb2.ERROR_CODE_INTERNAL, (
            f"the registration got an internal error: {answer.error.message}"
        )
        time.sleep(1.0)  # let any periodic schedule it brought fire a few times
        with SyncClient(control_plane.discovery) as client:
            assert client.submit("fwsec.echo", "alive", timeout=10) == "alive"
            start_worker(control_plane.discovery, "honest", concurrency=2, ready_timeout=15)
            assert "honest" in {w["worker_id"] for w in client.workers()}
            ids = client.delay_many([("fwsec.echo", (n,)) for n in range(10)])
            assert client.results(ids, timeout=20) == list(range(10))
            assert client.stats()["submitted"] < 1000, "the hostile schedule floods the queue"
    log = control_plane.log()
    assert log.count("Traceback") == 0, log[log.index("Traceback") - 300 :][:3000]


# ------------------------------------------------------------------------------------ hostile payloads


def nested_tuples(depth: int) -> bytes:
    """MessagePack for ``[[((((...)))], {}]``: ``depth`` nested extension-type tuples (~6 bytes a level)."""
    data = b"\x90"  # []
    for _ in range(depth):
        data = b"\xc9" + struct.pack(">Ib", len(data), 1) + data
    return b"\x92\x91" + data + b"\x80"


def hostile_submit(task_id: str, arguments: bytes) -> bytes:
    envelope = new_envelope(1)
    spec = envelope.submit.task
    spec.task_id, spec.name = task_id, "fwsec.echo"
    spec.arguments.CopyFrom(task_pb2.Payload(codec=task_pb2.CODEC_MSGPACK, data=arguments))
    return encode_frame(envelope)


@pytest.mark.timeout(60)
def test_deeply_nested_arguments_fail_the_task_without_crashing_the_control_plane(
    start_cp: StartControlPlane,
) -> None:
    # 5,000 nested tuples is a 30 KB payload; decoding it recurses through msgpack's C unpacker.
    control_plane = start_cp("--local-concurrency", "2")
    reply = raw_request(control_plane.client, hostile_submit("deep-args", nested_tuples(5_000)))
    assert reply is not None and decode_frame(reply).WhichOneof("body") == "submit_reply"
    with SyncClient(control_plane.discovery) as client:
        info = client.wait("deep-args", timeout=10)
        assert control_plane.process.poll() is None, f"the control plane died ({control_plane.process.returncode})"
        assert info.state is TaskState.FAILURE
        assert client.submit("fwsec.echo", "alive", timeout=10) == "alive"


@pytest.mark.timeout(60)
def test_deeply_nested_arguments_cost_a_worker_at_most_one_child_process(
    start_cp: StartControlPlane, start_worker: StartWorker
) -> None:
    control_plane = start_cp("--local-concurrency", "0")
    worker = start_worker(control_plane.discovery, "target", concurrency=2)
    reply = raw_request(control_plane.client, hostile_submit("deep-args", nested_tuples(5_000)))
    assert reply is not None and decode_frame(reply).WhichOneof("body") == "submit_reply"
    with SyncClient(control_plane.discovery) as client:
        info = client.wait("deep-args", timeout=15)
        assert worker.process.poll() is None, f"the worker died ({worker.process.returncode})"
        assert info.state is TaskState.FAILURE, info
        assert client.submit("fwsec.echo", "alive", timeout=10) == "alive"
        assert [w["worker_id"] for w in client.workers()] == ["target"]


@pytest.mark.timeout(60)
def test_inspecting_a_task_with_deeply_nested_arguments_never_crashes_the_operator_tool(
    start_cp: StartControlPlane,
) -> None:
    # Any client can queue such a task; `fastworker inspect` (and the dashboard's task page, which
    # runs inside the control plane) decode its arguments for display.
    control_plane = start_cp("--local-concurrency", "0")
    reply = raw_request(control_plane.client, hostile_submit("deep-args", nested_tuples(5_000)))
    assert reply is not None and decode_frame(reply).WhichOneof("body") == "submit_reply"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    inspect = subprocess.run(
        [sys.executable, "-m", "fastworker.client", "--control-plane", control_plane.discovery, "--json"]
        + ["inspect", "deep-args"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert inspect.returncode in (0, 1), f"fastworker inspect died with {inspect.returncode}: {inspect.stderr[-500:]}"
    assert "deep-args" in inspect.stdout


@pytest.mark.timeout(60)
def test_the_dashboard_page_of_a_task_with_deeply_nested_arguments_never_crashes_the_control_plane(
    start_cp: StartControlPlane,
) -> None:
    control_plane = start_cp("--local-concurrency", "0", dashboard=True)
    assert control_plane.dashboard, "the control plane serves no dashboard (is fastworker-dashboard installed?)"
    reply = raw_request(control_plane.client, hostile_submit("deep-args", nested_tuples(5_000)))
    assert reply is not None and decode_frame(reply).WhichOneof("body") == "submit_reply"
    try:
        with urllib.request.urlopen(f"{control_plane.dashboard}/tasks/deep-args", timeout=10) as page:
            status = page.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, ConnectionError) as exc:
        status = f"no answer: {exc}"
    time.sleep(0.2)
    assert control_plane.process.poll() is None, f"the control plane died ({control_plane.process.returncode})"
    assert status in (200, 422, 500), status
    with SyncClient(control_plane.discovery) as client:
        assert client.status("deep-args").state is TaskState.PENDING
