"""Pytest fixtures for applications' own tests: a real control plane and subworker on free ports, or eager mode.

Installed with ``fastworker-controlplane`` (a ``pytest11`` entry point), so the fixtures are there
in any project that installs it; nothing runs unless a test asks for a fixture. Name the task
modules once, in the pytest configuration::

    [tool.pytest.ini_options]
    fastworker_task_modules = ["myapp.tasks"]
    # optional: fastworker_controlplane_args = ["--local-concurrency", "0"]; fastworker_worker_args = [...]

or by overriding the ``fastworker_task_modules`` fixture in a ``conftest.py``. Then::

    async def test_signup_sends_an_email(fastworker_client):     # real processes, connected client
        handle = await send_email.delay(42)                       # typed handles use this client
        assert (await handle.result(timeout=10))["sent"]

    async def test_with_a_subworker(fastworker_worker, fastworker_client): ...

    async def test_fast_unit(fastworker_eager):                   # no sockets, no processes
        assert await add.submit(1, 2) == 3

Fixtures: ``fastworker_controlplane`` (session: a ``RunningControlPlane``), ``fastworker_worker``
(session: a ``RunningWorker`` attached to it), ``fastworker_client`` (an async ``Client``,
current and process default during the test; needs pytest-asyncio), ``fastworker_sync_client``
(a ``SyncClient``), ``fastworker_eager`` (an :class:`~fastworker.controlplane.eager.EagerClient`,
the process default during the test), and the configuration fixtures ``fastworker_task_modules``,
``fastworker_controlplane_args``, ``fastworker_worker_args`` and ``fastworker_pythonpath`` (the
folders the child processes import task modules from: the test process's ``sys.path`` entries
inside the rootdir, and the rootdir). Every process is stopped by pid at the end of the session.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from fastworker.client import Client, SyncClient, set_default_client, set_default_sync_client
from fastworker.controlplane.eager import EagerClient
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker, start_controlplane, start_worker

F = TypeVar("F", bound=Callable[..., Any])


def _async_fixture(fn: F) -> F:
    """``pytest_asyncio.fixture`` (works in its strict and auto modes); plain ``pytest.fixture`` without it."""
    try:
        plugin = importlib.import_module("pytest_asyncio")
    except ImportError:  # pragma: no cover - then another async plugin (anyio) has to run it
        return cast(F, pytest.fixture(fn))
    return cast(F, plugin.fixture(fn))


__all__ = [
    "fastworker_client",
    "fastworker_controlplane",
    "fastworker_controlplane_args",
    "fastworker_eager",
    "fastworker_pythonpath",
    "fastworker_sync_client",
    "fastworker_task_modules",
    "fastworker_worker",
    "fastworker_worker_args",
]

_NO_MODULES = (
    'FastWorker fixtures need your task modules: set `fastworker_task_modules = ["myapp.tasks"]` in the pytest '
    "configuration ([tool.pytest.ini_options] or pytest.ini), or override the `fastworker_task_modules` fixture"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the plugin's configuration keys (all optional)."""
    parser.addini("fastworker_task_modules", "FastWorker: task modules for the fastworker_* fixtures", type="args")
    parser.addini(
        "fastworker_controlplane_args", "FastWorker: extra flags for the fastworker_controlplane fixture", type="args"
    )
    parser.addini("fastworker_worker_args", "FastWorker: extra flags for the fastworker_worker fixture", type="args")


@pytest.fixture(scope="session")
def fastworker_task_modules(pytestconfig: pytest.Config) -> list[str]:
    """The task modules the control plane, worker and eager client load (ini ``fastworker_task_modules``)."""
    return [str(name) for name in pytestconfig.getini("fastworker_task_modules")]


@pytest.fixture(scope="session")
def fastworker_controlplane_args(pytestconfig: pytest.Config) -> list[str]:
    """Extra ``fastworker-controlplane`` flags (ini ``fastworker_controlplane_args``)."""
    return [str(arg) for arg in pytestconfig.getini("fastworker_controlplane_args")]


