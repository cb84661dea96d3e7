"""Listening sockets that peers cannot exhaust: idle connections, one address's share, unread replies.

Real control planes on loopback. The attacker's connections are raw TCP sockets bound to
127.0.0.7 (another loopback address) that do nng's SP handshake by hand (``\\0SP\\0``, protocol
0x0030 for Req0, two zero bytes) and then say nothing, or send requests and never read a reply;
the legitimate client dials from 127.0.0.1 as usual.
"""

from __future__ import annotations

import resource
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fwsec_support import StartControlPlane, rss_mb

from fastworker.client import SyncClient
from fastworker.protocol import encode_frame, new_envelope
from fastworker.protocol.addresses import parse_address

ATTACKER = "127.0.0.7"
REQ0_HANDSHAKE = b"\x00SP\x00\x00\x30\x00\x00"
#: A Sub0 peer's handshake (protocol 0x0021), for the discovery socket.
SUB0_HANDSHAKE = b"\x00SP\x00\x00\x21\x00\x00"
#: Generous bound for anything the test waits on (the machine may be busy).
BOUND = 60.0


@pytest.fixture
def raw_sockets() -> Iterator[list[socket.socket]]:
    """The attacker's sockets; all closed at teardown, with the open-files limit raised for them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def host_port(address: str) -> tuple[str, int]:
    parsed = parse_address(address)
    assert parsed.host is not None and parsed.port is not None
    return parsed.host, parsed.port


def open_silent_connections(
    address: str,
    count: int,
    opened: list[socket.socket],
    *,
    rcvbuf: int = 0,
    source: str = ATTACKER,
    handshake: bytes = REQ0_HANDSHAKE,
) -> None:
    """``count`` connections from ``source`` that complete the SP handshake and then say nothing."""
    target = host_port(address)
    batch = []
    for _ in range(count):
        sock = socket.socket()
        opened.append(sock)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect(target)
        sock.sendall(handshake)
        batch.append(sock)
    for sock in batch:  # the control plane answers the handshake (and may close the connection at once)
        try:
            sock.recv(8)
        except OSError:
            pass


def closed_by_peer(sock: socket.socket) -> bool:
    """True if the control plane has closed this connection (without waiting)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND:g} s: {what}"
        time.sleep(0.1)


def stats(discovery: str) -> dict[str, Any]:
    with SyncClient(discovery) as client:
        return client.stats()


def stats_request_frame(request_id: int) -> bytes:
    """A stats request (its reply is a kilobyte or two) framed as nng's TCP transport sends it."""
    envelope = new_envelope(request_id)
    envelope.stats.SetInParent()
    body = encode_frame(envelope)
    header = struct.pack(">I", 0x80000000 | request_id)
    return struct.pack(">Q", len(header) + len(body)) + header + body


def test_1100_idle_connections_from_one_address_do_not_stop_a_legitimate_client_from_submitting_within_1_s(
    start_cp: StartControlPlane, raw_sockets: list[socket.socket], security_report: Callable[..., None]
) -> None:
    control_plane = start_cp("--idle-connection-timeout", "5")
    assert stats(control_plane.discovery)["connections_refused"] == 0

    open_silent_connections(control_plane.client, 1100, raw_sockets)

    with SyncClient(control_plane.discovery) as client:  # connects after the flood, from 127.0.0.1
        started = time.monotonic()
        assert client.submit("fwsec.echo", "still served", timeout=1.0) == "still served"
        elapsed = time.monotonic() - started
        assert elapsed < 1.0
        eventually(lambda: sum(not closed_by_peer(s) for s in raw_sockets) <= 256, "attacker held at 256")
        counters = client.stats()
        refused, freed = counters["connections_refused"], counters["connections_idle_closed"]
        # Beyond the cap each one is refused, unless a silent one's slot was freed for it meanwhile (a
        # flood slowed by a loaded machine outlasts the idle timeout): counted, not guessed.
        assert refused >= 1100 - 256 - freed and refused > 0

        # Silent connections are closed after --idle-connection-timeout; the client's, which spoke, is kept.
        eventually(lambda: all(closed_by_peer(s) for s in raw_sockets), "every silent connection closed")
        counters = client.stats()
        assert counters["connections_idle_closed"] >= 256
        assert client.submit("fwsec.echo", "same client", timeout=10) == "same client"
    security_report(
        attacker_connections=1100,
        submit_seconds=round(elapsed, 3),
        refused=refused,
        idle_closed=counters["connections_idle_closed"],
    )


