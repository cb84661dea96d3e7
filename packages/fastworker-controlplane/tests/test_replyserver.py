"""The reply server, with the client's request channel: replies always reach their own requester, timeouts fail cleanly.

Every test runs real pynng sockets on loopback with OS-assigned ports; every socket is closed in teardown.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pynng
import pytest

from fastworker.client._transport import RequestChannel
from fastworker.controlplane.replyserver import ReplyServer, Request, listener_url
from fastworker.protocol.auth import REFUSED_BY_DETAIL, FrameAuth
from fastworker.protocol.framing import decode_frame, encode_frame, new_envelope
from fastworker.protocol.v1 import error_pb2

ANY_PORT = "tcp://127.0.0.1:0"
BOUND = 20.0


def echo(request: Request) -> None:
    request.reply(b"echo:" + request.data)


def delayed_echo(seed: int) -> Callable[[Request], None]:
    """Echo some requests at once and the others after a random small delay (out of order)."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()

    def handle(request: Request) -> None:
        if rng.random() < 0.3:
            echo(request)
        else:
            loop.call_later(rng.uniform(0.0, 0.02), echo, request)

    return handle


@pytest.fixture
def unused_address() -> Iterator[str]:
    """A loopback TCP address nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"tcp://127.0.0.1:{port}"


# ------------------------------------------------------------------------------------------- addresses


def test_listener_url_reports_the_port_the_os_assigned() -> None:
    with pynng.Rep0() as sock:
        url = listener_url(sock.listen(ANY_PORT), ANY_PORT)

    host, _, port = url.rpartition(":")
    assert host == "tcp://127.0.0.1"
    assert 0 < int(port) < 65536


def test_listener_url_leaves_non_tcp_addresses_alone() -> None:
    address = "inproc://fastworker-test-listener-url"
    with pynng.Rep0() as sock:
        assert listener_url(sock.listen(address), address) == address


# ------------------------------------------------------------------------------------- request / reply


async def test_concurrent_requests_each_get_their_own_reply(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a server that answers out of order, some at once and some after a random delay
    server = serve(delayed_echo(seed=1234))
    channel = channels(server.url)

    # When 2,000 requests are in flight at once on one channel
    payloads = [f"request-{i}".encode() for i in range(2000)]
    async with asyncio.timeout(BOUND * 3):
        replies = await asyncio.gather(*(channel.request(p, timeout=BOUND * 2) for p in payloads))

    # Then every request got its own reply: none crossed
    crossed = [(p, r) for p, r in zip(payloads, replies, strict=True) if r != b"echo:" + p]
    assert crossed == []
    assert len(server.requests) == 2000


async def test_sequential_requests_to_a_delayed_server_each_get_their_reply(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    server = serve(delayed_echo(seed=7))
    channel = channels(server.url)

    for i in range(50):
        assert await channel.request(b"%d" % i, timeout=BOUND) == b"echo:%d" % i


async def test_mixed_bursts_and_single_requests_never_cross(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    server = serve(delayed_echo(seed=99))
    channel = channels(server.url)

    for burst in range(5):
        single = await channel.request(b"single-%d" % burst, timeout=BOUND)
        assert single == b"echo:single-%d" % burst
        payloads = [b"burst-%d-%d" % (burst, i) for i in range(100)]
        replies = await asyncio.gather(*(channel.request(p, timeout=BOUND) for p in payloads))
        assert replies == [b"echo:" + p for p in payloads]


async def test_a_request_sent_before_the_server_listens_is_answered_once_it_does(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel], unused_address: str
) -> None:
    # Given a channel dialing an address where nothing listens yet
    channel = channels(unused_address)
    pending = asyncio.ensure_future(channel.request(b"early", timeout=BOUND))
    await asyncio.sleep(0.05)

    # When a server starts listening there
    sock = pynng.Rep0()
    try:
        sock.listen(unused_address)
        server = ReplyServer(sock, echo, asyncio.get_running_loop())
        server.start()
        try:
            # Then the request is answered
            assert await pending == b"echo:early"
        finally:
            server.close()
    finally:
        sock.close()


async def test_a_request_the_server_never_answers_times_out_and_the_channel_keeps_working(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a server that ignores the first request it gets and echoes the rest
    def handle(request: Request) -> None:
        if request.data == b"ignored":
            return
        echo(request)

    server = serve(handle)
    channel = channels(server.url)

    # When a request goes unanswered, it times out
    with pytest.raises(TimeoutError):
        await channel.request(b"ignored", timeout=0.2)

    # And later requests, alone or concurrent, still get their own replies
    assert await channel.request(b"next", timeout=BOUND) == b"echo:next"
    replies = await asyncio.gather(*(channel.request(b"%d" % i, timeout=BOUND) for i in range(20)))
    assert replies == [b"echo:%d" % i for i in range(20)]


async def test_among_concurrent_requests_the_unanswered_ones_time_out_and_the_others_get_their_replies(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a server that ignores odd-numbered requests
    def handle(request: Request) -> None:
        if int(request.data) % 2 == 0:
            echo(request)

    server = serve(handle)
    channel = channels(server.url)

    # When 20 requests are in flight at once
    results = await asyncio.gather(
        *(channel.request(b"%d" % i, timeout=0.3) for i in range(20)), return_exceptions=True
    )

    # Then the even ones got their own replies and the odd ones timed out
    for i, result in enumerate(results):
        if i % 2 == 0:
            assert result == b"echo:%d" % i
        else:
            assert isinstance(result, TimeoutError), result

    # And the channel still serves new requests
    more = await asyncio.gather(*(channel.request(b"%d" % (2 * i), timeout=BOUND) for i in range(10)))
    assert more == [b"echo:%d" % (2 * i) for i in range(10)]


# ------------------------------------------------------------------------------------------- Request


async def test_replying_twice_sends_one_reply(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a server whose handler replies twice to each request, and a spy on its sends
    sends: list[bytes] = []
    answered_before: list[bool] = []

    def handle(request: Request) -> None:
        answered_before.append(request.answered)
        request.reply(b"first")
        request.reply(b"second")

    server = serve(handle)
    real_send = server.server._send

    def spy(context: Any, data: bytes, **options: Any) -> None:
        sends.append(data)
        real_send(context, data, **options)

    server.server._send = spy  # type: ignore[method-assign]
    channel = channels(server.url)

    # When a request is made
    reply = await channel.request(b"x", timeout=BOUND)

    # Then the requester gets the first reply, and only one was sent
    assert reply == b"first"
    assert sends == [b"first"]
    assert answered_before == [False]
    assert server.requests[0].answered


async def test_a_dropped_request_gets_no_reply_and_cannot_be_answered_later(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    def handle(request: Request) -> None:
        if request.data == b"drop":
            request.drop()
            request.reply(b"too late")
        else:
            echo(request)

    server = serve(handle)
    channel = channels(server.url)

    with pytest.raises(TimeoutError):
        await channel.request(b"drop", timeout=0.2)

    assert server.requests[0].answered
    # The dropped request's context went back to the pool and serves the next request
    assert await channel.request(b"ok", timeout=BOUND) == b"echo:ok"


async def test_a_handler_that_raises_does_not_stop_the_server(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel], caplog: pytest.LogCaptureFixture
) -> None:
    def handle(request: Request) -> None:
        if request.data == b"crash":
            raise RuntimeError("handler bug")
        echo(request)

    server = serve(handle)
    channel = channels(server.url)

    with pytest.raises(TimeoutError):
        await channel.request(b"crash", timeout=0.2)

    assert await channel.request(b"fine", timeout=BOUND) == b"echo:fine"
    assert "request handler failed" in caplog.text
    # The logged traceback's frames hold the request's nng context: let it go while the socket is open.
    caplog.clear()


async def test_a_refused_request_is_answered_with_a_plain_error_naming_the_instance_that_refused(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a control plane instance with a secret, and a request addressed to it but sealed with another secret
    served = serve(echo, auth=FrameAuth("s3cret", identity="instance-a"))
    sealed = FrameAuth("another").seal(encode_frame(new_envelope(7)), recipient="instance-a")

    # Then its refusal is plain (the sender may hold no secret) and names the instance that refused
    refusal = decode_frame(await channels(served.url).request(sealed, timeout=BOUND))
    assert refusal.error.code == error_pb2.ERROR_CODE_AUTHENTICATION
    assert refusal.error.details[REFUSED_BY_DETAIL] == "instance-a"


async def test_replies_sent_are_reaped(serve: Callable[..., Any], channels: Callable[[str], RequestChannel]) -> None:
    server = serve(echo)
    channel = channels(server.url)

    await asyncio.gather(*(channel.request(b"%d" % i, timeout=BOUND) for i in range(50)))

    async with asyncio.timeout(BOUND):
        while server.server.pending_sends:
            await asyncio.sleep(0.01)
