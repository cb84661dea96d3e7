"""The in-process dashboard of a real control plane against a hostile browser (issue 14, item 4).

DNS rebinding (a foreign ``Host``), an unprotected non-loopback bind, password guessing, a
password separate from the frame secret, and a task with a 7 MB argument watched by concurrent
pages and stalled live viewers. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from fastworker.client import Client
from fastworker.controlplane.testing import RunningControlPlane
from fastworker.dashboard.web.throttle import most_attempts

EVIL_HOST = "rebind.attacker.example"


def request(
    base: str, method: str, path: str, *, host: str | None = None, body: str = "", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to the dashboard at ``base`` with an optional forged Host header."""
    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        sent = dict(headers or {})
        if host is not None:
            connection.putrequest(method, path, skip_host=True)
            connection.putheader("Host", host)
        else:
            connection.putrequest(method, path)
        if body:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            sent["Content-Length"] = str(len(body))
        for name, value in sent.items():
            connection.putheader(name, value)
        connection.endheaders(body.encode() if body else None)
        response = connection.getresponse()
        # An SSE stream never ends: read only what is there for a refused or a plain answer.
        data = (
            response.read(200_000) if response.getheader("content-type", "").startswith("text/event") is False else b""
        )
        merged: dict[str, str] = {}
        for name, value in response.getheaders():
            merged[name.lower()] = f"{merged[name.lower()]}, {value}" if name.lower() in merged else value
        return response.status, merged, data
    finally:
        connection.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def csrf_of(base: str) -> str:
    status, _, page = request(base, "GET", "/login")
    assert status == 200
    match = re.search(rb'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1).decode()


def test_a_foreign_host_is_refused_for_reads_and_actions(start_cp: Any) -> None:
    control_plane = start_cp(dashboard=True)
    base = control_plane.dashboard
    assert base
    port = urllib.parse.urlsplit(base).port
    reads = ["/", "/tasks", "/workers", "/api/stats", "/api/tasks", "/metrics", "/stream?view=overview"]
    reads.append("/static/dashboard.css")
    for path in reads:
        status, headers, body = request(base, "GET", path, host=f"{EVIL_HOST}:{port}")
        assert status == 400, path
        assert b"not one this dashboard serves" in body and "text/plain" in headers["content-type"]
    origin = {"Origin": f"http://{EVIL_HOST}:{port}"}
    for path in ("/api/queues/low/pause", "/queues/low/pause", "/api/workers/w/drain"):
        status, _, _ = request(base, "POST", path, host=f"{EVIL_HOST}:{port}", body="csrf=x", headers=origin)
        assert status == 400, path
    # The level was not paused by the refused actions; the served names still work.
    status, _, body = request(base, "GET", "/api/queues", host=f"localhost:{port}")
    assert status == 200 and b'"paused":true' not in body.replace(b" ", b"")
    assert request(base, "GET", "/metrics")[0] == 200
    assert "refused a request for Host" in control_plane.log()


def test_a_non_loopback_bind_needs_a_password_or_dashboard_insecure(start_cp: Any, tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "fastworker.controlplane",
        "--discovery-address",
        "tcp://127.0.0.1:0",
        "--client-address",
        "tcp://127.0.0.1:0",
        "--dispatch-address",
        "tcp://127.0.0.1:0",
        "--dashboard-address",
        "0.0.0.0:0",
        "--no-metrics",
        "--local-concurrency",
        "1",
    ]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode == 1
    assert "0.0.0.0:0" in refused.stderr and "--dashboard-insecure" in refused.stderr
    # With --dashboard-insecure it starts, says where it really listens, and warns.
    control_plane: RunningControlPlane = start_cp("--dashboard-insecure", dashboard="0.0.0.0:0")
    assert control_plane.dashboard and control_plane.dashboard.startswith("http://127.0.0.1:")
    port = urllib.parse.urlsplit(control_plane.dashboard).port
    log = control_plane.log()
    assert f"bound to 0.0.0.0:{port}" in log and "neither secret nor password" in log
    assert request(control_plane.dashboard, "GET", "/api/stats")[0] == 200  # over loopback


def test_a_dashboard_address_in_use_stops_the_start_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        argv = [sys.executable, "-m", "fastworker.controlplane", "--no-metrics", "--local-concurrency", "0"]
        argv += ["--discovery-address", "tcp://127.0.0.1:0", "--client-address", "tcp://127.0.0.1:0"]
        argv += ["--dispatch-address", "tcp://127.0.0.1:0", "--dashboard-address", address]
        refused = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert f"cannot start: cannot listen on the --dashboard-address {address}" in refused.stderr


def test_login_guessing_is_slowed_to_a_few_attempts_per_second(start_cp: Any) -> None:
    control_plane = start_cp("--secret", "frame-secret", dashboard=True)
    base = control_plane.dashboard
    assert base
    csrf = csrf_of(base)
    origin = {"Origin": base}
    wrong = urllib.parse.urlencode({"csrf": csrf, "secret": "guess", "next": "/"})
    checked = throttled = 0
    window = 5.0
    started = time.monotonic()
    attempt = 0
    while time.monotonic() - started < window:
        attempt += 1
        # A forged X-Forwarded-For per guess (what a local caller, or a proxy passing it through,
        # could send) changes nothing: the connection's address is the one counted and logged.
        forged = {**origin, "X-Forwarded-For": f"10.0.{attempt // 250}.{attempt % 250}"}
        status, headers, _ = request(base, "POST", "/login", body=wrong, headers=forged)
        if status == 429:
            throttled += 1
            assert int(headers["retry-after"]) >= 1
        else:
            assert status == 403
            checked += 1
    elapsed = time.monotonic() - started
    print(f"login guessing: {checked} passwords checked, {throttled} refused in {elapsed:.1f} s")
    assert checked <= most_attempts(elapsed)  # 5 in 5 s with the default schedule
    assert throttled > 0
    assert "wrong password from 127.0.0.1" in control_plane.log()
    assert "wrong password from 10.0." not in control_plane.log()


def test_the_dashboard_password_is_separate_from_the_frame_secret(start_cp: Any, tmp_path: Path) -> None:
    password_file = tmp_path / "dashboard.pw"
    password_file.write_text("dash-pass\n")
    control_plane = start_cp(
        "--secret", "frame-secret", "--dashboard-password-file", str(password_file), dashboard=True
    )
    base = control_plane.dashboard
    assert base
    csrf = csrf_of(base)
    origin = {"Origin": base}
    with_secret = urllib.parse.urlencode({"csrf": csrf, "secret": "frame-secret", "next": "/"})
    assert request(base, "POST", "/login", body=with_secret, headers=origin)[0] == 403
    with_password = urllib.parse.urlencode({"csrf": csrf, "secret": "dash-pass", "next": "/"})
    status, headers, _ = request(base, "POST", "/login", body=with_password, headers=origin)
    assert status == 303 and "fastworker_session" in headers["set-cookie"]
    session = headers["set-cookie"].split(";", 1)[0]
    # Reading needs the password too (a login, or the header); the frame secret is not it.
    assert request(base, "GET", "/api/stats")[0] == 401
    assert request(base, "GET", "/tasks")[0] == 303
    assert request(base, "GET", "/api/stats", headers={"X-FastWorker-Secret": "frame-secret"})[0] == 401
    assert request(base, "GET", "/api/stats", headers={"X-FastWorker-Secret": "dash-pass"})[0] == 200
    # The dashboard still reads the control plane with the frame secret.
    assert request(base, "GET", "/api/stats", headers={"Cookie": session})[0] == 200
    assert request(base, "GET", "/tasks", headers={"Cookie": session})[0] == 200


def _stalled_viewer(base: str, path: str) -> socket.socket:
    """A live viewer that sends its request and never reads a byte."""
    parts = urllib.parse.urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


async def _submit_latencies(control_plane: RunningControlPlane, count: int) -> list[float]:
    async with Client(control_plane.discovery) as client:
        await client.delay("fwtests.add", 1, 2)  # connected and warm
        latencies = []
        for i in range(count):
            started = time.perf_counter()
            await client.delay("fwtests.add", i, 1)
            latencies.append(time.perf_counter() - started)
        return latencies


def test_a_7mb_argument_with_concurrent_pages_and_stalled_viewers_keeps_memory_bounded(start_cp: Any) -> None:
    control_plane = start_cp(dashboard=True)
    base = control_plane.dashboard
    assert base
    huge = "x" * (7 * 1024 * 1024)

    async def submit_big() -> str:
        async with Client(control_plane.discovery) as client:
            task_id = await client.delay("fwtests.add", huge, "")
            await client.result(task_id, timeout=60)
            return task_id

    task_id = asyncio.run(submit_big())
    # A first view warms up the dashboard (imports, templates, first read).
    assert request(base, "GET", f"/tasks/{task_id}")[0] == 200
    baseline = rss_bytes(control_plane.pid)

    viewers = [_stalled_viewer(base, f"/stream?view=task&id={task_id}") for _ in range(3)]
    peak = baseline
    sizes: list[int] = []
    errors: list[BaseException] = []

    def load_page() -> None:
        try:
            status, _, body = request(base, "GET", f"/tasks/{task_id}")
            assert status == 200
            sizes.append(len(body))
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        for _ in range(5):
            pages = [threading.Thread(target=load_page) for _ in range(6)]
            for page in pages:
                page.start()
            while any(page.is_alive() for page in pages):
                peak = max(peak, rss_bytes(control_plane.pid))
                time.sleep(0.02)
            print(f"round: peak {peak / 2**20:.1f} MiB, now {rss_bytes(control_plane.pid) / 2**20:.1f} MiB")
        latencies = asyncio.run(_submit_latencies(control_plane, 300))
        time.sleep(3)  # several live refreshes with the stalled viewers attached
        peak = max(peak, rss_bytes(control_plane.pid))
    finally:
        for viewer in viewers:
            viewer.close()
    assert not errors, errors
    growth = peak - baseline
    p50 = statistics.median(latencies) * 1000
    print(
        f"7 MB argument: RSS baseline {baseline / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB "
        f"(growth {growth / 2**20:.1f} MiB); page size {max(sizes)} bytes; submit p50 {p50:.2f} ms "
        f"p90 {statistics.quantiles(latencies, n=10)[-1] * 1000:.2f} ms"
    )
    assert max(sizes) < 64 * 1024  # a preview, not 7 MB of HTML
    assert growth < 100 * 1024 * 1024