def test_an_idle_client_whose_connection_was_closed_to_make_room_still_works_on_its_next_request(
    start_cp: StartControlPlane, raw_sockets: list[socket.socket]
) -> None:
    control_plane = start_cp("--max-connections", "3", "--idle-connection-timeout", "1")
    with SyncClient(control_plane.discovery) as client:
        assert client.submit("fwsec.echo", 1, timeout=10) == 1
        time.sleep(1.5)  # now idle for longer than the timeout: the first to go when a cap is full
        open_silent_connections(control_plane.client, 3, raw_sockets)  # the cap is full: room is made
        eventually(lambda: "to make room" in control_plane.log(), "the idle client's connection closed")
        assert client.submit("fwsec.echo", 2, timeout=BOUND) == 2  # nng redialed it in the background
        assert client.stats()["connections_idle_closed"] >= 1


def test_silent_subscribers_filling_the_discovery_socket_do_not_shut_a_new_client_out(
    start_cp: StartControlPlane, raw_sockets: list[socket.socket], security_report: Callable[..., None]
) -> None:
    # Subscribers never send, so idleness cannot tell them from clients: 1,024 of them from 4
    # addresses shut every new client and worker out of discovery for as long as they stayed.
    control_plane = start_cp("--max-connections", "100", "--max-connections-per-peer", "80")
    for source in ("127.0.0.2", "127.0.0.3"):
        open_silent_connections(control_plane.discovery, 150, raw_sockets, source=source, handshake=SUB0_HANDSHAKE)

    with SyncClient(control_plane.discovery, connect_timeout=20) as client:  # from 127.0.0.1, after them
        assert client.submit("fwsec.echo", "found it", timeout=BOUND) == "found it"
        counters = client.stats()
    assert counters["connections_refused"] == 0
    # The log names the socket that was hit (its bound port), not the configured port 0.
    assert f"to {control_plane.discovery} to make room" in control_plane.log()
    security_report(silent_subscribers=300, made_room=counters["connections_idle_closed"])


def test_a_peer_sending_20000_requests_and_reading_no_reply_leaves_rss_within_20_mb_once_it_is_gone(
    start_cp: StartControlPlane, raw_sockets: list[socket.socket], security_report: Callable[..., None]
) -> None:
    control_plane = start_cp()
    with SyncClient(control_plane.discovery) as client:
        for _ in range(50):  # warm up: what a normal client uses is there before the baseline
            client.stats()
        assert client.submit("fwsec.echo", 1, timeout=10) == 1
        time.sleep(1)
        before = rss_mb(control_plane.pid)

        open_silent_connections(control_plane.client, 1, raw_sockets, rcvbuf=4096)
        hog = raw_sockets[0]
        hog.settimeout(BOUND)
        frames = b"".join(stats_request_frame(i + 1) for i in range(20_000))
        try:
            hog.sendall(frames)  # every request, and not one reply read
        except OSError:
            pass  # closed by the control plane while still sending
        eventually(lambda: client.stats()["connections_dropped_unread"] >= 1, "the reader-less peer dropped")
        during = rss_mb(control_plane.pid)
        eventually(lambda: closed_by_peer(hog), "the connection closed")
        hog.close()

        settled: list[float] = []

        def settles() -> bool:
            settled.append(rss_mb(control_plane.pid))
            return settled[-1] - before < 20

        eventually(settles, "RSS back within 20 MB")
        time.sleep(6)  # the context pool shrinks after 5 quiet seconds
        after = rss_mb(control_plane.pid)
        assert after - before < 20
        assert client.submit("fwsec.echo", 2, timeout=10) == 2
    security_report(rss_before_mb=round(before, 1), rss_during_mb=round(during, 1), rss_after_mb=round(after, 1))
