"""The /metrics and /healthz listener: what it answers, to whom, and when the loop does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastworker.client import _httplisten
from fastworker.controlplane.coordinator import Counters
from fastworker.controlplane.metrics import TaskMetrics
from fastworker.controlplane.metricsserver import MetricsServer
from fastworker.controlplane.snapshot import Snapshot


def snapshot() -> Snapshot:
    metrics = TaskMetrics()
    metrics.submitted("reports.build")
    return Snapshot(
        tasks=metrics.snapshot(), queues=[("normal", 2, 1.5, False)], workers=[], counters=Counters(auth_failures=3)
    )


Health = Callable[[], "str | None"]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., MetricsServer]]:
    servers: list[MetricsServer] = []

    def start(
        address: str = "127.0.0.1:0", healthy: Health = lambda: None, take: Callable[[], Snapshot] = snapshot
    ) -> MetricsServer:
        server = MetricsServer(asyncio.get_running_loop(), address, take, healthy)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await asyncio.to_thread(server.close)


def port_of(server: MetricsServer) -> int:
    """The port the listener bound (it was asked for port 0)."""
    return int(server.url.rsplit(":", 1)[1])


async def fetch(
    server: MetricsServer, path: str, method: str = "GET", host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request from a thread (the loop must stay free to answer the server)."""

    def request() -> tuple[int, dict[str, str], bytes]:
        address = server.url.removeprefix("http://")
        connection = http.client.HTTPConnection(address, timeout=10)
        try:
            headers = {"Host": host} if host is not None else {}
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    return await asyncio.to_thread(request)


