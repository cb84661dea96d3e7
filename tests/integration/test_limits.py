"""Bounds that hold under abuse: connections per socket, requests in flight per connection, result-cache memory."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pynng
import pytest

from fastworker.client import Client, ClientClosed, SyncClient, TaskNotFound
from fastworker.protocol import decode_frame, encode_frame, new_envelope
from fastworker.protocol.framing import MAX_REQUESTS_IN_FLIGHT
from fastworker.protocol.v1 import error_pb2


def status_request(correlation_id: int) -> bytes:
    envelope = new_envelope(correlation_id)
    envelope.status.task_ids.append("nothing")
    return encode_frame(envelope)


def test_connections_beyond_the_bound_are_refused_and_the_admitted_ones_keep_working(start_cp: Any) -> None:
    # A long idle timeout: within it, no idle connection is closed to make room (that is tested in
    # tests/security/test_exhaustion.py), so the cap alone decides.
    control_plane = start_cp("--max-connections", "3", "--idle-connection-timeout", "120")
    with SyncClient(control_plane.discovery) as client:  # connection 1
        client.workers()
        address = client._client._channel.address
        sockets = [pynng.Req0(recv_timeout=4000, send_timeout=4000) for _ in range(4)]
        try:
            answered = 0
            for index, sock in enumerate(sockets):
                sock.dial(address, block=False)
                time.sleep(0.3)  # let the dial (or its refusal) happen before the next one
                try:
                    sock.send(status_request(index + 1))
                    decode_frame(sock.recv())
                    answered += 1
                except pynng.Timeout:
                    pass
            assert answered == 2  # two more fit beside the client's own connection
            assert client.submit("fwtests.add", 1, 2, timeout=10) == 3  # the admitted client is unaffected
        finally:
            for sock in sockets:
                sock.close()
        deadline = time.monotonic() + 5  # once they are gone, new connections are admitted again
        while True:
            with pynng.Req0(recv_timeout=2000, send_timeout=2000) as sock:
                sock.dial(address, block=False)
                try:
                    sock.send(status_request(99))
                    decode_frame(sock.recv())
                    break
                except pynng.Timeout:
                    assert time.monotonic() < deadline, "closed connections were not released"


def test_the_discovery_socket_holds_the_per_address_cap_by_closing_that_address_s_oldest(start_cp: Any) -> None:
    # Subscribers say nothing, so silence tells nothing about them. Beyond the per-address cap a
    # newcomer is not refused (refused subscribers, each redialling, once starved a host for good):
    # it makes room by closing the oldest connection of the address holding the most, its own here,
    # so one host only ever churns its own subscribers.
    control_plane = start_cp("--max-connections-per-peer", "3")
    subscribers = [pynng.Sub0(recv_timeout=3000, topics=b"") for _ in range(4)]
    try:
        heard = 0
        for sub in subscribers:
            sub.dial(control_plane.discovery, block=False)
            time.sleep(0.3)  # let the dial (and the room it makes) happen before the next one
        for sub in subscribers:
            try:
                sub.recv()  # an announcement (four a second)
                heard += 1
            except pynng.Timeout:
                pass
        # The newest three at least are connected and hear; a closed one redials and may hear too.
        assert heard >= 3
    finally:
        for sub in subscribers:
            sub.close()
    with SyncClient(control_plane.discovery) as client:
        stats = client.stats()
    assert stats["connections_refused"] == 0
    assert stats["connections_idle_closed"] >= 1  # the room made for the fourth


def test_a_connection_holding_too_many_requests_is_told_to_wait(start_cp: Any, tmp_path: Any) -> None:
    control_plane = start_cp("--local-concurrency", "1")
    with SyncClient(control_plane.discovery) as client:
        gate = tmp_path / "gate"
        blocker = client.delay("fwtests.block_until", str(gate), "limits", 20)
        address = client._client._channel.address
        with pynng.Req0(recv_timeout=5000, send_timeout=5000) as sock:
            sock.dial(address, block=True)
            contexts = [sock.new_context() for _ in range(1030)]
            for index, context in enumerate(contexts):
                envelope = new_envelope(index + 1)
                envelope.wait.task_ids.append(blocker)
                envelope.wait.timeout = 20.0
                context.send(encode_frame(envelope))
            refused = decode_frame(contexts[-1].recv())
            assert refused.error.code == error_pb2.ERROR_CODE_RATE_LIMITED
            assert "requests in flight on one connection" in refused.error.message
            assert client.stats()["auth_failures"] == 0  # a client to slow down, not a security event
            gate.touch()
            answer = decode_frame(contexts[0].recv())
            assert [t.task_id for t in answer.wait_reply.finished] == [blocker]
            for context in contexts:
                context.close()
        assert client.submit("fwtests.add", 2, 2, timeout=10) == 4


def test_the_result_cache_is_bounded_by_memory_as_well_as_by_count(start_cp: Any) -> None:
    control_plane = start_cp("--result-cache-mb", "1", "--local-concurrency", "2")
    with SyncClient(control_plane.discovery) as client:
        big = "x" * 200_000
        ids = []
        for n in range(20):  # ~4 MB of results, each read as it finishes
            ids.append(client.delay("fwtests.record", big + str(n)))
            assert client.result(ids[-1], timeout=10) == big + str(n)
        assert client.stats()["cache_size"] <= 6  # about 1 MiB of 200 kB results
        assert client.status(ids[-1]).result == big + "19"  # the newest stay readable
        with pytest.raises(TaskNotFound):
            client.status(ids[0])  # the oldest were evicted to stay within the bound


async def test_one_client_holds_its_requests_beyond_the_connection_bound_until_answers_free_places(
    start_cp: Any, tmp_path: Any
) -> None:
    # 1,300 waiting submits on one connection, whose bound is 1,024: the client keeps the rest until
    # answers come, instead of passing the control plane's refusal (ERROR_CODE_RATE_LIMITED) on.
    control_plane = start_cp("--local-concurrency", "4")
    gate = tmp_path / "gate"
    count = MAX_REQUESTS_IN_FLIGHT + 276
    async with Client(control_plane.discovery) as client:
        submits = [
            asyncio.ensure_future(client.submit("fwtests.block_until", str(gate), f"held-{i}", 30, timeout=60))
            for i in range(count)
        ]
        deadline = time.monotonic() + 30
        while (await client.stats())["queued"] < count - 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        gate.touch()
        results = await asyncio.gather(*submits, return_exceptions=True)
        assert [r for r in results if r is not True] == []
        counts = await client.submit("fwtests.execution_counts", "held-", timeout=10)
        assert sorted(counts.values()) == [1] * count  # each ran once: no refusal, no second submit


async def test_closing_a_client_ends_every_call_in_flight_or_waiting_for_a_place_with_client_closed(
    start_cp: Any, tmp_path: Any
) -> None:
    # delay() calls waiting for a place never ended once the client was closed (their sender was
    # cancelled); requests in flight ended with a plain ControlPlaneUnavailable.
    control_plane = start_cp("--local-concurrency", "4")
    gate = tmp_path / "gate"
    try:
        client = Client(control_plane.discovery)
        held = [
            asyncio.ensure_future(client.submit("fwtests.block_until", str(gate), f"closed-{i}", 30, timeout=60))
            for i in range(MAX_REQUESTS_IN_FLIGHT + 50)
        ]
        async with Client(control_plane.discovery) as observer:  # (a call of the full client would wait)
            deadline = time.monotonic() + 30
            while (await observer.stats())["queued"] < MAX_REQUESTS_IN_FLIGHT - 4:  # 4 run: every place taken
                assert time.monotonic() < deadline, "the submits were not all accepted"
                await asyncio.sleep(0.1)
        delays = [asyncio.ensure_future(client.delay("fwtests.add", i, i)) for i in range(20)]
        await asyncio.sleep(0.2)
        await client.aclose()
        async with asyncio.timeout(10):
            ended = await asyncio.gather(*held, *delays, return_exceptions=True)
        assert {type(outcome) for outcome in ended} == {ClientClosed}
        for call in (client.status("closed-1"), client.submit("fwtests.add", 1, 2), client.cancel("closed-1")):
            with pytest.raises(ClientClosed):
                await call
    finally:
        gate.touch()
