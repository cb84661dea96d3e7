"""parse_address, start_in_thread (port 0, live stream, clean stop) and the fastworker-dashboard command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from web_fakes import FakeAdminClient, make_task

from fastworker.dashboard.web import server as server_module
from fastworker.dashboard.web.app import create_app
from fastworker.dashboard.web.cli import main
from fastworker.dashboard.web.server import parse_address, start_in_thread

SRC_PATHS = [str(Path(p).resolve()) for p in sys.path if p.endswith("/src")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("http://127.0.0.1:0", ("127.0.0.1", 0)),
        ("http://localhost:9000/", ("localhost", 9000)),
        ("[::1]:8080", ("::1", 8080)),
        (" 0.0.0.0:80 ", ("0.0.0.0", 80)),
    ],
)
def test_parse_address_accepts_host_port_with_optional_http_prefix(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "8080", "localhost", ":8080", "host:", "host:http", "host:70000", "https://h:1", "http://h:1/x", "::1:80"],
)
def test_parse_address_rejects_anything_else_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="dashboard address"):
        parse_address(text)


def test_cli_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--bogus"], ["--dashboard-address", "nonsense"], ["--log-level", "loud"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
    assert "HOST:PORT" in capsys.readouterr().err
    # a control-plane address it could never dial: refused up front, naming it (not the HTTP address)
    with pytest.raises(SystemExit) as exit_info:
        main(["--control-plane", "tcp://nope:x", "--dashboard-address", "127.0.0.1:0"])
    assert exit_info.value.code == 2
    assert "argument --control-plane: address 'tcp://nope:x' has a non-numeric port" in capsys.readouterr().err
    monkeypatch.setenv("FASTWORKER_DASHBOARD_ADDRESS", "not-an-address")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_an_unusable_password_file_is_named_as_the_password_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "dashboard.pw"
    empty.write_text("\n")
    assert main(["--dashboard-password-file", str(empty), "--dashboard-address", "127.0.0.1:0"]) == 2
    assert f"the dashboard password file (--dashboard-password-file) {empty} is empty" in capsys.readouterr().err


def test_start_in_thread_serves_on_a_free_port_pushes_live_panels_and_stops(fake: FakeAdminClient) -> None:
    # Given the app served from a thread on port 0
    running = start_in_thread(create_app(control_plane="tcp://127.0.0.1:5550", client=fake), "127.0.0.1", 0)
    try:
        assert running.url.startswith("http://127.0.0.1:") and not running.url.endswith(":0")
        with httpx.Client(base_url=running.url, timeout=10) as http:
            assert 'data-worker-id="w1"' in http.get("/").text
            # When a browser follows the live stream and another client submits a task
            with http.stream("GET", "/stream?view=overview") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.iter_lines()
                new = make_task("dddddddd-0000-4000-8000-000000000001", name="app.fresh", queued_at=time.time())
                running.loop.call_soon_threadsafe(fake.add, new)
                # Then the recent-tasks panel arrives with it (bounded by the read timeout)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    line = next(lines)
                    if line.startswith("data:") and new.id in line:
                        payload = json.loads(line[5:])
                        assert payload["id"] == "panel-recent"
                        break
                else:
                    pytest.fail("the new task never reached the live stream")
                # And stopping the server ends the open stream instead of waiting for it
                running.stop(timeout=5.0)
                assert not running.alive
    finally:
        running.stop()


def test_connections_beyond_the_cap_are_answered_503_so_slow_ones_cannot_use_up_descriptors(
    fake: FakeAdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 4)
    running = start_in_thread(create_app(control_plane="tcp://127.0.0.1:5550", client=fake), "127.0.0.1", 0)
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
    try:
        for conn in slow:  # a request line and a header, and then nothing (slowloris)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)
        with httpx.Client(base_url=running.url, timeout=10) as http:
            assert http.get("/healthz").status_code == 503  # refused at once, not queued behind them
        for conn in slow:
            conn.close()
        deadline = time.monotonic() + 10
        while True:  # the slots come back as they close
            with httpx.Client(base_url=running.url, timeout=10) as http:
                if http.get("/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the dashboard never served again"
            time.sleep(0.1)
    finally:
        for conn in slow:
            conn.close()
        running.stop()


@pytest.mark.parametrize(
    "sends", [b"", b"GET / HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET / HTTP/1.1\r\n"]
)
def test_a_connection_that_does_not_send_its_request_head_in_time_is_closed_and_frees_its_place(
    fake: FakeAdminClient, monkeypatch: pytest.MonkeyPatch, sends: bytes
) -> None:
    # Given a dashboard with room for 2 connections, and 2 that send nothing more than `sends`
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(server_module, "REQUEST_HEAD_TIMEOUT", 0.5)
    running = start_in_thread(create_app(control_plane="tcp://127.0.0.1:5550", client=fake), "127.0.0.1", 0)
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    silent = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
    try:
        for conn in silent:
            if sends:
                conn.sendall(sends)
        # When the head's time passes, Then the server closes them (what they read ends)
        for conn in silent:
            received = b""
            while chunk := conn.recv(65536):  # an answer to a complete first request, if any, then the end
                received += chunk
            assert received.count(b"HTTP/1.1 ") == sends.count(b"\r\n\r\n")
        # and the dashboard serves again
        with httpx.Client(base_url=running.url, timeout=10) as http:
            assert http.get("/healthz").status_code == 200
    finally:
        for conn in silent:
            conn.close()
        running.stop()


def test_a_slow_live_stream_is_not_cut_by_the_request_head_timeout(
    fake: FakeAdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request whose head came is under way: the timeout is for heads only
    monkeypatch.setattr(server_module, "REQUEST_HEAD_TIMEOUT", 0.3)
    running = start_in_thread(create_app(control_plane="tcp://127.0.0.1:5550", client=fake), "127.0.0.1", 0)
    try:
        with httpx.Client(base_url=running.url, timeout=10) as http, http.stream("GET", "/stream") as stream:
            assert stream.status_code == 200
            time.sleep(0.8)
            assert next(stream.iter_bytes())  # still open past the head timeout
    finally:
        running.stop()


def cli_with_ready_file(ready: Path, **env: str) -> tuple[list[str], dict[str, str]]:
    """The standalone dashboard's command line (a control plane nobody serves) and its environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    environ["PYTHONPATH"] = os.pathsep.join(SRC_PATHS + [environ.get("PYTHONPATH", "")])
    argv = [sys.executable, "-c", "import sys; from fastworker.dashboard.web.cli import main; sys.exit(main())"]
    argv += ["--control-plane", "tcp://127.0.0.1:9", "--dashboard-address", "127.0.0.1:0", "--ready-file", str(ready)]
    return argv, {**environ, **env}


