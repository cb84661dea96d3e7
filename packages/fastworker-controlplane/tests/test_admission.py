"""Listening sockets that peers cannot exhaust: per-peer caps, silent connections, unread replies, pool shrinking.

Real pynng sockets on loopback. Hostile peers are raw TCP sockets that do nng's SP handshake by
hand (8 bytes: ``\\0SP\\0``, the protocol id, two zero bytes) and then misbehave; the attacker
address 127.0.0.7 is another loopback address, so the per-address cap can be told apart from the
well-behaved peers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pynng
import pytest

from fastworker.client._transport import RequestChannel
from fastworker.controlplane.admission import ConnectionAdmission, ConnectionEvent, RefusalLog, raise_open_files_limit
from fastworker.controlplane.replyserver import ReplyServer, Request
from fastworker.protocol.auth import FrameAuth

BOUND = 20.0
ATTACKER = "127.0.0.7"
#: nng's TCP handshake of a Req0 peer: b"\0SP\0", protocol 0x0030 (Req0) big-endian, two reserved bytes.
REQ0_HANDSHAKE = b"\x00SP\x00\x00\x30\x00\x00"
#: The same for a Sub0 peer (protocol 0x0021); a Pub0 side answers with 0x0020.
SUB0_HANDSHAKE = b"\x00SP\x00\x00\x21\x00\x00"


@pytest.fixture
def raw_sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def raw_peer(
    opened: list[socket.socket], port: int, *, source: str = ATTACKER, rcvbuf: int = 0, subscriber: bool = False
) -> socket.socket:
    """A TCP connection from ``source`` that completes nng's SP handshake as a Req0 (or Sub0) peer, and nothing more."""
    sock = socket.socket()
    opened.append(sock)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.settimeout(BOUND)
    sock.connect(("127.0.0.1", port))
    sock.sendall(SUB0_HANDSHAKE if subscriber else REQ0_HANDSHAKE)
    answer = b"\x00SP\x00\x00\x20\x00\x00" if subscriber else b"\x00SP\x00\x00\x31\x00\x00"
    assert sock.recv(8) == answer  # the Pub0 or Rep0 side answers
    return sock


def req0_frame(request_id: int, body: bytes) -> bytes:
    """One request as nng's TCP transport frames it: 64-bit length, then the request id, then the body."""
    header = struct.pack(">I", 0x80000000 | request_id)
    return struct.pack(">Q", len(header) + len(body)) + header + body


