"""EagerClient: tasks run in-process at submission, read back through the client's API and typed handles."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from fastworker.client import (
    FastworkerError,
    InvalidOptions,
    InvalidRequest,
    PayloadError,
    Retry,
    SyncWorkflowHandle,
    TaskFailed,
    TaskNotFound,
    TaskRegistry,
    TaskState,
    UnknownTask,
    chain,
    chord,
    current_client,
    group,
    set_default_client,
    set_default_sync_client,
    signature,
)
from fastworker.client.models import Priority
from fastworker.client.task import AsyncTaskFunction, SyncTaskFunction, TaskFunction, TaskOptions
from fastworker.controlplane.eager import EagerClient


class Tasks:
    """A registry of small tasks for one test, outside default_registry."""

    def __init__(self) -> None:
        self.registry = TaskRegistry()

    def add(self, fn: Any, name: str | None = None, **options: Any) -> TaskFunction[Any, Any]:
        if "priority" in options:
            options["priority"] = Priority.parse(options["priority"])
        cls = AsyncTaskFunction if asyncio.iscoroutinefunction(fn) else SyncTaskFunction
        return self.registry.register(cls(fn, name or fn.__name__, TaskOptions(**options)))


@pytest.fixture
def tasks() -> Tasks:
    return Tasks()


@pytest.fixture(autouse=True)
def no_default_client() -> Any:
    previous = set_default_client(None)
    yield
    set_default_client(previous)


async def test_tasks_run_at_submission_and_read_back_like_a_real_client(tasks: Tasks) -> None:
    def add(x: int, y: int) -> int:
        return x + y

    async def greet(name: str, *, punctuation: str = "!") -> str:
        await asyncio.sleep(0)
        return f"hello {name}{punctuation}"

    tasks.add(add)
    tasks.add(greet, priority="high")
    client = EagerClient(tasks.registry)
    task_id = await client.delay("add", 1, 2)
    info = await client.status(task_id)
    assert info.state is TaskState.SUCCESS and info.result == 3 and info.attempts == 1
    assert info.worker == "eager" and info.priority is Priority.NORMAL
    assert await client.result(task_id) == 3
    assert await client.submit("greet", "ada", punctuation="?") == "hello ada?"
    assert await client.send("add", (2, 2), {}, priority="low", task_id="mine") == "mine"
    assert (await client.status("mine")).priority is Priority.LOW
    ids = await client.delay_many([("add", (1, 1)), ("add", (2, 2), {})])
    assert await client.results(ids) == [2, 4]
    assert [i.name for i in client.history] == ["add", "greet", "add", "add", "add"]
    assert client.history[1].priority is Priority.HIGH  # the task's default


async def test_watch_and_on_complete_see_the_final_state_at_once(tasks: Tasks) -> None:
    tasks.add(lambda x, y: x + y, name="add")
    client = EagerClient(tasks.registry)
    task_id = await client.delay("add", 1, 2)

    assert [info.state async for info in client.watch(task_id)] == [TaskState.SUCCESS]
    seen: list[Any] = []
    await client.on_complete(task_id, lambda info: seen.append(info.result))

    async def later(info: Any) -> None:
        seen.append(info.state)

    await client.on_complete(task_id, later)
    assert seen == [3, TaskState.SUCCESS]
    with pytest.raises(TaskNotFound):
        async for _ in client.watch("nope"):
            pass


async def test_delay_many_with_a_refused_call_runs_the_others_and_names_their_ids_as_a_client_does(
    tasks: Tasks,
) -> None:
    tasks.add(lambda x, y: x + y, name="add")
    client = EagerClient(tasks.registry)
    with pytest.raises(UnknownTask) as refused:
        await client.delay_many([("add", (1, 2)), ("no.such.task", ()), ("add", (3, 4))])
    first, missing, third = refused.value.task_ids  # type: ignore[attr-defined]
    assert missing is None
    assert await client.results([first, third]) == [3, 7]  # the call after the refused one ran too


async def test_delay_many_takes_one_id_per_call_and_names_a_bad_call_as_a_client_does(tasks: Tasks) -> None:
    ran: list[int] = []
    tasks.add(ran.append, name="record")
    client = EagerClient(tasks.registry)
    first = await client.delay_many([("record", (1,)), ("record", (2,))], task_ids=["a", None])
    assert first[0] == "a" and first[1] != "a"
    assert await client.delay_many([("record", (1,)), ("record", (2,))], task_ids=first) == first
    assert ran == [1, 2]  # sent again under the same ids: run once

    with pytest.raises(ValueError, match=r"calls\[1\] must be \(name, args\)"):
        await client.delay_many([("record", (3,)), ("record",)])  # type: ignore[list-item]
    assert ran == [1, 2]  # a malformed call is refused before any call runs
    with pytest.raises(PayloadError, match=r"^calls\[1\] \('record'\): .*cannot encode object"):
        await client.delay_many([("record", (4,)), ("record", (object(),))])
    with pytest.raises(PayloadError, match=r"^workflow refused: step 2 \('record'\): .*cannot encode object"):
        await client.delay_workflow(chain(signature("record", (5,)), signature("record", (object(),))))


async def test_a_task_whose_expiry_passed_or_comes_before_its_eta_ends_expired_without_running(
    tasks: Tasks,
) -> None:
    ran: list[int] = []
    tasks.add(ran.append, name="record")
    client = EagerClient(tasks.registry)
    now = dt.datetime.now(dt.UTC)

    past = await client.delay("record", 1, expires=now - dt.timedelta(seconds=5))
    before_eta = await client.delay("record", 2, countdown=60, expires=now + dt.timedelta(seconds=30))
    in_time = await client.delay("record", 3, countdown=10, expires=now + dt.timedelta(seconds=30))

    assert ran == [3]  # as a control plane: an expired task never starts
    for task_id in (past, before_eta):
        info = await client.status(task_id)
        assert info.state is TaskState.CANCELLED and info.attempts == 0
        assert info.error is not None and info.error.type == "Expired"
    assert (await client.status(in_time)).state is TaskState.SUCCESS


async def test_a_negative_countdown_runs_at_once_and_a_nan_one_is_refused(tasks: Tasks) -> None:
    ran: list[int] = []
    record = tasks.add(ran.append, name="record")
    client = EagerClient(tasks.registry)
    task_id = await client.delay("record", 1, countdown=-0.001)  # a deadline that just passed
    await record.with_options(client=client, countdown=dt.timedelta(seconds=-5)).delay(2)
    assert ran == [1, 2] and (await client.status(task_id)).state is TaskState.SUCCESS
    with pytest.raises(InvalidOptions, match="countdown must be finite"):
        await client.delay("record", 3, countdown=float("nan"))
    assert ran == [1, 2]


async def test_typed_handles_use_it_as_the_current_client(tasks: Tasks) -> None:
    def add(x: int, y: int) -> int:
        return x + y

    add_task = tasks.add(add)
    async with EagerClient(tasks.registry) as client:
        assert current_client() is client
        handle = await add_task.delay(2, 3)
        assert await handle.result() == 5
        assert (await handle.status()).state is TaskState.SUCCESS
        assert await add_task.with_options(priority="critical").submit(1, 1) == 2
        cancelled = await handle.cancel()
        assert cancelled.cancelled is False and cancelled.previous_state is TaskState.SUCCESS


async def test_failures_carry_the_error_and_traceback_and_submit_raises(tasks: Tasks) -> None:
    def explode(reason: str) -> None:
        raise RuntimeError(reason)

    tasks.add(explode)
    client = EagerClient(tasks.registry)
    with pytest.raises(TaskFailed) as failed:
        await client.submit("explode", "boom")
    info = failed.value.info
    assert info.state is TaskState.FAILURE and info.error is not None
    assert info.error.type == "RuntimeError" and info.error.message == "boom"
    assert "raise RuntimeError(reason)" in failed.value.remote_traceback
    wrong_arguments = await client.delay("explode")
    error = (await client.wait(wrong_arguments)).error
    assert error is not None and error.type == "TypeError"  # wrong arguments fail the task, as on a worker


async def test_unknown_names_and_unencodable_arguments_are_refused_at_submission(tasks: Tasks) -> None:
    tasks.add(lambda value: value, name="echo")
    client = EagerClient(tasks.registry)
    with pytest.raises(UnknownTask):
        await client.delay("nope")
    with pytest.raises(PayloadError):
        await client.delay("echo", object())
    with pytest.raises(TaskNotFound):
        await client.status("never-submitted")
    with pytest.raises(ValueError, match="not both"):
        await client.delay("echo", 1, countdown=1, eta=dt.datetime.now(dt.UTC))


async def test_values_come_back_through_the_codec(tasks: Tasks) -> None:
    tasks.add(lambda: {"when": dt.date(2030, 1, 2), "pair": (1, 2)}, name="values")
    assert await EagerClient(tasks.registry).submit("values") == {"when": dt.date(2030, 1, 2), "pair": (1, 2)}
    tasks.add(lambda: object(), name="unencodable")
    with pytest.raises(TaskFailed, match="PayloadError"):
        await EagerClient(tasks.registry).submit("unencodable")


async def test_retries_follow_the_tasks_policy_without_waiting(tasks: Tasks) -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    def asks_again() -> None:
        raise Retry(delay=60)

    def wrong_kind() -> None:
        raise KeyError("not retried")

    tasks.add(flaky, retries=5, retry_backoff=60, retry_on=(ConnectionError,))
    tasks.add(asks_again, retries=2)
    tasks.add(wrong_kind, retries=3, retry_on=(ConnectionError,))
    client = EagerClient(tasks.registry)
    flaky_id = await client.delay("flaky")
    assert (await client.status(flaky_id)).attempts == 3 and await client.result(flaky_id) == "ok"
    asked = await client.wait(await client.delay("asks_again"))
    assert asked.state is TaskState.FAILURE and asked.attempts == 3
    wrong = await client.wait(await client.delay("wrong_kind"))
    assert wrong.attempts == 1


async def test_an_async_tasks_time_limit_cancels_it(tasks: Tasks) -> None:
    async def slow() -> None:
        await asyncio.sleep(30)

    tasks.add(slow, timeout=0.05)
    client = EagerClient(tasks.registry)
    info = await client.wait(await client.delay("slow"))
    assert info.state is TaskState.FAILURE and info.error is not None
    assert info.error.type == "TimeLimitExceeded"


async def test_a_task_id_given_twice_runs_once_and_retry_runs_a_failed_task_again(tasks: Tasks) -> None:
    runs: list[int] = []

    def count(fail: bool) -> int:
        runs.append(1)
        if fail and len(runs) == 1:
            raise RuntimeError("first run fails")
        return len(runs)

    tasks.add(count)
    client = EagerClient(tasks.registry)
    await client.delay("count", True, task_id="t1")
    await client.delay("count", True, task_id="t1")
    assert len(runs) == 1 and (await client.status("t1")).state is TaskState.FAILURE
    assert await client.retry("t1") is TaskState.SUCCESS
    info = await client.status("t1")
    assert info.attempts == 2 and info.result == 2 and len(client.history) == 1


async def test_task_modules_are_loaded_like_a_worker_loads_them(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "eager_demo_tasks.py").write_text(
        "from fastworker.client import task\n\n\n@task(name='eager_demo.square')\ndef square(x: int) -> int:\n"
        "    return x * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    client = EagerClient(task_modules=["eager_demo_tasks"])
    try:
        assert client.registry.names() == ["eager_demo.square"]
        assert await client.submit("eager_demo.square", 7) == 49
    finally:
        from fastworker.client.task import default_registry

        default_registry.unregister("eager_demo.square")
    with pytest.raises(ValueError, match="not both"):
        EagerClient(TaskRegistry(), task_modules=["eager_demo_tasks"])


# --------------------------------------------------------------------------------------- workflows


@pytest.fixture
def steps(tasks: Tasks) -> list[str]:
    """Registers add, collect, explode and record; returns the calls made, in order."""
    calls: list[str] = []

    def add(x: int, y: int = 0) -> int:
        calls.append(f"add({x}, {y})")
        return x + y

    def collect(values: list[int]) -> list[int]:
        calls.append(f"collect({values})")
        return values

    def explode(*args: Any) -> None:
        calls.append("explode")
        raise RuntimeError("this step fails")

    tasks.add(add)
    tasks.add(collect)
    tasks.add(explode)
    return calls


async def test_a_workflow_runs_its_steps_in_order_with_their_dependencies_results(
    tasks: Tasks, steps: list[str]
) -> None:
    add = tasks.registry.get("add")
    assert add is not None
    client = EagerClient(tasks.registry)

    handle = await client.delay_workflow(chain(add.s(1, 2), add.s(10), add.s(100)))
    assert await handle.result() == 113
    assert steps == ["add(1, 2)", "add(3, 10)", "add(13, 100)"]
    info = await handle.status()
    assert info.state is TaskState.SUCCESS and [s.id for s in info.steps] == list(handle.task_ids)
    assert all(s.workflow_id == handle.id and s.worker == "eager" for s in info.steps)
    assert [s.depends_on for s in info.steps] == [(), handle.task_ids[:1], handle.task_ids[1:2]]

    assert await (await client.delay_workflow(group(add.s(i, i) for i in range(5)))).result() == [0, 2, 4, 6, 8]
    header = [add.s(i) for i in range(4)]
    assert await (await client.delay_workflow(chord(header, signature("collect")))).result() == [0, 1, 2, 3]
    nested = chain(add.s(1, 1), group(add.s(1), add.si(5, 5)), signature("collect"))
    assert await (await client.delay_workflow(nested)).result() == [3, 10]
    assert await client.cancel_workflow(handle.id) == 0
    with pytest.raises(TaskNotFound, match="^workflow never-submitted is not known"):
        await client.workflow("never-submitted")


async def test_a_failing_step_fails_the_rest_naming_it_and_nothing_after_it_runs(
    tasks: Tasks, steps: list[str]
) -> None:
    client = EagerClient(tasks.registry)
    workflow = chain(signature("add", (1, 2)), signature("explode"), signature("add", (1,)), signature("add", (2,)))

    handle = await client.delay_workflow(workflow)

    with pytest.raises(TaskFailed) as failed:
        await handle.result()
    failing_id = handle.task_ids[1]
    assert steps == ["add(1, 2)", "explode"]
    info = await handle.status()
    assert info.state is TaskState.FAILURE
    for later in info.steps[2:]:
        assert later.state is TaskState.FAILURE and later.attempts == 0 and later.started_at is None
        assert later.error is not None and later.error.type == "DependencyFailed"
        # worded as the control plane words it: a workflow's step is a step
        assert "step 'explode'" in later.error.message and failing_id in later.error.message
    assert failed.value.info.id == handle.task_ids[3]
    assert [i.name for i in client.history] == ["add", "explode", "add", "add"]


async def test_a_workflow_with_a_bad_step_runs_nothing(tasks: Tasks, steps: list[str]) -> None:
    client = EagerClient(tasks.registry)
    known = await client.delay("add", 0, 0)
    steps.clear()
    with pytest.raises(UnknownTask, match="workflow refused"):
        await client.delay_workflow(chain(signature("add", (1, 2)), signature("nobody.defines.this")))
    with pytest.raises(PayloadError):
        await client.delay_workflow(chain(signature("add", (1, 2)), signature("add", (object(),))))
    with pytest.raises(FastworkerError, match="reuses task id"):
        await client.delay_workflow(chain(signature("add", (1, 2)), signature("add", (1,)).set(task_id=known)))
    with pytest.raises(ValueError, match="at least one task"):
        await client.delay_workflow(group())
    assert steps == [] and len(client.history) == 1


async def test_a_workflow_submitted_with_delay_uses_the_eager_client(tasks: Tasks, steps: list[str]) -> None:
    add = tasks.registry.get("add")
    assert add is not None
    async with EagerClient(tasks.registry):
        handle = await chain(add.s(2, 2), add.s(1)).delay()
        assert await handle.result() == 5


def test_a_workflow_submitted_from_sync_code_runs_in_the_calling_thread_with_no_event_loop(
    tasks: Tasks, steps: list[str]
) -> None:
    # As add.delay_sync(...) runs: in sync code (a CLI, a Django view) under the eager client
    seen_loops: list[bool] = []

    def where() -> int:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            seen_loops.append(False)
        else:
            seen_loops.append(True)
        return 1

    tasks.add(where)
    add = tasks.registry.get("add")
    assert add is not None
    client = EagerClient(tasks.registry)
    previous = set_default_sync_client(client.sync)
    try:
        handle = chain(signature("where"), add.s(10), add.s(100)).delay_sync()
        assert isinstance(handle, SyncWorkflowHandle)
        assert handle.result() == 111 and steps == ["add(1, 10)", "add(11, 100)"]
        assert seen_loops == [False]  # a sync step runs with no event loop (an ORM may need that)
        assert handle.status().state is TaskState.SUCCESS and handle.cancel() == 0

        async def double(x: int) -> int:
            return 2 * x

        tasks.add(double)
        # With an async step among them, the workflow runs on a fresh loop in this thread
        assert group(signature("double", (4,)), add.s(1, 2)).delay_sync().result() == [8, 3]
        with pytest.raises(ValueError, match="at least one task"):
            group().delay_sync()
    finally:
        set_default_sync_client(previous)


async def test_depends_on_runs_after_a_success_fails_after_a_failure_and_refuses_an_unknown_id(
    tasks: Tasks, steps: list[str]
) -> None:
    client = EagerClient(tasks.registry)
    good = await client.delay("add", 1, 2)
    bad = await client.delay("explode")

    after = await client.delay("add", 5, 5, depends_on=[good])
    doomed = await client.delay("add", 6, 6, depends_on=[good, bad])

    assert await client.result(after) == 10  # its own arguments: a plain depends_on passes no result
    info = await client.status(after)
    assert info.depends_on == (good,)
    failed = await client.status(doomed)
    assert failed.state is TaskState.FAILURE and failed.error is not None
    assert failed.error.type == "DependencyFailed" and bad in failed.error.message
    assert "add(6, 6)" not in steps
    with pytest.raises(FastworkerError, match="depends on unknown task 'nope'"):
        await client.delay("add", 1, 1, depends_on=["nope"])
    with pytest.raises(FastworkerError, match="other tasks"):
        await client.delay("add", 1, 1, task_id="me", depends_on=[good, "me"])
    # an operator's retry of a task that never ran is refused while its dependency failed, as a control plane does
    with pytest.raises(FastworkerError, match=f"task {doomed} never ran: its dependency {bad} is FAILURE"):
        await client.retry(doomed)
    assert "add(6, 6)" not in steps


async def test_a_step_that_never_ran_is_retried_with_its_dependencys_result_once_that_succeeded(
    tasks: Tasks, flaky: Callable[[], int]
) -> None:
    tasks.add(flaky)
    tasks.add(lambda x, y: x + y, name="add")
    client = EagerClient(tasks.registry)
    handle = await client.delay_workflow(chain(signature("flaky"), signature("add", (1,))))
    first, second = handle.task_ids
    assert (await client.status(second)).error.type == "DependencyFailed"  # type: ignore[union-attr]

    assert await client.retry(first) is TaskState.SUCCESS
    assert await client.retry(second) is TaskState.SUCCESS
    assert await client.result(second) == 8  # add(7, 1): the first's result prepended
    assert await handle.result() == 8


async def test_retrying_a_task_that_succeeded_is_refused_as_a_control_plane_refuses_it(tasks: Tasks) -> None:
    tasks.add(lambda: 1, name="one")
    client = EagerClient(tasks.registry)
    task_id = await client.delay("one")
    with pytest.raises(InvalidRequest, match=r"only FAILURE or CANCELLED tasks can be retried \(task is SUCCESS\)"):
        await client.retry(task_id)


async def test_wait_bounds_are_checked_as_a_client_checks_them(tasks: Tasks) -> None:
    tasks.add(lambda: 1, name="one")
    client = EagerClient(tasks.registry)
    task_id = await client.delay("one")
    for call in (client.wait, client.result):
        with pytest.raises(ValueError, match="not NaN"):
            await call(task_id, timeout=float("nan"))
    with pytest.raises(ValueError, match="not NaN"):
        await client.wait_many([task_id], timeout=float("nan"))
    assert await client.result(task_id, timeout=-1) == 1  # a deadline already past: the task is final


async def test_an_unknown_workflow_step_is_named_by_its_place_as_a_control_plane_names_it(tasks: Tasks) -> None:
    tasks.add(lambda: 1, name="one")
    client = EagerClient(tasks.registry)
    with pytest.raises(UnknownTask, match=r"step 2 \('nope'\): unknown task 'nope'"):
        await client.delay_workflow(chain(signature("one"), signature("nope")))


async def test_a_sync_task_fans_out_with_delay_sync_under_the_async_face(tasks: Tasks) -> None:
    # Given a sync task that submits another with the documented blocking call (as on a control plane)
    child = tasks.add(lambda x: x + 1, name="child")

    def parent(x: int) -> str:
        return child.delay_sync(x).id

    tasks.add(parent)
    # When it runs under the async face (as in an `async def` test)
    async with EagerClient(tasks.registry) as client:
        child_id = await client.submit("parent", 5)
        # Then its child ran, through this client
        assert await client.result(child_id) == 6
    assert [info.name for info in client.history] == ["child", "parent"]