@pytest.fixture(scope="session")
def fastworker_worker_args(pytestconfig: pytest.Config) -> list[str]:
    """Extra ``fastworker-worker`` flags (ini ``fastworker_worker_args``)."""
    return [str(arg) for arg in pytestconfig.getini("fastworker_worker_args")]


@pytest.fixture(scope="session")
def fastworker_pythonpath(pytestconfig: pytest.Config) -> list[str]:
    """Folders put first on the child processes' PYTHONPATH, so that they import the same task modules."""
    root = Path(pytestconfig.rootpath).resolve()
    folders: list[str] = []
    for entry in sys.path:
        if not entry or "site-packages" in entry or "dist-packages" in entry:
            continue
        path = Path(entry).resolve()
        if path.is_dir() and path.is_relative_to(root) and str(path) not in folders:
            folders.append(str(path))
    if str(root) not in folders:
        folders.append(str(root))
    return folders


def _child_env(pythonpath: list[str]) -> dict[str, str]:
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join([*pythonpath, *([existing] if existing else [])])}


@pytest.fixture(scope="session")
def fastworker_controlplane(
    fastworker_task_modules: list[str],
    fastworker_controlplane_args: list[str],
    fastworker_pythonpath: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningControlPlane]:
    """A ``fastworker-controlplane`` process with the task modules, on free loopback ports, for the session.

    ``.discovery`` is the address clients use; ``.log()`` its output. Stopped by pid at the end.
    """
    if not fastworker_task_modules:
        pytest.fail(_NO_MODULES, pytrace=False)
    control_plane = start_controlplane(
        task_modules=fastworker_task_modules,
        extra_args=fastworker_controlplane_args,
        env=_child_env(fastworker_pythonpath),
        workdir=tmp_path_factory.mktemp("fastworker-controlplane"),
    )
    try:
        yield control_plane
    finally:
        control_plane.stop()


@pytest.fixture(scope="session")
def fastworker_worker(
    fastworker_controlplane: RunningControlPlane,
    fastworker_task_modules: list[str],
    fastworker_worker_args: list[str],
    fastworker_pythonpath: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningWorker]:
    """A ``fastworker-worker`` process with the task modules, registered with the session's control plane."""
    worker = start_worker(
        fastworker_controlplane.discovery,
        task_modules=fastworker_task_modules,
        extra_args=fastworker_worker_args,
        env=_child_env(fastworker_pythonpath),
        workdir=tmp_path_factory.mktemp("fastworker-worker"),
    )
    try:
        yield worker
    finally:
        worker.stop()


@_async_fixture
async def fastworker_client(fastworker_controlplane: RunningControlPlane) -> AsyncIterator[Client]:
    """A connected ``Client`` for the session's control plane; typed ``task.delay(...)`` uses it during the test."""
    async with Client(fastworker_controlplane.discovery) as client:
        previous = set_default_client(client)
        try:
            yield client
        finally:
            set_default_client(previous)


@pytest.fixture
def fastworker_sync_client(fastworker_controlplane: RunningControlPlane) -> Iterator[SyncClient]:
    """A connected ``SyncClient`` for the session's control plane."""
    with SyncClient(fastworker_controlplane.discovery) as client:
        yield client


@pytest.fixture
def fastworker_eager(fastworker_task_modules: list[str]) -> Iterator[EagerClient]:
    """An ``EagerClient`` (tasks run in-process at submission, no sockets), the default client during the test.

    The default of typed calls from async code and from sync code (``add.delay_sync(...)``, through
    ``client.sync``) alike. It runs the configured task modules' tasks, or every task imported in
    the process when none are configured.
    """
    client = EagerClient(task_modules=fastworker_task_modules) if fastworker_task_modules else EagerClient()
    previous = set_default_client(client)
    previous_sync = set_default_sync_client(client.sync)
    try:
        yield client
    finally:
        set_default_client(previous)
        set_default_sync_client(previous_sync)
