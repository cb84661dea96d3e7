"""Typed task handles and the current client, against an in-memory backend (no control plane)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from fastworker.client import (
    CancelResult,
    Client,
    ClientError,
    Priority,
    TaskHandle,
    TaskInfo,
    TaskRegistry,
    TaskState,
    current_client,
    set_default_client,
    use_client,
)
from fastworker.client import handles as handles_module
from fastworker.client import home as home_module
from fastworker.client.options import SUBMIT_OPTION_NAMES
from fastworker.client.task import SyncTaskFunction, TaskOptions


def _add(x: int, y: int) -> int:
    return x + y


ADD = TaskRegistry().register(SyncTaskFunction(_add, "tests.add", TaskOptions()))


class FakeBackend:
    """Records what typed calls send and answers like a control plane whose tasks all succeed."""

    def __init__(self, label: str = "fake") -> None:
        self.label = label
        self.sent: list[tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any]]] = []
        self.values: dict[str, Any] = {}

    async def send(
        self, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> str:
        task_id = f"{self.label}-{len(self.sent)}"
        self.sent.append((name, tuple(args), dict(kwargs or {}), options))
        self.values[task_id] = ADD.fn(*args, **(kwargs or {}))
        return task_id

    async def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        task_id = await self.send(name, args, kwargs, **options, timeout=timeout)
        return self.values[task_id]

    async def status(self, task_id: str) -> TaskInfo:
        return TaskInfo(task_id, "tests.add", TaskState.SUCCESS, Priority.NORMAL, 1, "w", 1.0, 2.0, 3.0)

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        return self.values[task_id]

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        return await self.status(task_id)

    async def cancel(self, task_id: str) -> CancelResult:
        return CancelResult(cancelled=False, previous_state=TaskState.SUCCESS)


@pytest.fixture(autouse=True)
def no_default_client() -> Any:
    previous = set_default_client(None)
    yield
    set_default_client(previous)


def test_without_a_client_typed_calls_say_how_to_get_one() -> None:
    with pytest.raises(ClientError, match=r"no client: .*async with Client\(\.\.\.\).*set_default_client"):
        current_client()


def test_with_only_a_default_sync_client_async_calls_are_told_that_it_is_for_sync_calls() -> None:
    previous = handles_module.set_default_sync_client(object())  # type: ignore[arg-type]
    try:
        with pytest.raises(ClientError, match=r"the default client is a SyncClient, for sync calls.*needs a Client"):
            current_client()
    finally:
        handles_module.set_default_sync_client(previous)


async def test_typed_delay_goes_through_the_current_client_and_returns_a_handle() -> None:
    backend = FakeBackend()
    with use_client(backend):
        handle = await ADD.delay(1, y=2)
    assert isinstance(handle, TaskHandle)
    assert handle.id == "fake-0" and handle.name == "tests.add" and str(handle) == "fake-0"
    assert backend.sent == [
        (
            "tests.add",
            (1,),
            {"y": 2},
            dict.fromkeys(SUBMIT_OPTION_NAMES),
        )
    ]
    # The handle keeps the client it was submitted through, also outside the with block.
    assert await handle.result() == 3
    assert (await handle.status()).state is TaskState.SUCCESS
    assert (await handle.wait(timeout=1)).id == "fake-0"
    assert (await handle.cancel()).cancelled is False


async def test_with_options_carries_submission_options_and_a_submit_timeout() -> None:
    backend = FakeBackend()
    with use_client(backend):
        await ADD.with_options(priority="high", countdown=5, task_id="mine").delay(1, 2)
        value = await ADD.with_options(priority=Priority.LOW).with_options(timeout=7).submit(2, 3)
    assert value == 5
    assert backend.sent[0][3] == dict.fromkeys(SUBMIT_OPTION_NAMES) | {
        "priority": "high",
        "countdown": 5,
        "task_id": "mine",
    }
    assert backend.sent[1][3]["priority"] is Priority.LOW and backend.sent[1][3]["timeout"] == 7


async def test_an_explicit_client_beats_the_current_one_which_beats_the_default() -> None:
    default, current, explicit = FakeBackend("default"), FakeBackend("current"), FakeBackend("explicit")
    set_default_client(default)
    assert (await ADD.delay(1, 1)).id == "default-0"
    with use_client(current):
        assert (await ADD.delay(1, 1)).id == "current-0"
        assert (await ADD.with_options(client=explicit).delay(1, 1)).id == "explicit-0"
        with use_client(explicit):
            assert current_client() is explicit
        assert current_client() is current
    assert current_client() is default


async def test_set_default_client_returns_the_previous_one() -> None:
    first, second = FakeBackend(), FakeBackend()
    assert set_default_client(first) is None
    assert set_default_client(second) is first
    assert set_default_client(None) is second


async def test_the_current_client_is_per_asyncio_task() -> None:
    seen: dict[str, str] = {}

    async def submit_with(label: str) -> None:
        with use_client(FakeBackend(label)):
            await asyncio.sleep(0)  # let the other task run inside its own block
            seen[label] = (await ADD.delay(1, 2)).id

    await asyncio.gather(submit_with("a"), submit_with("b"))
    assert seen == {"a": "a-0", "b": "b-0"}


async def test_a_handle_for_a_known_id_resolves_the_client_at_each_call() -> None:
    backend = FakeBackend()
    task_id = await backend.send("tests.add", (2, 2))
    handle = ADD.handle(task_id)
    assert handle == TaskHandle(task_id, "tests.add")  # the client takes no part in equality
    with pytest.raises(ClientError, match="no client"):
        await handle.result()
    with use_client(backend):
        assert await handle.result() == 4


async def test_async_with_client_makes_it_current_until_the_block_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connected(self: Client) -> None:
        return None

    monkeypatch.setattr(Client, "connect", connected)
    async with Client("tcp://127.0.0.1:1") as outer:
        assert current_client() is outer
        async with Client("tcp://127.0.0.1:2") as inner:
            assert current_client() is inner
        assert current_client() is outer
    with pytest.raises(ClientError):
        current_client()


def test_handles_are_frozen() -> None:
    handle: TaskHandle[int] = TaskHandle("id", "name")
    with pytest.raises(AttributeError):
        handle.id = "other"  # type: ignore[misc]
    assert handles_module.TaskHandle is TaskHandle


def test_calling_a_task_function_still_runs_it_directly() -> None:
    assert ADD(2, 5) == 7


async def test_inside_a_daemon_the_home_control_planes_client_comes_after_the_current_and_default_ones() -> None:
    home_module.set_home(home_module.Home("tcp://127.0.0.1:7", secret="s3"))
    try:
        home_client = current_client()
        assert isinstance(home_client, Client)
        assert (home_client.address, home_client.secret) == ("tcp://127.0.0.1:7", "s3")
        assert current_client() is home_client  # one per event loop, made once
        default, current = FakeBackend("default"), FakeBackend("current")
        set_default_client(default)
        assert current_client() is default
        with use_client(current):
            assert current_client() is current
        set_default_client(None)
        await home_module.close_home_clients()
        assert current_client() is not home_client  # closed with the daemon, made afresh if asked again
        await home_module.close_home_clients()
    finally:
        home_module.set_home(None)
    with pytest.raises(ClientError):
        current_client()


def test_inside_a_daemon_sync_calls_default_to_the_home_control_plane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_CONTROL_PLANE", "tcp://127.0.0.1:8")
    home_module.set_home(home_module.Home("tcp://127.0.0.1:7"))
    try:
        sync_client = handles_module.current_sync_client()
        assert sync_client.address == "tcp://127.0.0.1:7"  # type: ignore[attr-defined]  # not the environment's
    finally:
        home_module.set_home(None)
    assert handles_module.current_sync_client().address == "tcp://127.0.0.1:8"  # type: ignore[attr-defined]
    handles_module._close_environment_sync_client()


def _takes_countdown(x: int, countdown: int) -> int:
    return x + countdown


KW = TaskRegistry().register(SyncTaskFunction(_takes_countdown, "tests.kw", TaskOptions()))


async def test_an_option_given_as_an_argument_of_a_typed_call_is_refused_unless_the_task_takes_it() -> None:
    backend = FakeBackend()
    with use_client(backend):
        # Celery's apply_async words on delay: the task would get them, fail with TypeError, the option lost.
        with pytest.raises(
            TypeError, match=r"_add\(\) got countdown=\.\.\., which .*_add does not take: .*with_options"
        ):
            await ADD.delay(1, 2, countdown=5)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"got priority=\.\.\., timeout=\.\.\."):
            await ADD.submit(1, 2, timeout=3, priority="high")  # type: ignore[call-arg]
        assert backend.sent == []  # nothing was submitted

    # A task whose own parameter has the name gets it as its argument
    sent: list[Mapping[str, Any] | None] = []

    class Recorder(FakeBackend):
        async def send(self, name: str, args: Sequence[Any] = (), kwargs: Any = None, **options: Any) -> str:
            sent.append(kwargs)
            return "kw-1"

    assert (await KW.with_options(client=Recorder()).delay(1, countdown=5)).id == "kw-1"
    assert sent == [{"countdown": 5}]
