"""examples/fastapi_app under uvicorn, with a real control plane and subworker: enqueue over HTTP, read the result.

The first test starts the three processes itself (as production would, with
``FASTWORKER_CONTROL_PLANE`` pointing the app at the control plane); the second runs the
example's one command, ``run.py --self-check``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastworker.controlplane.testing import RunningControlPlane, RunningWorker, start_controlplane, start_worker

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app"
BOUND = 60.0  # seconds any one wait below may take


@pytest.fixture
def backend(
    tmp_path: Path, with_pythonpath: Callable[..., dict[str, str]]
) -> Iterator[tuple[RunningControlPlane, RunningWorker]]:
    """A control plane that only queues, and one subworker with webshop.tasks; both stopped by pid."""
    env = with_pythonpath(APP_DIR)
    cp = start_controlplane(
        task_modules=["webshop.tasks"], extra_args=["--local-concurrency", "0"], env=env, workdir=tmp_path
    )
    try:
        worker = start_worker(
            cp.discovery, task_modules=["webshop.tasks"], worker_id="shop-1", env=env, workdir=tmp_path
        )
        try:
            yield cp, worker
        finally:
            worker.stop()
    finally:
        cp.stop()
        print(cp.log())  # shown when the test failed


@pytest.fixture
def web_app(
    backend: tuple[RunningControlPlane, RunningWorker], free_port: Callable[[], int], spawn: Callable[..., Any]
) -> str:
    """``uvicorn webshop.main:app`` on a free port, pointed at the control plane; returns its base URL."""
    cp, _ = backend
    port = free_port()
    spawn(
        ["-m", "uvicorn", "webshop.main:app", "--app-dir", str(APP_DIR), "--port", str(port)],
        FASTWORKER_CONTROL_PLANE=cp.discovery,
    )
    return f"http://127.0.0.1:{port}"


def _until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        value = check()
        if value is not None:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {BOUND:g} s")


def test_an_endpoint_enqueues_a_task_and_another_reads_its_result(web_app: str) -> None:
    with httpx.Client(base_url=web_app, timeout=15) as http:

        def healthy() -> dict[str, Any] | None:
            try:
                response = http.get("/healthz")
            except httpx.TransportError:
                return None  # uvicorn is not listening yet
            body: dict[str, Any] = response.json()
            return body if response.status_code == 200 and body["workers_online"] == 1 else None

        health = _until(healthy, "the app reporting a connected control plane with one worker")
        assert health["connected"] is True and health["error"] is None

        accepted = http.post("/reports", json={"month": "2026-11", "amounts": ["19.99", "5.01", "75.00"]})
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        assert accepted.json()["status_url"] == f"/reports/{task_id}"

        def report() -> dict[str, Any] | None:
            response = http.get(f"/reports/{task_id}", params={"wait": 2})
            assert response.status_code in (200, 202), response.text
            return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

        body = _until(report, "the report")
        assert body["state"] == "SUCCESS"
        assert body["report"]["month"] == "2026-11" and body["report"]["total"] == "100.00"
        assert body["report"]["orders"] == 3

        signup = http.post("/signup", json={"email": "ada@example.com"})
        assert signup.status_code == 202
        email_url = signup.json()["status_url"]

        def email() -> dict[str, Any] | None:
            state: dict[str, Any] = http.get(email_url).json()
            return state if state["state"] in ("SUCCESS", "FAILURE") else None

        sent = _until(email, "the welcome email")
        assert sent["state"] == "SUCCESS" and sent["name"] == "emails.send_welcome"
        assert sent["result"] == {"to": "ada@example.com", "subject": "Welcome to the shop!"}

        info = http.get(f"/tasks/{task_id}").json()
        assert info["name"] == "reports.sales" and info["state"] == "SUCCESS"

        preview = http.post("/preview-email", json={"email": "bob@example.com"})
        assert preview.json() == {"to": "bob@example.com", "subject": "Welcome to the shop!"}
        assert http.get("/tasks/no-such-id").status_code == 404
        assert http.post("/signup", json={"email": "not an address"}).status_code == 422


def test_run_py_self_check_starts_everything_with_one_command(run_example: Any) -> None:
    finished = run_example(
        ["examples/fastapi_app/run.py", "--self-check", "--port", "0", "--dashboard-address", "127.0.0.1:0"],
        timeout=150,
    )
    assert finished.returncode == 0, finished.output
    assert "dashboard http://127.0.0.1:" in finished.output, finished.output
    assert "'workers_online': 1" in finished.output, finished.output
    assert "POST /signup -> 202" in finished.output and "POST /reports -> 202" in finished.output
    assert "'state': 'SUCCESS', 'report': {'month': '2026-11', 'orders': 3, 'total': '100.00'" in finished.output
    assert "SUCCESS {'to': 'ada@example.com', 'subject': 'Welcome to the shop!'}" in finished.output
    assert "uvicorn stopped" in finished.output
