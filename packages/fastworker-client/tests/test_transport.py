"""The client side of the nng transport: a request channel gets its own replies and fails cleanly; PUB/SUB delivers.

The serving side is the control plane's (its tests run both halves together); here a plain pynng
Rep0 socket answers, so the channel is tested against nng itself. Real sockets on loopback; every
socket is closed in teardown.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pynng
import pytest

from fastworker.client._transport import (
    ConnectionLost,
    NoPlace,
    NotTaken,
    RequestChannel,
    Subscription,
    TransportClosed,
)

BOUND = 20.0


def free_address() -> str:
    """A loopback TCP address nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


class PlainServer:
    """A Rep0 socket served by pynng's own asyncio layer, one context per concurrent request.

    ``answer`` returns the reply to a request, or None to leave it unanswered.
    """

    def __init__(
        self, answer: Callable[[bytes], bytes | None], *, concurrency: int = 32, url: str | None = None
    ) -> None:
        self.answer = answer
        #: Seconds each answer waits after its request arrived.
        self.delay = 0.0
        self.received: list[bytes] = []
        self.url = url or free_address()
        self.socket = pynng.Rep0()
        self.socket.listen(self.url)
        self._contexts = [self.socket.new_context() for _ in range(concurrency)]
        self._workers = [asyncio.ensure_future(self._serve(context)) for context in self._contexts]

    async def _serve(self, context: pynng.Context) -> None:
        while True:
            data = await context.arecv()
            self.received.append(data)
            if self.delay:
                await asyncio.sleep(self.delay)
            reply = self.answer(data)
            if reply is not None:  # else the next receive abandons the request
                await context.asend(reply)

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        # Bounded: a cancelled receive on a context has been seen never to finish (CI, under load);
        # closing the contexts below aborts it.
        if self._workers:
            await asyncio.wait(self._workers, timeout=2)
        # Close the contexts while the socket is open: pynng raises from the __del__ of a context
        # garbage-collected after its socket closed.
        for context in self._contexts:
            context.close()
        if self._workers:
            await asyncio.wait(self._workers, timeout=2)
        for worker in self._workers:
            # A receive the cancel missed ends with Closed once its context closes: retrieved here,
            # or the task's collection logs "exception was never retrieved" at a random later moment
            # (once at the session's end, into a closed stream, inside the interpreter's parser).
            if worker.done() and not worker.cancelled():
                worker.exception()
        self.socket.close()


def echo(data: bytes) -> bytes:
    return b"echo:" + data


async def request_once_connected(channel: RequestChannel, data: bytes) -> bytes:
    """A request sent while a connection is replaced, sent again if the closing one took it (as the client does)."""
    for _ in range(3):
        try:
            return await channel.request(data, timeout=BOUND)
        except ConnectionLost:
            continue
    raise AssertionError("three attempts each taken by a connection that closed")


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., PlainServer]]:
    """Makes PlainServers; closes them all after the test."""
    made: list[PlainServer] = []

    def make(answer: Callable[[bytes], bytes | None], url: str | None = None) -> PlainServer:
        server = PlainServer(answer, url=url)
        made.append(server)
        return server

    yield make
    for server in made:
        await server.close()


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[str], RequestChannel]]:
    """Makes RequestChannels dialed to an address; closes them all after the test."""
    made: list[RequestChannel] = []

    def make(address: str) -> RequestChannel:
        channel = RequestChannel(asyncio.get_running_loop())
        made.append(channel)
        channel.dial(address)
        return channel

    yield make
    for channel in made:
        channel.close()


# ------------------------------------------------------------------------------------- request / reply


