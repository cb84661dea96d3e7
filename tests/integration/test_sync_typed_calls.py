"""Typed calls from sync code against a real control plane (issue 19, item 1).

A plain ``def`` (a Django or Flask view) calling ``task.delay_sync(...)`` submits through the
SyncClient made from the environment (``FASTWORKER_CONTROL_PLANE``, the secret variables) and the
task runs; ``task.delay(...)`` from the same function raises at once and the control plane sees
no submission, where it used to return a coroutine nobody awaited (a lost submission, logged only
as "coroutine ... was never awaited").
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import (
    CallContextError,
    Client,
    SyncClient,
    SyncTaskHandle,
    set_default_client,
    set_default_sync_client,
    task,
)
from fastworker.client import handles as handles_module
from fastworker.controlplane.testing import RunningControlPlane


# The signatures of tasks in fwtests_tasks (which the control plane imports and runs), declared
# here as a client that only submits would import them; the bodies never run in this process.
@task(name="fwtests.record")
def record(tag: str) -> str:
    raise NotImplementedError


@task(name="fwtests.add")
def add(x: int, y: int) -> int:
    raise NotImplementedError


@task(name="fwtests.execution_counts")
def execution_counts(prefix: str = "") -> dict[str, int]:
    raise NotImplementedError


def _fresh_sync_clients() -> None:
    handles_module._close_environment_sync_client()
    set_default_sync_client(None)
    set_default_client(None)


@pytest.fixture
def environment(shared_cp: RunningControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningControlPlane]:
    """The control plane named by FASTWORKER_CONTROL_PLANE only, as a deployed app's settings would."""
    for key in [key for key in os.environ if key.startswith("FASTWORKER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FASTWORKER_CONTROL_PLANE", shared_cp.discovery)
    _fresh_sync_clients()
    yield shared_cp
    _fresh_sync_clients()


def _submitted(control_plane: RunningControlPlane) -> int:
    with SyncClient(control_plane.discovery) as admin:
        return int(admin.stats().get("submitted", 0))


def test_a_plain_def_view_submits_with_delay_sync_and_the_task_runs(environment: RunningControlPlane) -> None:
    tag = f"signup:{uuid.uuid4()}"

    def signup_view(tag: str) -> dict[str, Any]:  # a sync handler: no event loop in this thread
        handle = record.delay_sync(tag)
        return {"status": 202, "task_id": handle.id}

    response = signup_view(tag)
    handle = record.handle_sync(response["task_id"])  # a later request, holding only the id
    assert handle.result(timeout=20) == tag
    assert handle.status().state == "SUCCESS"
    assert execution_counts.submit_sync(tag) == {tag: 1}  # ran exactly once
    assert add.submit_sync(2, 3) == 5
    assert add.with_options(priority="high", timeout=20).submit_sync(40, 2) == 42

    made = handles_module._from_env.current  # made lazily, from the environment
    assert isinstance(made, SyncClient) and made.address == environment.discovery
    typed: SyncTaskHandle[int] = add.delay_sync(1, 1)
    assert typed.client is made and typed.wait(timeout=20).result == 2


def test_inside_with_sync_client_the_awaitable_calls_submit_through_it(environment: RunningControlPlane) -> None:
    tag = f"with-block:{uuid.uuid4()}"
    with SyncClient(environment.discovery) as client:
        handle = record.delay(tag)  # sync code, a SyncClient current: submitted through it
        assert add.submit(20, 22) == 42
    assert handles_module._from_env.current is None  # the block's client served the calls
    assert isinstance(handle, SyncTaskHandle) and handle.client is client
    assert execution_counts.submit_sync(tag) == {tag: 1}  # ran exactly once


def test_delay_from_a_plain_def_view_raises_at_once_and_nothing_is_submitted(
    environment: RunningControlPlane,
) -> None:
    tag = f"lost:{uuid.uuid4()}"
    set_default_client(Client(environment.discovery))  # even with an async default client configured

    def signup_view(tag: str) -> int:
        record.delay(tag)  # type: ignore[unused-coroutine]  # the bug: used to return a coroutine, silently
        return 200

    before = _submitted(environment)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CallContextError, match=r"record\.delay_sync\(\.\.\.\)") as raised:
            signup_view(tag)
        with pytest.raises(CallContextError, match=r"add\.submit_sync\(\.\.\.\)"):
            add.submit(1, 2)  # type: ignore[unused-coroutine]
        gc.collect()
    assert "nothing was submitted" in str(raised.value)
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert _submitted(environment) == before  # the control plane saw no submission
    assert execution_counts.submit_sync(tag) == {}


async def test_from_async_code_delay_sync_raises_and_sync_code_in_a_thread_submits(
    environment: RunningControlPlane,
) -> None:
    with pytest.raises(CallContextError, match=r"`await add\.delay\(\.\.\.\)`"):
        add.delay_sync(1, 2)
    assert handles_module._from_env.current is None  # refused before any client was made

    def view() -> int:
        return add.submit_sync(20, 22)

    assert await asyncio.to_thread(view) == 42  # sync code in a worker thread, as ASGI servers run it
    async with Client(environment.discovery):
        assert await (await add.delay(1, 2)).result(timeout=20) == 3  # and the async way, unchanged


def test_the_environment_secret_is_used(start_cp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("sync-typed-s3cret\n")
    control_plane = start_cp("--secret-file", str(secret))
    for key in [key for key in os.environ if key.startswith("FASTWORKER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FASTWORKER_CONTROL_PLANE", control_plane.discovery)
    monkeypatch.setenv("FASTWORKER_SECRET_FILE", str(secret))
    _fresh_sync_clients()
    try:
        assert add.submit_sync(3, 4) == 7
    finally:
        _fresh_sync_clients()


def test_a_connected_client_used_on_a_second_event_loop_raises_call_context_error_for_every_call(
    shared_cp: RunningControlPlane,
) -> None:
    # Given a client connected on one asyncio.run (its connection belongs to that loop)
    client = Client(shared_cp.discovery)

    async def first() -> Any:
        return await client.submit("fwtests.add", 20, 1, timeout=10)

    assert asyncio.run(first()) == 21

    # When a second asyncio.run uses it, every call says why, typed, and submits nothing
    before = _submitted(shared_cp)
    calls = {
        "submit": lambda: client.submit("fwtests.add", 20, 2, timeout=10),
        "delay": lambda: client.delay("fwtests.add", 20, 3),
        "delay_many": lambda: client.delay_many([("fwtests.add", (20, 4))]),
        "status": lambda: client.status("x"),
        "result": lambda: client.result("x", timeout=1),
        "cancel": lambda: client.cancel("x"),
        "stats": lambda: client.stats(),
        "workers": lambda: client.workers(),
        "on_complete": lambda: client.on_complete("x", print),  # (it returned a task that logged the error)
    }
    for name, call in calls.items():

        async def second(call: Any = call) -> Any:
            return await call()  # on_complete raises on the call itself

        with pytest.raises(CallContextError, match="first used on another event loop"):
            asyncio.run(second())
            pytest.fail(f"{name} on a second event loop raised nothing")
    assert _submitted(shared_cp) == before
    asyncio.run(client.aclose())
