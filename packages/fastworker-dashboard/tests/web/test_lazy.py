"""LazyDashboard: the port is bound at once, the web stack loads on the first connection, stop is clean either way."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from typing import Any

import httpx
import pytest
from web_fakes import FakeAdminClient

from fastworker.dashboard.web.app import create_app
from fastworker.dashboard.web.lazy import LazyDashboard

SRC_PATHS = [p for p in sys.path if p.endswith("/src")]


def test_importing_the_lazy_server_loads_no_web_framework() -> None:
    code = (
        "import json, sys; import fastworker.dashboard.web.lazy, fastworker.dashboard.web.exposure, "
        "fastworker.dashboard.web.hosts; "
        "print(json.dumps(sorted(m for m in ('fastapi', 'uvicorn', 'jinja2', 'starlette.applications') "
        "if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_the_app_is_built_on_the_first_connection_and_that_connection_is_served(fake: FakeAdminClient) -> None:
    built: list[Any] = []

    def make_app() -> Any:
        app = create_app(control_plane="tcp://127.0.0.1:5550", client=fake)
        built.append(app)
        return app

    dashboard = LazyDashboard(make_app, "127.0.0.1", 0)
    try:
        assert dashboard.url.startswith("http://127.0.0.1:") and not dashboard.url.endswith(":0")
        assert dashboard.bound == dashboard.url.removeprefix("http://")
        assert built == [] and not dashboard.loaded and dashboard.alive
        with httpx.Client(base_url=dashboard.url, timeout=30) as http:
            first = http.get("/")
            assert first.status_code == 200 and 'data-worker-id="w1"' in first.text
            assert http.get("/workers").status_code == 200
        assert len(built) == 1 and dashboard.loaded and dashboard.alive
    finally:
        dashboard.stop()
    assert not dashboard.alive
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(dashboard.url.rsplit(":", 1)[1])), timeout=5).close()


def test_stopped_before_anyone_connected_it_never_builds_the_app_and_frees_the_port() -> None:
    built: list[int] = []
    dashboard = LazyDashboard(lambda: built.append(1), "127.0.0.1", 0)
    port = int(dashboard.url.rsplit(":", 1)[1])
    dashboard.stop()
    assert built == [] and not dashboard.alive
    with socket.create_server(("127.0.0.1", port)):  # the port is free again
        pass


def test_a_port_in_use_fails_at_once_not_on_the_first_page() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        with pytest.raises(OSError):
            LazyDashboard(lambda: None, "127.0.0.1", taken.getsockname()[1])


def test_an_app_that_cannot_be_built_is_answered_503_and_tried_again_at_the_next_connection(
    caplog: pytest.LogCaptureFixture, fake: FakeAdminClient
) -> None:
    # Given an app that cannot be built the first time (a broken install, a file being replaced)
    attempts: list[int] = []

    def flaky() -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("no templates here")
        return create_app(control_plane="tcp://127.0.0.1:5550", client=fake)

    dashboard = LazyDashboard(flaky, "127.0.0.1", 0)
    try:
        with caplog.at_level(logging.ERROR, logger="fastworker.dashboard.web.lazy"):
            with httpx.Client(base_url=dashboard.url, timeout=30) as http:
                # When a browser comes: it is told so, and the failure is logged
                first = http.get("/")
                assert first.status_code == 503 and "could not be started (RuntimeError)" in first.text
                assert "could not be started" in caplog.text and "no templates here" in caplog.text
                assert dashboard.alive and not dashboard.loaded  # the port stays open
                # Then the next connection tries again, and is served
                assert http.get("/").status_code == 200
        assert dashboard.loaded and len(attempts) == 2
    finally:
        dashboard.stop()
