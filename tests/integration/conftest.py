"""Fixtures for the integration suite: real control-plane processes on loopback, and clients for them.

Every control plane runs ``python -m fastworker.controlplane`` with ``--task-modules fwtests_tasks``
on port 0 and is stopped by pid at teardown (``fastworker.controlplane.testing``). The task module
lives next to this file; the child finds it because this directory is prepended to PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from fastworker.client import Client, TaskInfo, TaskState
from fastworker.controlplane import testing
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker, start_controlplane

TESTS_DIR = Path(__file__).resolve().parent
TASK_MODULES = ("fwtests_tasks",)
#: Debian's chromium, which Playwright drives (it never downloads a browser of its own).
CHROMIUM = Path("/usr/bin/chromium")
#: Playwright's assertions wait 5 s by default; a 2-core machine running two suites needs the
#: browser tests' own bound.
expect.set_options(timeout=15_000)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: The suite's half that ``FWTESTS_PART=fleet`` runs (subworkers, restarts, the journal); ``core``
#: runs every other module, so each test is in exactly one half. tox's ``integration-fleet`` runs it
#: after ``security``, beside ``integration-core``: the suite waits on its processes far more than it
#: computes, and two halves in parallel end the run minutes sooner. Unset: the whole suite.
FLEET_MODULES = frozenset(
    {"test_workers", "test_restart_and_shutdown", "test_journal", "test_worker_health", "test_prefetch"}
)
PARTS = ("core", "fleet")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the tests of ``FWTESTS_PART``'s half, if set (a module listed but missing is an error)."""
    part = os.environ.get("FWTESTS_PART", "")
    if not part:
        return
    if part not in PARTS:
        raise pytest.UsageError(f"FWTESTS_PART={part!r}: expected one of {', '.join(PARTS)} (or unset: every test)")
    missing = sorted(name for name in FLEET_MODULES if not (TESTS_DIR / f"{name}.py").exists())
    if missing:
        raise pytest.UsageError(f"FLEET_MODULES names modules that do not exist: {', '.join(missing)}")
    kept, dropped = [], []
    for item in items:
        in_fleet = item.path.stem in FLEET_MODULES
        (kept if in_fleet == (part == "fleet") else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


StartControlPlane = Callable[..., RunningControlPlane]
OneWorkerCluster = Callable[..., contextlib.AbstractContextManager[tuple[RunningControlPlane, RunningWorker]]]
MakeClient = Callable[..., Client]
WaitForState = Callable[..., Coroutine[Any, Any, TaskInfo]]


def child_env() -> dict[str, str]:
    """The environment additions for a control-plane child: this directory first on PYTHONPATH."""
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(part for part in (str(TESTS_DIR), existing) if part)}


def launch(
    workdir: Path, *extra_args: str, task_modules: tuple[str, ...] = TASK_MODULES, **kwargs: Any
) -> RunningControlPlane:
    """Start one control plane with the test tasks, or the given task modules (the caller stops it)."""
    return start_controlplane(
        task_modules=task_modules, extra_args=list(extra_args), env=child_env(), workdir=workdir, **kwargs
    )


@pytest.fixture
def start_cp(tmp_path: Path) -> Iterator[StartControlPlane]:
    """Start control planes with extra flags; every one is stopped by pid at teardown."""
    started: list[RunningControlPlane] = []

    def start(*extra_args: str, **kwargs: Any) -> RunningControlPlane:
        control_plane = launch(tmp_path, *extra_args, **kwargs)
        started.append(control_plane)
        return control_plane

    yield start
    for control_plane in started:
        control_plane.stop()
    for control_plane in started:
        # Shown by pytest only when the test failed.
        print(f"---- control plane {control_plane.pid} ({' '.join(control_plane.argv[3:])}) ----")
        print(control_plane.log())