async def test_concurrent_requests_on_one_channel_each_get_their_own_reply(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a channel to a server (the first request takes the fast lane, the others contexts)
    server = servers(echo)
    channel = channels(server.url)

    # When 200 requests are in flight at once
    payloads = [f"request-{i}".encode() for i in range(200)]
    async with asyncio.timeout(BOUND * 2):
        replies = await asyncio.gather(*(channel.request(p, timeout=BOUND) for p in payloads))

    # Then every request got its own reply: none crossed
    assert replies == [echo(p) for p in payloads]


async def test_sequential_requests_on_an_idle_channel_each_get_their_reply(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    server = servers(echo)
    channel = channels(server.url)

    for i in range(200):
        assert await channel.request(f"seq-{i}".encode(), timeout=BOUND) == f"echo:seq-{i}".encode()

    assert len(server.received) == 200


async def test_a_request_sent_aside_leaves_the_cheap_lane_to_the_requests_sent_meanwhile(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a server that holds one kind of request (a long poll) and answers the others
    server = servers(lambda data: None if data == b"held" else echo(data))
    channel = channels(server.url)

    # When a held request goes aside, then short requests follow while it is out
    held = asyncio.ensure_future(channel.request(b"held", timeout=1.0, aside=True))
    await asyncio.sleep(0.05)
    assert channel._fast_waiter is None  # on a context: the socket's own lane is still free

    short = asyncio.ensure_future(channel.request(b"short-1", timeout=BOUND))
    await asyncio.sleep(0)
    assert channel._fast_waiter is not None  # the first short request took the cheap lane
    assert await short == b"echo:short-1"
    assert await channel.request(b"short-2", timeout=BOUND) == b"echo:short-2"

    # Then the held one is still out, on its own context, until its timeout
    with pytest.raises(TimeoutError):
        await held


async def test_a_request_to_an_address_without_a_server_times_out(
    channels: Callable[[str], RequestChannel],
) -> None:
    channel = channels(free_address())

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await channel.request(b"anyone?", timeout=0.3)

    assert 0.25 <= time.monotonic() - started < 5.0


async def test_a_request_nothing_answers_names_the_address_it_could_not_connect_to(
    channels: Callable[[str], RequestChannel],
) -> None:
    from fastworker.client._requester import Requester
    from fastworker.client.errors import ControlPlaneUnavailable

    # Given a channel dialed to an announced address nothing listens on (a wrong --advertise-host)
    address = free_address()
    requester = Requester(channels(address), instance=lambda: "")

    # When a request gets no reply
    with pytest.raises(ControlPlaneUnavailable) as raised:
        await requester.request(lambda envelope: envelope.status.task_ids.append("t-1"), timeout=0.3)

    # Then the error names that address and what to check, not only "no reply"
    message = str(raised.value)
    assert "no control plane is connected" in message
    assert f"could not connect to {address}" in message and "--advertise-host" in message


@pytest.mark.parametrize("aside", [False, True], ids=["cheap lane", "context"])
async def test_a_request_no_connection_takes_in_time_is_withdrawn_and_never_reaches_a_server_that_comes_later(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel], aside: bool
) -> None:
    # Given a channel dialed to an address where no server listens yet
    address = free_address()
    channel = channels(address)

    # When a request may wait 0.3 s for a connection to take it (of a 20-s timeout)
    started = time.monotonic()
    with pytest.raises(NotTaken, match="within 0.3 s"):
        await channel.request(b"withdrawn", timeout=BOUND, aside=aside, taken_within=0.3)

    # Then it fails after that bound, not the timeout
    assert 0.25 <= time.monotonic() - started < 5.0

    # And once a server listens there and the channel connected, the withdrawn request never arrives
    server = servers(echo, url=address)
    async with asyncio.timeout(BOUND):
        while not server.socket.pipes:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # (nng sends a request it still holds as soon as a connection is up)
    assert server.received == []
    # And the next request is answered
    async with asyncio.timeout(BOUND):
        assert await channel.request(b"next", timeout=BOUND, aside=aside, taken_within=BOUND / 2) == b"echo:next"
    assert server.received == [b"next"]


@pytest.mark.parametrize("aside", [False, True], ids=["cheap lane", "context"])
async def test_a_request_taken_in_time_may_take_its_whole_timeout_for_the_answer(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel], aside: bool
) -> None:
    # Given a server that answers each request 0.5 s after taking it
    server = servers(echo)
    server.delay = 0.5
    channel = channels(server.url)
    async with asyncio.timeout(BOUND):
        assert await channel.request(b"warm-up", timeout=BOUND) == b"echo:warm-up"  # (connected)

    # When a request that must be taken within 0.2 s is sent
    async with asyncio.timeout(BOUND):
        reply = await channel.request(b"slow", timeout=BOUND, aside=aside, taken_within=0.2)

    # Then taken at once, it waited past that bound for its answer
    assert reply == b"echo:slow"


async def test_an_unanswered_request_times_out_and_the_channel_keeps_working(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    server = servers(lambda data: None if data == b"ignored" else echo(data))
    channel = channels(server.url)

    with pytest.raises(TimeoutError):
        await channel.request(b"ignored", timeout=0.2)

    assert await channel.request(b"next", timeout=BOUND) == b"echo:next"
    replies = await asyncio.gather(*(channel.request(b"%d" % i, timeout=BOUND) for i in range(20)))
    assert replies == [b"echo:%d" % i for i in range(20)]


async def test_closing_the_channel_fails_every_pending_request_with_transport_closed(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a server that never answers and several requests in flight at once on one channel
    # (the first on the fast lane, the others each on their own nng context)
    server = servers(lambda data: None)
    channel = channels(server.url)
    pending = [asyncio.ensure_future(channel.request(b"%d" % i, timeout=BOUND)) for i in range(5)]
    async with asyncio.timeout(BOUND):
        while len(server.received) < 5:
            await asyncio.sleep(0.005)

    # When the channel is closed
    channel.close()

    # Then each pending request fails with TransportClosed (the documented error), promptly
    async with asyncio.timeout(5.0):
        results = await asyncio.gather(*pending, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["TransportClosed"] * 5


async def test_requests_a_connection_took_fail_at_once_when_it_closes_and_the_next_server_answers(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a server that takes requests and never answers, and several of them out on one channel
    # (the first on the fast lane, the others each on their own nng context), with long timeouts
    server = servers(lambda data: None)
    channel = channels(server.url)
    pending = [asyncio.ensure_future(channel.request(b"%d" % i, timeout=BOUND * 3)) for i in range(5)]
    async with asyncio.timeout(BOUND):
        while len(server.received) < 5:
            await asyncio.sleep(0.005)

    # When the server goes away (a control plane that stopped): its connection closes
    await server.close()
    closed_at = time.monotonic()

    # Then each request fails with ConnectionLost (a TransportError: its caller sends it again),
    # long before its timeout: no reply can come on a closed connection, and nng never resends
    async with asyncio.timeout(BOUND):
        results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(r, ConnectionLost) for r in results), [repr(r) for r in results]
    assert time.monotonic() - closed_at < BOUND

    # And a server that comes back on the address answers the channel's next requests
    servers(echo, url=server.url)
    async with asyncio.timeout(BOUND * 2):
        replies = await asyncio.gather(*(request_once_connected(channel, b"again-%d" % i) for i in range(3)))
    assert replies == [b"echo:again-%d" % i for i in range(3)]


async def test_a_request_on_a_closed_channel_fails_with_transport_closed(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    server = servers(echo)
    channel = channels(server.url)
    assert await channel.request(b"before", timeout=BOUND) == b"echo:before"

    channel.close()
    channel.close()  # closing twice is harmless

    with pytest.raises(TransportClosed):
        await channel.request(b"after", timeout=BOUND)


async def test_dialing_the_same_address_again_keeps_the_connection(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    server = servers(echo)
    channel = channels(server.url)

    channel.dial(server.url)

    assert channel.address == server.url
    assert await channel.request(b"x", timeout=BOUND) == b"echo:x"


async def test_redialing_another_address_sends_later_requests_there(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    first = servers(lambda data: b"first")
    second = servers(lambda data: b"second")
    channel = channels(first.url)
    assert await channel.request(b"x", timeout=BOUND) == b"first"

    channel.dial(second.url)

    assert channel.address == second.url
    assert await request_once_connected(channel, b"x") == b"second"


async def test_redialing_fails_the_requests_the_old_connection_took_and_only_those(
    servers: Callable[..., PlainServer], channels: Callable[[str], RequestChannel]
) -> None:
    # Given a request the first server took and never answers
    first = servers(lambda data: None)
    second = servers(echo)
    channel = channels(first.url)
    pending = asyncio.ensure_future(channel.request(b"old", timeout=BOUND * 3))
    async with asyncio.timeout(BOUND):
        while not first.received:
            await asyncio.sleep(0.005)

    # When the channel dials another address, and sends at once
    channel.dial(second.url)
    fresh = [asyncio.ensure_future(request_once_connected(channel, b"new-%d" % i)) for i in range(3)]

    # Then the old request fails with ConnectionLost (its connection is gone), and the new ones,
    # sent while the old connection closed (one it took is sent again), are answered by the second server
    async with asyncio.timeout(BOUND * 2):
        with pytest.raises(ConnectionLost):
            await pending
        assert await asyncio.gather(*fresh) == [b"echo:new-%d" % i for i in range(3)]


# ---------------------------------------------------------------------------------------- Subscription


@pytest.fixture
def publisher() -> Iterator[tuple[pynng.Pub0, str]]:
    """A Pub0 socket listening on loopback, and its address."""
    pub = pynng.Pub0()
    try:
        url = free_address()
        pub.listen(url)
        yield pub, url
    finally:
        pub.close()


async def test_a_subscription_receives_published_messages_with_its_topic_only(
    publisher: tuple[pynng.Pub0, str],
) -> None:
    # Given a subscription to topic b"FW"
    pub, url = publisher
    received: list[bytes] = []
    subscription = Subscription(asyncio.get_running_loop(), url, b"FW", received.append)
    try:
        # When messages with and without the topic are published until some arrive
        # (PUB/SUB drops what is published before the subscriber is connected: the slow joiner)
        async with asyncio.timeout(BOUND):
            while len(received) < 3:
                pub.send(b"XX not for us")
                pub.send(b"FW hello")
                await asyncio.sleep(0.01)

        # Then only messages starting with the topic are delivered, intact
        assert set(received) == {b"FW hello"}
    finally:
        subscription.close()
        subscription.close()  # closing twice is harmless


async def test_a_subscription_handler_that_raises_does_not_stop_delivery(
    publisher: tuple[pynng.Pub0, str], caplog: pytest.LogCaptureFixture
) -> None:
    pub, url = publisher
    received: list[bytes] = []

    def on_message(data: bytes) -> None:
        received.append(data)
        if len(received) == 1:
            raise RuntimeError("handler bug")

    subscription = Subscription(asyncio.get_running_loop(), url, b"", on_message)
    try:
        async with asyncio.timeout(BOUND):
            while len(received) < 3:
                pub.send(b"tick")
                await asyncio.sleep(0.01)
    finally:
        subscription.close()

    assert "subscription handler failed" in caplog.text


async def test_a_closed_subscription_delivers_nothing_more(publisher: tuple[pynng.Pub0, str]) -> None:
    pub, url = publisher
    received: list[bytes] = []
    subscription = Subscription(asyncio.get_running_loop(), url, b"", received.append)
    async with asyncio.timeout(BOUND):
        while not received:
            pub.send(b"tick")
            await asyncio.sleep(0.01)

    subscription.close()
    count = len(received)
    for _ in range(5):
        pub.send(b"tick")
        await asyncio.sleep(0.01)

    assert len(received) == count


class _ReplyWinsContext:
    """Answers like a pynng context whose reply arrives while its task is being cancelled.

    pynng meets a cancel by asking nng to cancel the operation and waiting for it: an operation that
    completed meanwhile returns its reply as if nothing had happened.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.closed = False

    async def asend(self, data: bytes) -> None:
        pass

    async def arecv(self) -> bytes:
        reply: asyncio.Future[bytes] = self._loop.create_future()
        self._loop.call_later(0.05, reply.set_result, b"late reply")
        while True:
            try:
                return await asyncio.shield(reply)
            except asyncio.CancelledError:
                continue  # the reply wins: the cancel is not seen here

    def close(self) -> None:
        self.closed = True


async def test_a_request_cancelled_while_its_reply_arrives_still_ends_cancelled() -> None:
    # A worker's loop of requests must end when its task is cancelled (a drained worker waited for
    # ever on its heartbeat loop, deaf to SIGTERM, when the cancel came with a reply).
    loop = asyncio.get_running_loop()
    channel = RequestChannel(loop)
    context = _ReplyWinsContext(loop)
    channel._contexts.append(context)  # type: ignore[arg-type]
    try:
        request = asyncio.ensure_future(channel.request(b"ping", 5.0, aside=True))
        await asyncio.sleep(0.01)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    finally:
        channel.close()


async def test_requests_beyond_the_bound_wait_for_a_place_and_one_that_finds_none_is_not_sent(
    servers: Callable[..., PlainServer],
) -> None:
    # The control plane refuses more than MAX_REQUESTS_IN_FLIGHT from one connection: the channel
    # holds the rest back until answers free places, and says when one found no place in its time.

    def answer(data: bytes) -> bytes | None:
        return None if data.startswith(b"hold") else echo(data)  # the first two are never answered

    server = servers(answer)
    channel = RequestChannel(asyncio.get_running_loop(), max_in_flight=2)
    channel.dial(server.url)
    try:
        holding = [asyncio.ensure_future(channel.request(b"hold%d" % i, timeout=1.0)) for i in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(NoPlace, match="2 requests of this client were in flight"):
            await channel.request(b"third", timeout=0.3)
        assert b"third" not in server.received
        waiting = asyncio.ensure_future(channel.request(b"fourth", timeout=5.0))
        for outcome in await asyncio.gather(*holding, return_exceptions=True):
            assert isinstance(outcome, TimeoutError)  # (never answered): each frees its place
        assert await waiting == b"echo:fourth"
    finally:
        channel.close()
