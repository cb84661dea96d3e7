"""Typed calls from sync code (issue 19): ``delay``/``submit`` never lose a submission silently, ``delay_sync``/``submit_sync`` submit.

No control plane: in-memory backends record what is sent (tests/integration/test_sync_typed_calls.py
runs the same against a real one).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from fastworker.client import (
    CallContextError,
    CancelResult,
    Client,
    ClientError,
    Priority,
    SyncClient,
    SyncTaskHandle,
    TaskHandle,
    TaskInfo,
    TaskRegistry,
    TaskState,
    current_sync_client,
    set_default_client,
    set_default_sync_client,
    use_client,
    use_sync_client,
)
from fastworker.client import _sync as sync_module
from fastworker.client import handles as handles_module
from fastworker.client.task import SyncTaskFunction, TaskOptions


def _add(x: int, y: int) -> int:
    return x + y


ADD = TaskRegistry().register(SyncTaskFunction(_add, "tests.sync_add", TaskOptions()))


class FakeSyncBackend:
    """A blocking backend that records what sync typed calls send; every task succeeds at once."""

    def __init__(self, label: str = "sync") -> None:
        self.label = label
        self.sent: list[tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any]]] = []
        self.values: dict[str, Any] = {}
        self.cancelled: list[str] = []

    def send(self, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> str:
        task_id = f"{self.label}-{len(self.sent)}"
        self.sent.append((name, tuple(args), dict(kwargs or {}), options))
        self.values[task_id] = _add(*args, **(kwargs or {}))
        return task_id

    def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        return self.values[self.send(name, args, kwargs, **options, timeout=timeout)]

    def status(self, task_id: str) -> TaskInfo:
        return TaskInfo(task_id, "tests.sync_add", TaskState.SUCCESS, Priority.NORMAL, 1, "w", 1.0, 2.0, 3.0)

    def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        return self.values[task_id]

    def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        return self.status(task_id)

    def cancel(self, task_id: str) -> CancelResult:
        self.cancelled.append(task_id)
        return CancelResult(cancelled=False, previous_state=TaskState.SUCCESS)


class FakeAsyncBackend:
    """An async backend that records sends (a stand-in for Client or EagerClient)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    async def send(
        self, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> str:
        self.sent.append((name, tuple(args)))
        return f"async-{len(self.sent) - 1}"

    async def send_and_wait(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        await self.send(name, args, kwargs)
        return _add(*args, **(kwargs or {}))

    async def status(self, task_id: str) -> TaskInfo:
        raise NotImplementedError

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        raise NotImplementedError

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        raise NotImplementedError

    async def cancel(self, task_id: str) -> CancelResult:
        raise NotImplementedError


@pytest.fixture(autouse=True)
def no_clients() -> Iterator[None]:
    """No default client of either kind, and no environment SyncClient, before and after each test."""
    previous, previous_sync = set_default_client(None), set_default_sync_client(None)
    handles_module._close_environment_sync_client()
    yield
    handles_module._close_environment_sync_client()
    set_default_client(previous)
    set_default_sync_client(previous_sync)


@pytest.fixture
def no_environment_client(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fail the test if anything makes the environment's SyncClient; returns the attempts (none expected)."""
    made: list[object] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        made.append(args)
        raise AssertionError("the environment's SyncClient was made")

    monkeypatch.setattr(sync_module, "SyncClient", refuse)
    return made


# ------------------------------------------------------- awaitable calls from sync code raise at once


def _call_and_collect(call: Any) -> tuple[BaseException | None, list[warnings.WarningMessage]]:
    """Run call() with every warning recorded, collecting garbage after, so "never awaited" would show."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        error: BaseException | None = None
        try:
            call()
        except BaseException as exc:  # returned to the test, which checks it
            error = exc
        gc.collect()
    return error, list(caught)


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: ADD.delay(1, 2), "_add.delay_sync(...)"),
        (lambda: ADD.submit(1, y=2), "_add.submit_sync(...)"),
        (lambda: ADD.with_options(priority="high", countdown=5).delay(1, 2), "_add.with_options(...).delay_sync(...)"),
        (lambda: ADD.with_options(timeout=5).submit(1, 2), "_add.with_options(...).submit_sync(...)"),
    ],
    ids=["delay", "submit", "bound-delay", "bound-submit"],
)
def test_an_awaitable_call_from_sync_code_raises_at_once_naming_the_sync_call_and_submits_nothing(
    call: Any, named: str
) -> None:
    backend = FakeAsyncBackend()
    set_default_client(backend)  # a client is there: only the missing event loop stops the call
    error, caught = _call_and_collect(call)
    assert isinstance(error, CallContextError), error
    assert isinstance(error, ClientError) and isinstance(error, RuntimeError)
    message = str(error)
    assert named in message and "nothing was submitted" in message and "await" in message
    assert backend.sent == []
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == [], [str(w.message) for w in caught]


def test_the_message_names_the_function_as_the_caller_wrote_it() -> None:
    def member_signup(user_id: int) -> None: ...

    signup = SyncTaskFunction(member_signup, "accounts.member_signup", TaskOptions())
    with pytest.raises(CallContextError) as raised:
        signup.delay(7)  # type: ignore[unused-coroutine]
    assert "member_signup.delay_sync(...)" in str(raised.value)


def test_a_sync_view_calling_delay_fails_loudly_instead_of_returning_success() -> None:
    """The issue's case: a ``def`` handler that used to return 200 while nothing was queued."""
    backend = FakeAsyncBackend()
    set_default_client(backend)

    def signup_view(user_id: int) -> int:
        ADD.delay(user_id, 1)  # type: ignore[unused-coroutine]  # the bug being guarded against
        return 200

    with pytest.raises(CallContextError, match=r"delay_sync"):
        signup_view(7)
    assert backend.sent == []


def test_in_a_thread_without_a_loop_the_call_raises_even_while_another_thread_runs_one() -> None:
    errors: list[BaseException] = []

    async def main() -> None:
        def in_thread() -> None:
            try:
                ADD.delay(1, 2)  # type: ignore[unused-coroutine]
            except BaseException as exc:  # checked below
                errors.append(exc)

        await asyncio.to_thread(in_thread)

    asyncio.run(main())
    assert len(errors) == 1 and isinstance(errors[0], CallContextError)


async def test_in_async_code_delay_and_submit_are_awaited_as_before_also_in_gather_and_comprehensions() -> None:
    backend = FakeAsyncBackend()
    with use_client(backend):
        handle = await ADD.delay(1, 2)
        assert isinstance(handle, TaskHandle) and handle.id == "async-0"
        assert await ADD.submit(2, 3) == 5
        gathered = await asyncio.gather(ADD.delay(1, 1), ADD.with_options(priority="low").delay(2, 2))
        assert [h.id for h in gathered] == ["async-2", "async-3"]
        listed = [await ADD.delay(i, i) for i in range(2)]
        assert [h.id for h in listed] == ["async-4", "async-5"]
        task = asyncio.create_task(ADD.submit(4, 4))
        assert await task == 8


async def test_the_current_client_is_resolved_when_the_coroutine_runs_as_before() -> None:
    backend = FakeAsyncBackend()
    pending = ADD.delay(1, 2)
    with use_client(backend):
        handle = await pending
    assert handle.client is backend


async def test_an_async_call_with_a_blocking_client_given_is_a_type_error_at_once() -> None:
    sync_backend = FakeSyncBackend()
    bound = ADD.with_options(client=sync_backend)
    with pytest.raises(TypeError, match=r"delay_sync\(\.\.\.\) with it"):
        bound.delay(1, 2)  # type: ignore[unused-coroutine]
    with pytest.raises(TypeError, match=r"submit_sync"):
        bound.submit(1, 2)  # type: ignore[unused-coroutine]
    assert sync_backend.sent == []


def test_without_asyncio_imported_the_check_imports_no_asyncio() -> None:
    code = textwrap.dedent(
        """
        import sys, warnings
        warnings.simplefilter("error")
        from fastworker.client import CallContextError, task

        @task
        def add(x: int, y: int) -> int:
            return x + y

        try:
            add.delay(1, 2)
        except CallContextError as exc:
            print("raised", "asyncio" in sys.modules, "fastworker.client._sync" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["raised", "False", "False"] and done.stderr == ""


def test_in_sync_code_with_a_sync_client_current_the_awaitable_calls_submit_through_it(
    no_environment_client: list[object],
) -> None:
    """SPEC: typed calls from sync code submit through the innermost ``with SyncClient()`` or the default one."""
    backend = FakeSyncBackend()
    with use_sync_client(backend):
        handle = ADD.delay(1, y=2)
        assert ADD.submit(2, 3) == 5
        assert ADD.with_options(priority="high").delay(1, 1).id == "sync-2"
    assert isinstance(handle, SyncTaskHandle)
    assert (handle.id, handle.result(timeout=1)) == ("sync-0", 3)
    assert backend.sent[2][3]["priority"] == "high"

    default = FakeSyncBackend("default")
    set_default_sync_client(default)
    assert ADD.delay(4, 4).id == "default-0"  # type: ignore[attr-defined]
    given = FakeSyncBackend("given")
    set_default_sync_client(None)
    assert ADD.with_options(client=given).submit(1, 2) == 3
    assert [sent[1] for sent in given.sent] == [(1, 2)]
    with pytest.raises(CallContextError, match=r"_add\.delay_sync\(\.\.\.\)"):
        ADD.delay(1, 2)  # type: ignore[unused-coroutine]  # none current again: refused, as before
    assert no_environment_client == []


class WorkflowSyncBackend(FakeSyncBackend):
    """A sync backend that also takes workflows (as SyncClient.delay_workflow does), recording them."""

    def __init__(self) -> None:
        super().__init__("wf")
        self.workflows: list[object] = []

    def delay_workflow(self, workflow: object) -> str:
        self.workflows.append(workflow)
        return "blocking-handle"


def test_in_sync_code_a_workflow_delay_submits_through_the_current_sync_client() -> None:
    from fastworker.client import chain

    backend = WorkflowSyncBackend()
    flow = chain(ADD.s(1, 2), ADD.s(3))
    with pytest.raises(CallContextError, match="no SyncClient current"):
        flow.delay()  # type: ignore[unused-coroutine]
    with use_sync_client(backend):
        assert flow.delay() == "blocking-handle"  # type: ignore[comparison-overlap]
    assert backend.workflows == [flow]


def test_a_workflow_delay_sync_submits_through_the_current_sync_client_and_refuses_on_a_loop() -> None:
    from fastworker.client import chain, group

    backend = WorkflowSyncBackend()
    flow, fan = chain(ADD.s(1, 2), ADD.s(3)), group(ADD.s(1, 1), ADD.s(2, 2))
    set_default_sync_client(backend)  # as a daemon's home, or a process default, is found
    try:
        assert flow.delay_sync() == "blocking-handle"  # type: ignore[comparison-overlap]
        assert fan.delay_sync() == "blocking-handle"  # type: ignore[comparison-overlap]
        assert ADD.s(5, 5).delay_sync() == "blocking-handle"  # type: ignore[comparison-overlap]

        async def on_a_loop() -> None:
            with pytest.raises(CallContextError, match=r"await chain\(\.\.\.\)\.delay\(\)"):
                flow.delay_sync()

        asyncio.run(on_a_loop())
    finally:
        set_default_sync_client(None)
    assert backend.workflows == [flow, fan, ADD.s(5, 5)]
    with pytest.raises(CallContextError, match=r"call chain\(\.\.\.\)\.delay_sync\(\)"):
        flow.delay()  # type: ignore[unused-coroutine]  # the advice names the sync spelling


# ---------------------------------------------------------------------------- the sync twin submits


def test_delay_sync_submits_through_the_current_sync_client_and_returns_a_blocking_handle(
    no_environment_client: list[object],
) -> None:
    backend = FakeSyncBackend()
    with use_sync_client(backend):
        handle = ADD.delay_sync(1, y=2)
    assert isinstance(handle, SyncTaskHandle)
    assert (handle.id, handle.name, str(handle), handle.client) == ("sync-0", "tests.sync_add", "sync-0", backend)
    assert backend.sent == [("tests.sync_add", (1,), {"y": 2}, {key: None for key in backend.sent[0][3]})]
    # The handle keeps its client outside the block.
    assert handle.result(timeout=1) == 3
    assert handle.status().state is TaskState.SUCCESS
    assert handle.wait(timeout=1).id == "sync-0"
    assert handle.cancel().cancelled is False and backend.cancelled == ["sync-0"]
    assert no_environment_client == []


def test_submit_sync_returns_the_value_and_with_options_carries_options_and_timeout() -> None:
    backend = FakeSyncBackend()
    with use_sync_client(backend):
        assert ADD.submit_sync(2, 3) == 5
        assert ADD.with_options(priority="high", timeout=7).submit_sync(1, 1) == 2
        ADD.with_options(countdown=5, task_id="mine").delay_sync(0, 0)
    assert backend.sent[0][3]["timeout"] is None
    assert backend.sent[1][3]["priority"] == "high" and backend.sent[1][3]["timeout"] == 7
    assert backend.sent[2][3]["countdown"] == 5 and backend.sent[2][3]["task_id"] == "mine"


def test_an_explicit_sync_client_beats_the_current_one_which_beats_the_default(
    no_environment_client: list[object],
) -> None:
    default, current, explicit = FakeSyncBackend("default"), FakeSyncBackend("current"), FakeSyncBackend("explicit")
    assert set_default_sync_client(default) is None
    assert ADD.delay_sync(1, 1).id == "default-0"
    with use_sync_client(current):
        assert ADD.delay_sync(1, 1).id == "current-0"
        assert ADD.with_options(client=explicit).delay_sync(1, 1).id == "explicit-0"
        assert current_sync_client() is current
    assert current_sync_client() is default
    assert set_default_sync_client(None) is default


def test_the_async_current_client_does_not_serve_sync_calls() -> None:
    async_backend, sync_backend = FakeAsyncBackend(), FakeSyncBackend()
    set_default_client(async_backend)
    with use_client(async_backend), use_sync_client(sync_backend):
        ADD.delay_sync(1, 2)
    assert async_backend.sent == [] and len(sync_backend.sent) == 1


def test_a_sync_call_with_an_async_client_given_is_a_type_error_at_once() -> None:
    async_backend = FakeAsyncBackend()
    with pytest.raises(TypeError, match=r"`await _add.with_options\(\.\.\.\).delay\(\.\.\.\)` with it"):
        ADD.with_options(client=async_backend).delay_sync(1, 2)
    assert async_backend.sent == []


async def test_delay_sync_on_an_event_loop_thread_raises_at_once_naming_await_delay(
    no_environment_client: list[object],
) -> None:
    backend = FakeSyncBackend()
    with use_sync_client(backend):
        with pytest.raises(CallContextError, match=r"`await _add\.delay\(\.\.\.\)`") as raised:
            ADD.delay_sync(1, 2)
        assert "nothing was submitted" in str(raised.value)
        with pytest.raises(CallContextError, match=r"`await _add\.with_options\(\.\.\.\)\.submit\(\.\.\.\)`"):
            ADD.with_options(priority="high").submit_sync(1, 2)
        # The same sync code is fine in a thread of its own.
        assert await asyncio.to_thread(ADD.submit_sync, 2, 2) == 4
    assert len(backend.sent) == 1 and no_environment_client == []


async def test_the_real_clients_are_told_apart_by_kind() -> None:
    sync_client, async_client = SyncClient("tcp://127.0.0.1:1"), Client("tcp://127.0.0.1:1")
    try:
        with pytest.raises(TypeError, match=r"blocking SyncClient"):
            ADD.with_options(client=sync_client).delay(1, 2)  # type: ignore[unused-coroutine]
        with pytest.raises(TypeError, match=r"async Client"):
            await asyncio.to_thread(ADD.with_options(client=async_client).delay_sync, 1, 2)
    finally:
        sync_client.close()


def test_handle_sync_makes_a_typed_blocking_handle_for_a_known_id() -> None:
    backend = FakeSyncBackend()
    task_id = backend.send("tests.sync_add", (2, 2))
    handle = ADD.handle_sync(task_id)
    assert handle == SyncTaskHandle(task_id, "tests.sync_add")  # the client takes no part in equality
    with use_sync_client(backend):
        assert handle.result() == 4  # resolved at each call
    assert ADD.handle_sync(task_id, client=backend).result() == 4
    with pytest.raises(AttributeError):
        handle.id = "other"  # type: ignore[misc]


def test_with_sync_client_makes_it_current_until_the_block_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connected(self: Client) -> None:
        return None

    monkeypatch.setattr(Client, "connect", connected)
    default = FakeSyncBackend("default")
    set_default_sync_client(default)
    with SyncClient("tcp://127.0.0.1:1") as outer:
        assert current_sync_client() is outer
        with SyncClient("tcp://127.0.0.1:2") as inner:
            assert current_sync_client() is inner
        assert current_sync_client() is outer
    assert current_sync_client() is default
    assert outer.closed and inner.closed


# --------------------------------------------------------------- the SyncClient made from the environment


def test_without_any_sync_client_one_is_made_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_CONTROL_PLANE", "tcp://127.0.0.1:1")
    client = current_sync_client()
    assert isinstance(client, SyncClient) and client.address == "tcp://127.0.0.1:1"
    assert current_sync_client() is client
    handles_module._close_environment_sync_client()
    assert client.closed
    again = current_sync_client()  # the next call makes a new one
    assert again is not client and isinstance(again, SyncClient) and not again.closed


def test_the_environment_client_is_made_once_when_many_threads_ask_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    class SlowClient(FakeSyncBackend):
        closed = False

        def __init__(self) -> None:
            time.sleep(0.05)  # widen the race
            super().__init__("env")
            made.append(self)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(sync_module, "SyncClient", SlowClient)
    start = threading.Barrier(8)
    seen: list[object] = []

    def ask() -> None:
        start.wait()
        seen.append(current_sync_client())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and seen == made * 8
    assert ADD.delay_sync(1, 2).client is made[0]


def test_a_bad_environment_raises_and_is_tried_again_on_the_next_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_SECRET_FILE", "/no/such/secret/file")
    with pytest.raises(ValueError, match="/no/such/secret/file"):
        ADD.delay_sync(1, 2)
    assert handles_module._from_env.current is None
    monkeypatch.delenv("FASTWORKER_SECRET_FILE")
    monkeypatch.setenv("FASTWORKER_CONTROL_PLANE", "tcp://127.0.0.1:1")
    assert isinstance(current_sync_client(), SyncClient)


def _run_script(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FASTWORKER_CONTROL_PLANE": "tcp://127.0.0.1:1"}
    env.pop("FASTWORKER_SECRET_FILE", None)
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_the_environment_client_is_closed_at_interpreter_exit() -> None:
    done = _run_script(
        """
        import json, threading
        from fastworker.client import SyncClient, current_sync_client
        original = SyncClient.close
        def close(self):
            original(self)
            print(json.dumps({"closed": self.closed, "threads": [t.name for t in threading.enumerate()]}))
        SyncClient.close = close
        client = current_sync_client()
        assert isinstance(client, SyncClient) and client.address == "tcp://127.0.0.1:1"
        """
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["closed"] is True and "fastworker-sync-client" not in report["threads"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_its_own_environment_client() -> None:
    done = _run_script(
        """
        import os, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with the client's thread running
        from fastworker.client import SyncClient, current_sync_client
        parent = current_sync_client()
        pid = os.fork()
        if pid == 0:
            child = current_sync_client()
            os._exit(0 if isinstance(child, SyncClient) and child is not parent else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status), "parent kept", current_sync_client() is parent)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["child", "0", "parent", "kept", "True"]


def test_set_default_client_given_a_sync_client_makes_it_the_default_of_sync_calls() -> None:
    from fastworker.client import SyncClient, set_default_client
    from fastworker.client.handles import current_sync_client, set_default_sync_client

    client = SyncClient("tcp://127.0.0.1:9")  # never connected: nothing is sent
    previous = set_default_sync_client(None)
    try:
        assert set_default_client(client) is None
        assert current_sync_client() is client
    finally:
        set_default_sync_client(previous)
        client.close()