async def closed_by_peer(sock: socket.socket, within: float = BOUND) -> bool:
    """Wait (bounded) until the other side closes ``sock``; True if it did."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    data = await loop.sock_recv(sock, 65536)
                except ConnectionError:
                    return True
                if not data:
                    return True
    except TimeoutError:
        return False


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(BOUND):
        while not condition():
            await asyncio.sleep(0.02)


def echo(request: Request) -> None:
    request.reply(b"echo:" + request.data)


# -------------------------------------------------------------------------------------- per-peer cap


async def test_connections_beyond_the_per_peer_cap_are_refused_and_other_addresses_still_get_in(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel], raw_sockets: list[socket.socket]
) -> None:
    served = serve(echo, ConnectionAdmission(name="test", max_connections=10, max_per_peer=3, idle_timeout=60))

    for _ in range(5):
        raw_peer(raw_sockets, served.port)

    await eventually(lambda: served.events.count(ConnectionEvent.REFUSED) == 2)
    # nng negotiates handshakes concurrently: which two were refused is not fixed, only how many.
    for sock in raw_sockets:
        sock.setblocking(False)
    closed = [await closed_by_peer(sock, within=1.0) for sock in raw_sockets]
    assert closed.count(True) == 2
    assert len(served.admission or ()) == 3
    channel = channels(served.url)  # from 127.0.0.1: its own budget
    assert await channel.request(b"hello", timeout=BOUND) == b"echo:hello"


async def test_refusal_logs_are_rate_limited_with_a_count_of_those_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = RefusalLog(logging.getLogger("test.refusals"), interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        logged = [log.warning("cap", "refused") for _ in range(50)]
        log.warning("other", "another reason")  # reasons are limited separately
        now[0] += 1.0
        log.warning("cap", "refused")

    assert logged.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "refused",
        "another reason",
        "refused (49 more since the last such line)",
    ]


async def test_a_full_socket_of_silent_subscribers_closes_the_oldest_of_the_most_crowded_address_not_the_newcomer(
    raw_sockets: list[socket.socket],
) -> None:
    # Given a PUB socket (its peers never send) with room for 6, filled by 4 from .7 and 2 from .8
    loop = asyncio.get_running_loop()
    events: list[ConnectionEvent] = []
    admission = ConnectionAdmission(name="test", max_connections=6, max_per_peer=4, silent_peers=True)
    with pynng.Pub0() as pub, pynng.Sub0(recv_timeout=int(BOUND * 1000)) as client:
        admission.attach(pub, loop, events.append)
        port = socket.ntohs(pub.listen("tcp://127.0.0.1:0").local_address.port)

        async def subscriber(source: str) -> socket.socket:
            """A silent subscriber, admitted before the next one (nng admits handshakes concurrently)."""
            admitted = len(admission) + 1
            sock = raw_peer(raw_sockets, port, source=source, subscriber=True)
            await eventually(lambda: len(admission) == admitted)
            return sock

        crowd = [await subscriber(ATTACKER) for _ in range(4)]  # the oldest first
        few = [await subscriber("127.0.0.8") for _ in range(2)]

        # When a subscriber from 127.0.0.1 connects, and another from .7 (at its per-peer cap then)
        client.subscribe(b"")
        client.dial(f"tcp://127.0.0.1:{port}", block=True)
        received = asyncio.ensure_future(client.arecv())
        async with asyncio.timeout(BOUND):
            while not received.done():  # PUB drops what it sends before a subscriber is attached
                pub.send(b"announcement")
                await asyncio.sleep(0.05)
        assert await received == b"announcement"

        # Then the crowd's oldest made room, the newcomer got in, and nothing was refused
        assert await closed_by_peer(crowd[0])
        assert ConnectionEvent.REFUSED not in events
        assert events.count(ConnectionEvent.IDLE_CLOSED) == 1
        # ... and a crowd's newcomer displaces its own oldest, never another address's connection
        crowd.append(raw_peer(raw_sockets, port, source=ATTACKER, subscriber=True))  # when .7: 3, .8: 2, .1: 1
        assert await closed_by_peer(crowd[1])
        for sock in (*crowd[2:], *few):
            assert not await closed_by_peer(sock, within=0.2)
        assert len(admission) == 6
        assert ConnectionEvent.REFUSED not in events


# -------------------------------------------------------------------------------- silent connections


async def test_a_connection_that_never_sends_a_request_is_closed_after_the_idle_timeout(
    serve: Callable[..., Any], raw_sockets: list[socket.socket]
) -> None:
    served = serve(echo, ConnectionAdmission(name="test", idle_timeout=0.5))
    silent = raw_peer(raw_sockets, served.port)

    assert await closed_by_peer(silent)
    assert ConnectionEvent.IDLE_CLOSED in served.events
    await eventually(lambda: len(served.admission or ()) == 0)


async def test_an_idle_connection_that_has_spoken_is_kept_and_a_dropped_silent_one_redials_transparently(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    served = serve(echo, ConnectionAdmission(name="test", idle_timeout=0.5))
    talker = channels(served.url)
    assert await talker.request(b"one", timeout=BOUND) == b"echo:one"
    quiet = channels(served.url)  # connects, then says nothing for longer than the timeout
    await eventually(lambda: ConnectionEvent.IDLE_CLOSED in served.events)

    await asyncio.sleep(1.5)  # three timeouts: the connection that spoke is still the same one
    assert served.events.count(ConnectionEvent.IDLE_CLOSED) >= 1
    talker_pipes = {request.pipe_id for request in served.requests}
    assert await talker.request(b"two", timeout=BOUND) == b"echo:two"
    assert served.requests[-1].pipe_id in talker_pipes
    # nng redialed in the background. A request sent on a connection the server is closing that
    # moment is lost (the socket never resends): the client's Requester sends it again after its
    # attempt timeout, as this does. (Sent once with a 20 s timeout, it failed on a loaded machine.)
    deadline = asyncio.get_running_loop().time() + BOUND
    while True:
        try:
            assert await quiet.request(b"late", timeout=2.0) == b"echo:late"
            break
        except TimeoutError:
            assert asyncio.get_running_loop().time() < deadline, "the dropped connection was never dialed again"


async def test_a_full_cap_closes_the_connection_idle_the_longest_to_make_room(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    served = serve(echo, ConnectionAdmission(name="test", max_connections=10, max_per_peer=2, idle_timeout=0.5))
    first, second = channels(served.url), channels(served.url)
    assert await first.request(b"a", timeout=BOUND) == b"echo:a"
    await asyncio.sleep(0.1)
    assert await second.request(b"b", timeout=BOUND) == b"echo:b"
    await asyncio.sleep(0.6)  # both idle for longer than the timeout; the first one longer

    third = channels(served.url)  # two from 127.0.0.1 already: the first one makes room
    assert await third.request(b"c", timeout=BOUND) == b"echo:c"
    assert ConnectionEvent.IDLE_CLOSED in served.events
    assert await first.request(b"again", timeout=BOUND) == b"echo:again"  # it redials and gets in in turn


async def test_a_connection_with_a_request_in_flight_is_never_closed_as_idle(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    held: list[Request] = []
    served = serve(held.append, ConnectionAdmission(name="test", max_connections=10, max_per_peer=1, idle_timeout=0.3))
    poller = channels(served.url)
    waiting = asyncio.ensure_future(poller.request(b"long poll", timeout=BOUND))
    await eventually(lambda: len(held) == 1)
    other = channels(served.url)  # refused again and again: the poller's connection is busy, not idle

    await asyncio.sleep(1.5)
    assert ConnectionEvent.REFUSED in served.events
    assert ConnectionEvent.IDLE_CLOSED not in served.events
    held[0].reply(b"done")
    assert await waiting == b"done"
    other.close()


# ------------------------------------------------------------------------------------- unread replies


async def send_and_never_read(
    served: Any, raw_sockets: list[socket.socket], payload: bytes, count: int
) -> socket.socket:
    """A peer that sends ``count`` requests and reads nothing (a tiny receive buffer): its socket."""
    hog = raw_peer(raw_sockets, served.port, source="127.0.0.1", rcvbuf=4096)
    hog.setblocking(False)
    frames = b"".join(req0_frame(i + 1, payload) for i in range(count))
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(BOUND):
            await loop.sock_sendall(hog, frames)
    except (ConnectionError, TimeoutError):
        pass  # dropped while sending, or the sends stalled: either way, never read
    return hog


async def test_a_connection_that_does_not_read_its_replies_is_closed_and_what_they_held_is_freed(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel], raw_sockets: list[socket.socket]
) -> None:
    big = b"x" * 65536
    served = serve(lambda request: request.reply(big), max_pending_per_connection=32)
    reader = channels(served.url)
    assert len(await reader.request(b"warm up", timeout=BOUND)) == len(big)
    hog = await send_and_never_read(served, raw_sockets, b"give me more", 2000)

    await eventually(lambda: ConnectionEvent.DROPPED_UNREAD in served.events)
    assert served.events.count(ConnectionEvent.DROPPED_UNREAD) == 1
    await eventually(lambda: served.server.pending_sends == 0)  # their messages and aios are freed
    assert await closed_by_peer(hog)
    assert len(await reader.request(b"still here", timeout=BOUND)) == len(big)


async def test_a_connection_leaving_large_replies_unread_is_closed_by_their_bytes_long_before_their_count(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel], raw_sockets: list[socket.socket]
) -> None:
    # Given replies of 1 MiB, at most 1,024 of them kept per connection, and at most 8 MiB unread
    big = b"x" * (1024 * 1024)
    served = serve(lambda request: request.reply(big), max_unread_bytes=8 * 1024 * 1024)
    hog = await send_and_never_read(served, raw_sockets, b"give me more", 200)

    # Then it is closed, though it held far fewer than 1,024 replies, and what they held is freed
    await eventually(lambda: ConnectionEvent.DROPPED_UNREAD in served.events)
    await eventually(lambda: served.server.pending_sends == 0)
    assert await closed_by_peer(hog)
    reader = channels(served.url)
    assert len(await reader.request(b"still here", timeout=BOUND)) == len(big)


@pytest.mark.parametrize("from_thread", [False, True], ids=["replies on the loop", "replies from threads"])
async def test_unread_replies_are_bounded_across_connections_by_closing_the_heaviest_non_reader(
    serve: Callable[..., Any],
    channels: Callable[[str], RequestChannel],
    raw_sockets: list[socket.socket],
    from_thread: bool,
) -> None:
    # Given replies of 2 MiB, at most 32 MiB unread per connection and 32 MiB for all together
    mib = 1024 * 1024
    big = b"x" * (2 * mib)
    bound = 32 * mib

    def answer(request: Request) -> None:
        if from_thread:
            threading.Thread(target=request.reply, args=(big,)).start()
        else:
            request.reply(big)

    served = serve(answer, max_unread_bytes=bound, max_unread_bytes_total=bound)
    reader = channels(served.url)
    # When three peers leave 4 replies each unread and a fourth 14 (28 MiB: within its own bound),
    # which the kernel's buffers absorb only a few MiB of per connection
    light = [await send_and_never_read(served, raw_sockets, b"give me more", 4) for _ in range(3)]
    await eventually(lambda: served.server.unread_bytes >= 3 * 2 * mib)
    assert len(await reader.request(b"meanwhile", timeout=BOUND)) == len(big)
    heavy = await send_and_never_read(served, raw_sockets, b"give me more", 14)

    # Then the heaviest alone is closed, what it held is freed, and the total is within the bound again
    await eventually(lambda: ConnectionEvent.DROPPED_UNREAD in served.events)  # before reading: reading drains it
    assert await closed_by_peer(heavy)
    assert served.events.count(ConnectionEvent.DROPPED_UNREAD) == 1
    await eventually(lambda: served.server.unread_bytes <= bound)
    # while the reading client keeps being served, and the other non-readers stay connected
    assert len(await reader.request(b"still here", timeout=BOUND)) == len(big)
    assert served.events.count(ConnectionEvent.DROPPED_UNREAD) == 1
    for peer in light:
        assert not await closed_by_peer(peer, within=0.5)


async def test_a_peer_without_the_secret_that_never_reads_its_refusals_is_closed_too(
    serve: Callable[..., Any], raw_sockets: list[socket.socket]
) -> None:
    served = serve(echo, auth=FrameAuth("s3cret"), max_pending_per_connection=16)
    # Refusals are small: more of them than the kernel's socket buffers (4 MiB here) can absorb.
    hog = await send_and_never_read(served, raw_sockets, b"not sealed", 120_000)

    await eventually(lambda: ConnectionEvent.DROPPED_UNREAD in served.events)
    await eventually(lambda: served.server.pending_sends == 0)
    assert await closed_by_peer(hog)


async def test_a_connection_holding_many_long_polls_is_told_to_wait_not_dropped(
    serve: Callable[..., Any],
) -> None:
    held: list[Request] = []
    served = serve(held.append, max_pending_per_connection=8)
    with pynng.Req0(recv_timeout=int(BOUND * 1000), send_timeout=int(BOUND * 1000)) as sock:
        sock.dial(served.url, block=True)
        contexts = [sock.new_context() for _ in range(9)]
        for index, context in enumerate(contexts[:8]):
            context.send(b"%d" % index)
        await eventually(lambda: len(held) == 8)
        contexts[-1].send(b"one too many")
        # Blocking receives off the loop: the server answers on it.
        assert b"requests in flight on one connection" in await asyncio.to_thread(contexts[-1].recv)
        for request in held:
            request.reply(b"answer")
        assert await asyncio.to_thread(contexts[0].recv) == b"answer"
        for context in contexts:
            context.close()
    assert ConnectionEvent.DROPPED_UNREAD not in served.events


async def test_a_connection_at_its_bound_whose_answers_were_read_is_not_told_to_wait(
    serve: Callable[..., Any],
) -> None:
    # Finished sends are reaped lazily: a client that read its 8 answers and at once sent 8 more
    # requests was refused (ERROR_CODE_RATE_LIMITED) though none of its requests was unanswered.
    held: list[Request] = []
    served = serve(held.append, max_pending_per_connection=8)
    with pynng.Req0(recv_timeout=int(BOUND * 1000), send_timeout=int(BOUND * 1000)) as sock:
        sock.dial(served.url, block=True)
        contexts = [sock.new_context() for _ in range(8)]
        for round_ in range(3):
            for index, context in enumerate(contexts):
                context.send(b"%d-%d" % (round_, index))
            await eventually(lambda: len(held) == 8)
            for request in held:
                request.reply(b"answer")
            held.clear()
            for context in contexts:
                assert await asyncio.to_thread(context.recv) == b"answer"
        for context in contexts:
            context.close()


# ------------------------------------------------------------------------------------------ the pool


async def test_the_context_pool_shrinks_back_to_its_floor_once_the_load_has_gone(
    serve: Callable[..., Any], channels: Callable[[str], RequestChannel]
) -> None:
    loop = asyncio.get_running_loop()
    served = serve(lambda request: loop.call_later(0.05, echo, request), min_contexts=4, pool_shrink_after=0.3)
    channel = channels(served.url)

    replies = await asyncio.gather(*(channel.request(b"%d" % i, timeout=BOUND) for i in range(200)))
    assert len(replies) == 200
    assert served.server.pool_size > 50  # the burst needed many contexts at once

    await eventually(lambda: served.server.pool_size == 4)
    assert await channel.request(b"after", timeout=BOUND) == b"echo:after"  # and it grows again on demand


def test_shrinking_keeps_the_contexts_that_were_needed_since_the_last_round() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pynng.Rep0() as sock:
            server = ReplyServer(sock, echo, loop, min_contexts=2)
            for _ in range(10):
                server._idle.append(server._new_context())
            server._idle_low = 3  # only 3 stayed unused throughout the last round
            assert server.shrink_pool() == 3
            assert server.pool_size == 7
            assert server.shrink_pool() == 5  # a whole quiet round: down to the floor
            assert server.pool_size == 2
            server.close()
    finally:
        loop.close()


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        lowered = min(soft, 256)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
        assert raise_open_files_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