@pytest.fixture(scope="module")
def shared_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningControlPlane]:
    """One control plane with default flags, shared by the tests of one module (use unique arguments)."""
    control_plane = launch(tmp_path_factory.mktemp("shared-cp"))
    try:
        yield control_plane
    finally:
        control_plane.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Create asyncio clients for a control plane; all are closed at teardown."""
    clients: list[Client] = []

    def make(control_plane: RunningControlPlane, **kwargs: Any) -> Client:
        client = Client(control_plane.discovery, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def _wait_for_state(client: Client, task_id: str, state: TaskState, timeout: float = 10.0) -> TaskInfo:
    deadline = time.monotonic() + timeout
    info = await client.status(task_id)
    while info.state is not state:
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} did not reach {state} within {timeout:g} s (last: {info.state})")
        await asyncio.sleep(0.02)
        info = await client.status(task_id)
    return info


@pytest.fixture
def wait_for_state() -> WaitForState:
    """``await wait_for_state(client, task_id, state, timeout=10)``: poll status until the state (bounded)."""
    return _wait_for_state


# --------------------------------------------------------------------------------------- subworkers

WORKER_TASK_MODULES = ("fwtests_worker_tasks",)

StartWorker = Callable[..., RunningWorker]


@pytest.fixture
def start_cp_for_workers(tmp_path: Path) -> Iterator[StartControlPlane]:
    """Start control planes that run nothing themselves (``--local-concurrency 0``, no task modules).

    Every one is stopped by pid at teardown; extra flags and addresses are passed through.
    """
    started: list[RunningControlPlane] = []

    def start(*extra_args: str, **kwargs: Any) -> RunningControlPlane:
        control_plane = start_controlplane(
            extra_args=["--local-concurrency", "0", *extra_args], env=child_env(), workdir=tmp_path, **kwargs
        )
        started.append(control_plane)
        return control_plane

    yield start
    for control_plane in started:
        control_plane.stop()
    for control_plane in started:
        print(f"---- control plane {control_plane.pid} ({' '.join(control_plane.argv[3:])}) ----")
        print(control_plane.log())


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """``start_worker(control_plane, worker_id, *extra_args, task_modules=..., concurrency=...)``.

    Starts ``python -m fastworker.worker`` with the worker test tasks (this directory on
    PYTHONPATH, ``FWTESTS_WORKER_ID`` set to the worker id) and waits until it registered. Every
    worker is stopped by pid at teardown (continued first if a test stopped it).
    """
    started: list[RunningWorker] = []

    def start(
        control_plane: RunningControlPlane,
        worker_id: str,
        *extra_args: str,
        task_modules: tuple[str, ...] = WORKER_TASK_MODULES,
        concurrency: int | None = None,
        **kwargs: Any,
    ) -> RunningWorker:
        env = child_env()
        env["FWTESTS_WORKER_ID"] = worker_id
        worker = testing.start_worker(
            control_plane.discovery,
            task_modules=task_modules,
            concurrency=concurrency,
            worker_id=worker_id,
            extra_args=extra_args,
            env=env,
            workdir=tmp_path,
            **kwargs,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    for worker in started:
        print(f"---- worker {worker.worker_id} pid {worker.pid} ({' '.join(worker.argv[3:])}) ----")
        print(worker.log())


@contextlib.contextmanager
def _one_worker_cluster(
    workdir: Path,
    *,
    task_modules: tuple[str, ...],
    concurrency: int,
    controlplane_args: tuple[str, ...] = (),
    dashboard: bool = False,
) -> Iterator[tuple[RunningControlPlane, RunningWorker]]:
    """A control plane that runs nothing itself and one subworker ``w1``; both stopped by pid, their logs printed."""
    control_plane = start_controlplane(
        extra_args=["--local-concurrency", "0", *controlplane_args],
        env=child_env(),
        workdir=workdir,
        dashboard=dashboard,
    )
    try:
        assert control_plane.dashboard or not dashboard, (
            f"the control plane served no dashboard:\n{control_plane.log()}"
        )
        worker = testing.start_worker(
            control_plane.discovery,
            task_modules=task_modules,
            concurrency=concurrency,
            worker_id="w1",
            env=child_env(),
            workdir=workdir,
        )
    except BaseException:
        control_plane.stop()
        raise
    try:
        yield control_plane, worker
    finally:
        worker.stop()
        control_plane.stop()
        print(f"---- control plane ----\n{control_plane.log()}\n---- worker w1 ----\n{worker.log()}")


@pytest.fixture(scope="session")
def one_worker_cluster() -> OneWorkerCluster:
    """``one_worker_cluster(workdir, task_modules=, concurrency=, controlplane_args=, dashboard=)``: a context
    manager for a module's cluster (a session fixture, so that module-scoped fixtures may use it)."""
    return _one_worker_cluster


@pytest.fixture(scope="module")
def dashboard_url(cluster: tuple[RunningControlPlane, RunningWorker]) -> str:
    """The web dashboard of the requesting module's ``cluster`` (a control plane started with ``dashboard=True``)."""
    url = cluster[0].dashboard
    assert url is not None
    return url


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's chromium under Playwright's sync API, one per test module."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run the browser tests"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _http_get(url: str) -> tuple[int, bytes]:
    """The status and body of ``GET url`` (call it from a thread when the server shares the test's loop)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def http_get() -> Callable[[str], tuple[int, bytes]]:
    """One plain HTTP GET, for the tests that probe the daemons' health listeners: ``http_get(url) -> (status, body)``."""
    return _http_get