async def test_metrics_are_served_as_prometheus_text_with_the_process_and_python_collectors(
    serve: Callable[..., MetricsServer],
) -> None:
    server = serve()
    status, headers, body = await fetch(server, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {
        "fastworker_tasks_submitted",
        "fastworker_queue_depth",
        "fastworker_auth_failures",
        "fastworker_build_info",
    } <= names
    assert {
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "python_info",
        "python_gc_objects_collected",
    } <= names
    assert b'fastworker_tasks_submitted_total{task="reports.build"} 1.0' in body
    assert b'fastworker_queue_depth{priority="normal"} 2.0' in body
    assert b"fastworker_auth_failures_total 3.0" in body


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(serve: Callable[..., MetricsServer]) -> None:
    server = serve()

    def request() -> tuple[str, bytes]:
        connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
        connection.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        response = connection.getresponse()
        return response.getheader("Content-Type") or "", response.read()

    content_type, body = await asyncio.to_thread(request)
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


async def test_healthz_answers_ok_then_503_while_shutting_down(serve: Callable[..., MetricsServer]) -> None:
    reason: list[str | None] = [None]
    server = serve(healthy=lambda: reason[0])
    assert (await fetch(server, "/healthz"))[::2] == (200, b"ok\n")
    reason[0] = "the control plane is shutting down"
    status, _, body = await fetch(server, "/healthz")
    assert (status, body) == (503, b"the control plane is shutting down\n")


async def test_a_loop_that_does_not_answer_makes_both_endpoints_503(
    serve: Callable[..., MetricsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httplisten, "LOOP_ANSWER_TIMEOUT", 0.2)
    server = serve()
    answers: dict[str, tuple[int, bytes]] = {}

    def probe() -> None:
        address = server.url.removeprefix("http://")
        for path in ("/healthz", "/metrics"):
            connection = http.client.HTTPConnection(address, timeout=10)
            connection.request("GET", path)
            response = connection.getresponse()
            answers[path] = (response.status, response.read())
            connection.close()

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(1.5)  # this blocks the loop, as a stuck control plane would: neither can be answered in time
    prober.join(10)
    assert answers["/healthz"][0] == 503 and b"does not answer" in answers["/healthz"][1]
    assert answers["/metrics"][0] == 503
    assert (await fetch(server, "/healthz"))[0] == 200  # the loop free again, it answers again


async def test_head_answers_without_a_body_and_other_methods_and_paths_are_refused(
    serve: Callable[..., MetricsServer],
) -> None:
    server = serve()
    status, headers, body = await fetch(server, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert (await fetch(server, "/healthz", method="HEAD"))[0] == 200
    status, headers, _ = await fetch(server, "/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert (await fetch(server, "/"))[0] == 404
    assert (await fetch(server, "/metrics/../admin"))[0] == 404


async def test_on_loopback_a_foreign_host_header_is_refused(serve: Callable[..., MetricsServer]) -> None:
    server = serve()
    port = server.url.rsplit(":", 1)[1]
    assert (await fetch(server, "/metrics", host="attacker.example"))[0] == 400
    assert (await fetch(server, "/metrics", host=f"attacker.example:{port}"))[0] == 400
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert (await fetch(server, "/healthz", host=host))[0] == 200, host


async def test_host_headers_follow_the_dashboards_rule_one_spelling_per_ip_and_malformed_refused(
    serve: Callable[..., MetricsServer],
) -> None:
    server = serve()
    port = server.url.rsplit(":", 1)[1]
    # Another spelling of a loopback address, a trailing dot, upper case: the dashboard allows them
    for host in (f"[0:0:0:0:0:0:0:1]:{port}", "[::0001]", "LOCALHOST.", f"127.0.0.1.:{port}"):
        assert (await fetch(server, "/healthz", host=host))[0] == 200, host
    # A malformed header, a foreign address, userinfo tricks: refused as by the dashboard
    other_port = 1 if port != "1" else 2
    for host in (
        "[::1",
        "[::2]",
        f"127.0.0.1:{port}:1",
        "evil@127.0.0.1",
        "127.0.0.1:99999",
        f"localhost:{other_port}",
    ):
        assert (await fetch(server, "/healthz", host=host))[0] == 400, host

    # A request without a Host header (HTTP/1.0, or one the listener cannot read) is not one of ours either
    def bare(head: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as connection:
            connection.sendall(head)
            return connection.recv(200)

    for head in (b"GET /healthz HTTP/1.0\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost : evil.example\r\n\r\n"):
        assert (await asyncio.to_thread(bare, head)).startswith(b"HTTP/1.0 400"), head


@contextlib.asynccontextmanager
async def silent_connections(port: int, count: int) -> AsyncIterator[None]:
    """``count`` connections to the listener that never send a byte, closed on leaving."""
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    try:
        await asyncio.sleep(0.2)  # accepted (or refused) by now
        yield
    finally:
        for sock in silent:
            sock.close()
    await asyncio.sleep(0.2)  # their handler threads see them gone


async def closed_at_once(port: int) -> bool:
    """Whether one more connection is closed by the listener without a byte read (within 5 s)."""
    extra = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return await asyncio.to_thread(extra.recv, 1) == b""
    finally:
        extra.close()


async def test_one_peer_holding_silent_connections_cannot_starve_the_probe(
    serve: Callable[..., MetricsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httplisten, "MAX_CONNECTIONS_PER_PEER", 3)
    server = serve()
    port = port_of(server)
    # One peer (127.0.0.1) opens more silent connections than it may hold
    async with silent_connections(port, 3):
        # over its cap, the same peer's probe is still answered, and a scrape told to come back
        assert (await fetch(server, "/healthz"))[0] == 200
        status, headers, body = await fetch(server, "/metrics")
        assert status == 503 and headers["retry-after"] == "1" and b"too many connections" in body
        # while another address (127.0.0.2, also loopback) is served as usual
        other = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=("127.0.0.2", 0))

        def scrape() -> int:
            other.request("GET", "/metrics", headers={"Host": f"127.0.0.1:{port}"})
            response = other.getresponse()
            response.read()
            return response.status

        assert await asyncio.to_thread(scrape) == 200
        other.close()
    assert (await fetch(server, "/metrics"))[0] == 200  # the silent ones gone, the peer is served again


async def test_connections_beyond_the_overall_cap_get_the_probe_or_a_503(
    serve: Callable[..., MetricsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httplisten, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(_httplisten, "MAX_CONNECTIONS_PER_PEER", 100)
    server = serve()
    port = port_of(server)
    async with silent_connections(port, 4):
        assert (await fetch(server, "/healthz"))[0] == 200
        assert (await fetch(server, "/metrics"))[0] == 503
    assert (await fetch(server, "/metrics"))[0] == 200


async def test_connections_beyond_the_caps_and_the_short_lane_are_closed_at_once(
    serve: Callable[..., MetricsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httplisten, "MAX_CONNECTIONS_PER_PEER", 1)
    monkeypatch.setattr(_httplisten, "MAX_OVERFLOW", 2)
    monkeypatch.setattr(_httplisten, "OVERFLOW_TIMEOUT", 30)  # silent ones hold the lane meanwhile
    server = serve()
    port = port_of(server)
    async with silent_connections(port, 3):  # one served, two in the short lane
        started = time.monotonic()
        assert await closed_at_once(port)
        assert time.monotonic() - started < 5
    assert (await fetch(server, "/healthz"))[0] == 200


async def test_a_silent_connection_in_the_short_lane_is_closed_after_its_short_timeout(
    serve: Callable[..., MetricsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httplisten, "MAX_CONNECTIONS_PER_PEER", 1)
    server = serve()
    port = port_of(server)
    async with silent_connections(port, 1):
        started = time.monotonic()
        assert await closed_at_once(port)  # silent in the short lane: closed after OVERFLOW_TIMEOUT
        assert _httplisten.OVERFLOW_TIMEOUT - 0.2 < time.monotonic() - started < 5


async def test_a_connection_that_trickles_its_request_head_is_closed_at_the_head_deadline(
    serve: Callable[..., MetricsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each byte comes well within the socket's timeout; the head as a whole does not (a slowloris
    # holding the listener's few places made every scrape a 503).
    monkeypatch.setattr(_httplisten, "CONNECTION_TIMEOUT", 1.0)
    server = serve()
    port = port_of(server)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    stop = threading.Event()

    def trickle() -> None:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        while not stop.wait(0.1):
            try:
                sock.sendall(b"X")
            except OSError:
                return

    sender = threading.Thread(target=trickle, daemon=True)
    started = time.monotonic()
    sender.start()
    try:
        assert await asyncio.to_thread(sock.recv, 1) == b""  # closed by the listener
        assert 0.8 < time.monotonic() - started < 5
    finally:
        stop.set()
        sender.join(5)
        sock.close()
    assert (await fetch(server, "/metrics"))[0] == 200


def test_a_bad_address_is_refused_naming_it() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="metrics address 'nonsense'"):
            MetricsServer(loop, "nonsense", snapshot, lambda: None)
    finally:
        loop.close()


async def test_a_silent_connection_timing_out_is_logged_not_printed_to_stderr(
    serve: Callable[..., MetricsServer], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # socketserver printed a traceback to stderr, around the logging (raw lines in a JSON log stream)
    monkeypatch.setattr(_httplisten.QuietHandler, "timeout", 0.2)
    server = serve()
    port = port_of(server)
    async with silent_connections(port, 1):
        await asyncio.sleep(0.6)  # it times out meanwhile
    assert (await fetch(server, "/healthz"))[0] == 200
    assert "Traceback" not in capfd.readouterr().err
