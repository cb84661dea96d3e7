"""Run the web shop: a control plane with its dashboard, one subworker, and the FastAPI app under uvicorn.

One command (with the FastWorker packages, fastapi and uvicorn installed, e.g. ``.venv-demo/bin/python``)::

    python examples/fastapi_app/run.py              # http://127.0.0.1:8000/docs, dashboard http://127.0.0.1:8080
    python examples/fastapi_app/run.py --self-check # also call the API once, print what happened, and exit

In production these are three commands (``FASTWORKER_CONTROL_PLANE`` tells the app and the
worker where the control plane is)::

    fastworker-controlplane --task-modules webshop.tasks --local-concurrency 0 --dashboard-address 127.0.0.1:8080
    fastworker-worker --task-modules webshop.tasks
    uvicorn webshop.main:app --port 8000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fastworker.controlplane.testing import run_controlplane, run_worker, stop_process

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_until_healthy(base: str, app: subprocess.Popen[bytes], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise SystemExit(f"uvicorn exited with {app.returncode}")
        try:
            code, health = http("GET", f"{base}/healthz")
            if code == 200 and health["workers_online"] >= 1:
                return dict(health)
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.1)
    raise SystemExit(f"the app did not report healthy within {timeout:g} s")


def self_check(base: str) -> None:
    code, accepted = http("POST", f"{base}/signup", {"email": "ada@example.com"})
    print(f"POST /signup -> {code} {accepted}")
    code, report = http("POST", f"{base}/reports", {"month": "2026-11", "amounts": ["19.99", "5.01", "75.00"]})
    print(f"POST /reports -> {code} {report}")
    deadline = time.monotonic() + 60
    while True:
        code, body = http("GET", f"{base}{report['status_url']}?wait=2")
        if code != 202 or time.monotonic() > deadline:
            break
    print(f"GET {report['status_url']} -> {code} {body}")
    while True:
        code, email = http("GET", f"{base}{accepted['status_url']}")
        if email["state"] in ("SUCCESS", "FAILURE", "CANCELLED") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    print(f"GET {accepted['status_url']} -> {code} {email['state']} {email['result']}")
    code, preview = http("POST", f"{base}/preview-email", {"email": "bob@example.com"})
    print(f"POST /preview-email -> {code} {preview}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="the app's port (0: any free one)")
    parser.add_argument(
        "--dashboard-address", default="127.0.0.1:8080", help="HOST:PORT of the dashboard (port 0: any)"
    )
    parser.add_argument("--self-check", action="store_true", help="call the API once, print the answers, and exit")
    args = parser.parse_args()
    port = args.port or free_port()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}

    with run_controlplane(
        task_modules=["webshop.tasks"],
        extra_args=["--local-concurrency", "0"],
        dashboard=args.dashboard_address,
        env=env,
    ) as cp:
        print(f"control plane pid {cp.pid} on {cp.discovery}; dashboard {cp.dashboard or 'not served (port taken?)'}")
        with run_worker(cp.discovery, task_modules=["webshop.tasks"], worker_id="webshop-worker", env=env):
            app_env = {**os.environ, **env, "FASTWORKER_CONTROL_PLANE": cp.discovery}
            uvicorn = [sys.executable, "-m", "uvicorn", "webshop.main:app", "--app-dir", str(HERE)]
            uvicorn += [
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *(["--log-level", "warning"] if args.self_check else []),
            ]
            app = subprocess.Popen(uvicorn, env=app_env)
            try:
                base = f"http://127.0.0.1:{port}"
                health = wait_until_healthy(base, app)
                print(f"web shop on {base} (API docs {base}/docs); health {health}")
                if args.self_check:
                    self_check(base)
                else:
                    print("Ctrl+C stops everything")
                    app.wait()
            except KeyboardInterrupt:
                pass
            finally:
                stop_process(app)
                print("uvicorn stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