def test_cli_serves_until_sigterm_and_writes_its_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    argv, env = cli_with_ready_file(ready, FASTWORKER_READ_ONLY="1")
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline, "no ready file within 20 s"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["pid"] == process.pid
        assert info["dashboard"].startswith("http://127.0.0.1:")
        with httpx.Client(base_url=info["dashboard"], timeout=10) as http:
            assert http.get("/static/dashboard.css").status_code == 200
            assert http.post("/api/queues/low/pause").status_code == 403  # FASTWORKER_READ_ONLY=1
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_the_command_line_answers_without_loading_the_web_stack() -> None:
    # --help, --version and usage errors answer at once: FastAPI, uvicorn and the templates load
    # only to serve
    probe = (
        "import sys; from fastworker.dashboard.web import cli\n"
        "try:\n    cli.main(['--version'])\nexcept SystemExit as stop:\n    code = stop.code\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'jinja2') if m in sys.modules), code)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines()[-1] == "[] 0"


def test_cli_refuses_a_ready_file_it_cannot_write_before_serving(tmp_path: Path) -> None:
    # It served first, then died on the write with a FileNotFoundError traceback.
    ready = tmp_path / "missing" / "ready.json"
    argv, env = cli_with_ready_file(ready)
    done = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"--ready-file: cannot write {ready}: its folder {ready.parent} does not exist" in done.stderr
    assert "Traceback" not in done.stderr and "serving" not in done.stderr
