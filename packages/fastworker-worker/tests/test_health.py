"""The subworker's /healthz (``--health-address``): what it answers, to whom, and when its loop is stuck."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from fastworker.client import _httplisten
from fastworker.client.task import TaskRegistry
from fastworker.worker.health import HealthServer
from fastworker.worker.runtime import Worker, WorkerSettings, WorkerState


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., HealthServer]]:
    servers: list[HealthServer] = []

    def start(
        healthy: Callable[[], str | None] = lambda: None,
        address: str = "127.0.0.1:0",
        ready: Callable[[], str | None] = lambda: None,
    ) -> HealthServer:
        server = HealthServer(asyncio.get_running_loop(), address, healthy, ready)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await asyncio.to_thread(server.close)


def request(server: HealthServer, path: str, method: str = "GET", host: str | None = None) -> tuple[int, bytes]:
    """One request (call it from a thread: the loop must stay free to answer)."""
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    try:
        connection.request(method, path, headers={"Host": host} if host is not None else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def fetch(server: HealthServer, path: str, method: str = "GET", host: str | None = None) -> tuple[int, bytes]:
    return await asyncio.to_thread(request, server, path, method, host)


async def test_healthz_answers_ok_while_healthy_and_the_reason_when_not(serve: Callable[..., HealthServer]) -> None:
    reason: list[str | None] = [None]
    server = serve(lambda: reason[0])
    assert await fetch(server, "/healthz") == (200, b"ok\n")
    reason[0] = "the worker has stopped"
    assert await fetch(server, "/healthz") == (503, b"the worker has stopped\n")


async def test_readyz_answers_apart_from_healthz_with_its_own_reason(serve: Callable[..., HealthServer]) -> None:
    reason: list[str | None] = ["not registered: the control plane's announcements fail authentication"]
    server = serve(ready=lambda: reason[0])
    assert await fetch(server, "/healthz") == (200, b"ok\n")  # alive all the same
    assert await fetch(server, "/readyz") == (503, f"{reason[0]}\n".encode())
    reason[0] = None
    assert await fetch(server, "/readyz") == (200, b"ok\n")


async def test_a_worker_whose_loop_does_not_answer_is_unhealthy_until_it_answers_again(
    serve: Callable[..., HealthServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httplisten, "LOOP_ANSWER_TIMEOUT", 0.2)
    server = serve()
    answer: list[tuple[int, bytes]] = []
    prober = threading.Thread(target=lambda: answer.append(request(server, "/healthz")))
    prober.start()
    time.sleep(1.5)  # blocks the loop, as an async task that never yields would
    prober.join(10)
    assert answer == [(503, b"the worker's event loop does not answer\n")]
    assert await fetch(server, "/healthz") == (200, b"ok\n")


async def test_only_get_and_head_of_healthz_are_served_and_a_foreign_host_is_refused(
    serve: Callable[..., HealthServer],
) -> None:
    server = serve()
    port = server.url.rsplit(":", 1)[1]
    assert await fetch(server, "/healthz", method="HEAD") == (200, b"")
    assert (await fetch(server, "/healthz", method="POST"))[0] == 405
    assert (await fetch(server, "/metrics"))[0] == 404
    assert (await fetch(server, "/healthz", host="attacker.example"))[0] == 400
    assert (await fetch(server, "/healthz", host=f"localhost:{port}"))[0] == 200


async def test_a_port_in_use_fails_at_once(serve: Callable[..., HealthServer]) -> None:
    taken = serve()
    with pytest.raises(OSError):
        HealthServer(asyncio.get_running_loop(), taken.url.removeprefix("http://"), lambda: None, lambda: None)


def test_a_bad_health_address_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="--health-address address 'nowhere'"):
        WorkerSettings(task_modules=(), health_address="nowhere")


async def test_the_worker_reports_unhealthy_once_stopped() -> None:
    worker = Worker(WorkerSettings(task_modules=()), TaskRegistry())
    assert worker._health_problem() is None
    worker.state = WorkerState.STOPPED
    assert worker._health_problem() == "the worker has stopped"


async def test_the_worker_is_ready_only_while_registered_and_not_draining() -> None:
    worker = Worker(WorkerSettings(task_modules=(), control_plane="tcp://127.0.0.1:9"), TaskRegistry())
    assert worker._readiness_problem() == "not registered: no control plane announced itself on tcp://127.0.0.1:9"
    worker._registered.set()
    worker.state = WorkerState.RUNNING
    assert worker._readiness_problem() is None
    # Registered, but the control plane went quiet past this worker's fence: it starts nothing, not ready
    worker._link = SimpleNamespace(  # type: ignore[assignment]
        last_contact=time.monotonic() - 60, problem="", instance_id="cp", shutdown_announced=False
    )
    assert worker._readiness_problem() == "no answer from the control plane for 60 s"
    worker._link.last_contact = time.monotonic()  # type: ignore[attr-defined]
    assert worker._readiness_problem() is None
    # Its control plane announced its shutdown: it dispatches nothing more, not ready
    worker._link.shutdown_announced = True  # type: ignore[attr-defined]
    assert "the control plane announced its shutdown" in (worker._readiness_problem() or "")
    worker._link.shutdown_announced = False  # type: ignore[attr-defined]
    worker.state = WorkerState.DRAINING
    assert worker._readiness_problem() == "the worker is draining"
    worker.state = WorkerState.STOPPED
    assert worker._readiness_problem() == "the worker has stopped"


async def test_a_ready_file_a_killed_predecessor_left_is_removed_before_the_worker_registers(tmp_path) -> None:
    # A restarted container keeps /tmp: the image's HEALTHCHECK read the old file as "registered"
    ready = tmp_path / "ready.json"
    ready.write_text('{"pid": 2, "worker_id": "stale"}')
    settings = WorkerSettings(
        task_modules=(), control_plane="tcp://127.0.0.1:9", ready_file=str(ready), worker_id="stale"
    )
    worker = Worker(settings, TaskRegistry())
    running = asyncio.ensure_future(worker.run())
    try:
        async with asyncio.timeout(10):
            while ready.exists():  # nothing listens on port 9: it never registers
                await asyncio.sleep(0.01)
        assert worker.state is not WorkerState.RUNNING
    finally:
        worker.request_stop("test over")
        async with asyncio.timeout(30):
            await running
    assert not ready.exists()


async def test_a_registration_refused_again_and_again_is_retried_less_and_less_often(monkeypatch) -> None:
    # A control plane of another protocol version refuses every registration: 2 requests and 2
    # warnings a second for ever, before
    monkeypatch.setattr("fastworker.worker.runtime.REGISTER_RETRY_FIRST", 0.05)
    monkeypatch.setattr("fastworker.worker.runtime.REGISTER_RETRY_MAX", 0.2)
    worker = Worker(WorkerSettings(task_modules=()), TaskRegistry())
    tries: list[float] = []

    async def refused() -> bool:
        tries.append(time.monotonic())
        return False

    monkeypatch.setattr(worker, "_register", refused)
    attempts = asyncio.ensure_future(worker._register_until_accepted())
    async with asyncio.timeout(10):
        while len(tries) < 6:
            await asyncio.sleep(0.01)
    worker._stop.set()
    attempts.cancel()
    gaps = [round(b - a, 2) for a, b in zip(tries, tries[1:], strict=False)]
    # 0.05, then 0.1, then the most, 0.2, each time (sleeps only overshoot)
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and all(gap >= 0.19 for gap in gaps[2:]), gaps


def test_a_ready_file_that_cannot_be_written_is_refused_at_start_naming_the_flag(tmp_path: Path) -> None:
    # It was written once registered, and its FileNotFoundError ended the worker with a traceback.
    with pytest.raises(ValueError, match="--ready-file: cannot write .*: its folder .* does not exist"):
        WorkerSettings(task_modules=(), ready_file=str(tmp_path / "missing" / "ready"))
    with pytest.raises(ValueError, match="--ready-file: .* is a folder"):
        WorkerSettings(task_modules=(), ready_file=str(tmp_path))


def test_a_control_plane_address_with_port_0_is_refused_naming_it() -> None:
    # It cannot be dialled: the worker waited for an announcement for ever.
    with pytest.raises(ValueError, match=r"--control-plane tcp://127.0.0.1:0: port 0 can be listened on, not dialled"):
        WorkerSettings(task_modules=(), control_plane="tcp://127.0.0.1:0")
