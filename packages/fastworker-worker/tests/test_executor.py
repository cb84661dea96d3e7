"""The executor runs one task and reports its outcome in wire types; no task error escapes as an exception."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fastworker.client import hooks
from fastworker.client.task import TaskFunction, default_registry, task
from fastworker.protocol.payload import decode_value, encode_arguments, encode_value
from fastworker.protocol.v1.task_pb2 import CODEC_MSGPACK, CODEC_PICKLE, Payload, TaskError
from fastworker.worker.executor import (
    MAX_ERROR_MESSAGE,
    MAX_ERROR_TRACEBACK,
    MAX_ERROR_TYPE,
    Outcome,
    failure,
    prepare,
    run_async,
    run_async_limited,
    run_sync,
)


@pytest.fixture(autouse=True)
def isolated_default_registry() -> Iterator[None]:
    """Undo every registration a test makes in the process-wide default registry."""
    before = {tf.name: tf for tf in default_registry}
    yield
    for name in default_registry.names():
        if default_registry.get(name) is not before.get(name):
            default_registry.unregister(name)
    for name, tf in before.items():
        if default_registry.get(name) is not tf:
            default_registry.register(tf)


class Unencodable:
    """A value the safe codec has no encoding for."""


def succeeded_value(outcome: Outcome, *, allow_pickle: bool = False) -> Any:
    assert outcome.succeeded, outcome.error
    assert outcome.error is None and outcome.result is not None
    return decode_value(outcome.result, allow_pickle=allow_pickle)


def test_a_sync_task_that_returns_succeeds_with_its_encoded_value() -> None:
    @task
    def add(x: int, y: int) -> int:
        return x + y

    outcome = run_sync(add, (1,), {"y": 2})

    assert succeeded_value(outcome) == 3
    assert outcome.result is not None and outcome.result.codec == CODEC_MSGPACK


async def test_an_async_task_that_returns_succeeds_with_its_encoded_value() -> None:
    @task
    async def greet(who: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"greeting": f"hello {who}", "parts": ("hello", who)}

    outcome = await run_async(greet, ("ada",), {})

    assert succeeded_value(outcome) == {"greeting": "hello ada", "parts": ("hello", "ada")}


def test_a_task_returning_none_succeeds() -> None:
    @task
    def nothing() -> None:
        pass

    assert succeeded_value(run_sync(nothing, (), {})) is None


def test_prepare_decodes_the_arguments_that_the_task_then_runs_with() -> None:
    @task
    def describe(name: str, *, times: int = 1) -> str:
        return name * times

    prepared = prepare(describe, encode_arguments(["ab"], {"times": 2}))

    assert prepared == (("ab",), {"times": 2})
    assert not isinstance(prepared, Outcome)
    args, kwargs = prepared
    assert succeeded_value(run_sync(describe, args, kwargs)) == "abab"


def test_an_exception_fails_the_task_with_its_type_message_and_traceback_from_the_raising_line() -> None:
    def check(value: int) -> None:
        if value < 0:
            raise ValueError(f"negative value {value}")  # the raising line

    @task
    def validate(value: int) -> None:
        check(value)

    outcome = run_sync(validate, (-1,), {})

    assert not outcome.succeeded and outcome.result is None
    assert outcome.error is not None
    assert outcome.error.type == "ValueError"
    assert outcome.error.message == "negative value -1"
    traceback = outcome.error.traceback
    assert traceback.startswith("Traceback (most recent call last):")
    assert 'raise ValueError(f"negative value {value}")  # the raising line' in traceback
    assert "in validate" in traceback and "in check" in traceback
    assert traceback.rstrip().endswith("ValueError: negative value -1")
    assert "in run_sync" not in traceback  # starts in the task, not in the executor


async def test_an_async_task_exception_fails_the_task_with_its_traceback() -> None:
    @task
    async def explode() -> None:
        await asyncio.sleep(0)
        raise KeyError("missing")

    outcome = await run_async(explode, (), {})

    assert outcome.error is not None and not outcome.succeeded
    assert (outcome.error.type, outcome.error.message) == ("KeyError", "'missing'")
    assert 'raise KeyError("missing")' in outcome.error.traceback


def test_a_chained_exception_keeps_its_cause_in_the_traceback() -> None:
    @task
    def wrap() -> None:
        try:
            {"other": 1}["key"]
        except KeyError as exc:
            raise RuntimeError("lookup failed") from exc

    outcome = run_sync(wrap, (), {})

    assert outcome.error is not None
    assert outcome.error.type == "RuntimeError"
    assert "KeyError: 'key'" in outcome.error.traceback
    assert "The above exception was the direct cause" in outcome.error.traceback


def test_wrong_arguments_fail_the_task_with_the_type_error_text() -> None:
    @task
    def add(x: int, y: int) -> int:
        return x + y

    missing = run_sync(add, (1,), {})
    unexpected = run_sync(add, (1, 2), {"z": 3})

    assert missing.error is not None and not missing.succeeded
    assert missing.error.type == "TypeError"
    assert "missing 1 required positional argument: 'y'" in missing.error.message
    assert missing.error.traceback.rstrip().endswith(missing.error.message)
    assert unexpected.error is not None
    assert "got an unexpected keyword argument 'z'" in unexpected.error.message


async def test_wrong_arguments_fail_an_async_task_with_the_type_error_text() -> None:
    @task
    async def fetch(url: str) -> str:
        return url

    outcome = await run_async(fetch, (), {})

    assert outcome.error is not None and outcome.error.type == "TypeError"
    assert "missing 1 required positional argument: 'url'" in outcome.error.message


def test_a_result_the_codec_cannot_encode_fails_the_task_as_a_payload_error() -> None:
    @task
    def make() -> Unencodable:
        return Unencodable()

    outcome = run_sync(make, (), {})

    assert not outcome.succeeded and outcome.result is None
    assert outcome.error is not None
    assert outcome.error.type == "PayloadError"
    assert "cannot encode Unencodable" in outcome.error.message
    assert outcome.error.traceback == ""


def test_a_result_over_the_size_limit_fails_the_task_as_a_payload_error() -> None:
    @task
    def big() -> bytes:
        return b"x" * 1000

    outcome = run_sync(big, (), {}, max_size=100)

    assert outcome.error is not None and outcome.error.type == "PayloadError"
    assert "exceeds the limit of 100 bytes" in outcome.error.message


def test_a_result_whose_own_conversion_raises_fails_the_task_as_a_payload_error() -> None:
    class BadInt(int):
        def __int__(self) -> int:
            raise ArithmeticError("no conversion")

        def __index__(self) -> int:
            raise ArithmeticError("no conversion")

    @task
    def bad() -> int:
        return BadInt(3)

    outcome = run_sync(bad, (), {})

    assert outcome.error is not None and outcome.error.type == "PayloadError"
    assert outcome.error.message.startswith("cannot encode ")
    assert outcome.error.message.endswith(".BadInt: ArithmeticError: no conversion")


async def test_an_unencodable_async_result_fails_the_task_as_a_payload_error() -> None:
    @task
    async def make() -> Unencodable:
        return Unencodable()

    outcome = await run_async(make, (), {})

    assert outcome.error is not None and outcome.error.type == "PayloadError"


def test_pickle_encodes_a_result_only_when_allowed() -> None:
    @task
    def make() -> Unencodable:
        return Unencodable()

    outcome = run_sync(make, (), {}, allow_pickle=True)

    assert outcome.result is not None and outcome.result.codec == CODEC_PICKLE
    assert isinstance(succeeded_value(outcome, allow_pickle=True), Unencodable)


def test_a_corrupt_argument_payload_fails_the_task_as_a_payload_error() -> None:
    @task
    def add(x: int, y: int) -> int:
        return x + y

    corrupt = prepare(add, Payload(codec=CODEC_MSGPACK, data=b"\xc1\xff\x00"))
    not_a_pair = prepare(add, encode_value({"x": 1}))

    assert isinstance(corrupt, Outcome) and not corrupt.succeeded
    assert corrupt.error is not None and corrupt.error.type == "PayloadError"
    assert corrupt.error.message.startswith("cannot decode the arguments of task 'add': corrupt payload")
    assert isinstance(not_a_pair, Outcome) and not_a_pair.error is not None
    assert "not an [args, kwargs] pair" in not_a_pair.error.message


def test_a_pickled_argument_payload_is_refused_unless_pickle_is_allowed() -> None:
    @task
    def echo(value: Any) -> Any:
        return value

    pickled = encode_arguments([Unencodable()], {}, allow_pickle=True)

    refused = prepare(echo, pickled)
    accepted = prepare(echo, pickled, allow_pickle=True)

    assert isinstance(refused, Outcome) and refused.error is not None
    assert refused.error.type == "PayloadError"
    assert "pickle payloads are refused" in refused.error.message
    assert not isinstance(accepted, Outcome)
    assert isinstance(accepted[0][0], Unencodable)


def test_system_exit_inside_a_task_becomes_a_failure_instead_of_stopping_the_process() -> None:
    @task
    def quit_now() -> None:
        sys.exit(3)

    outcome = run_sync(quit_now, (), {})

    assert not outcome.succeeded
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == ("SystemExit", "3")
    assert "sys.exit(3)" in outcome.error.traceback


async def test_system_exit_inside_an_async_task_becomes_a_failure() -> None:
    @task
    async def quit_now() -> None:
        raise SystemExit("bye")

    outcome = await run_async(quit_now, (), {})

    assert outcome.error is not None and (outcome.error.type, outcome.error.message) == ("SystemExit", "bye")


class OwnAbort(BaseException):
    """A BaseException of the task's own, as some libraries define."""


@pytest.mark.parametrize("raised", [KeyboardInterrupt("kb"), GeneratorExit("gx"), OwnAbort("own")], ids=type)
@pytest.mark.parametrize("limit", [0.0, 30.0], ids=["no limit", "a time limit"])
@pytest.mark.parametrize("hooked", [False, True], ids=["no hooks", "hooks"])
async def test_a_base_exception_an_async_task_raises_is_its_failure_not_the_loop_s(
    raised: BaseException, limit: float, hooked: bool
) -> None:
    # Given an async task that raises a BaseException (on a daemon's loop it would end the process)
    @task
    async def aborts() -> None:
        raise raised

    def noop(ctx: object) -> None:
        pass

    if hooked:  # the executor's other path: the same run with hooks around it
        hooks.before_task(noop)
    # When it runs, with or without a time limit and hooks
    try:
        outcome = await run_async_limited(aborts, (), {}, hard=limit)
    finally:
        hooks.remove(noop)
    # Then the run fails with it, and nothing escapes
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == (type(raised).__name__, str(raised))


def test_keyboard_interrupt_inside_a_task_propagates() -> None:
    @task
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sync(interrupted, (), {})


async def test_cancelling_an_async_task_propagates_cancelled_error_instead_of_an_outcome() -> None:
    started = asyncio.Event()

    @task
    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    running = asyncio.ensure_future(run_async(forever, (), {}))
    await started.wait()
    running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running


def test_an_exception_whose_str_raises_still_becomes_a_failure() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    @task
    def odd() -> None:
        raise Unprintable

    outcome = run_sync(odd, (), {})

    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == ("Unprintable", "<unprintable Unprintable object>")


def test_timestamps_are_wall_clock_and_ordered() -> None:
    @task
    def nap() -> str:
        time.sleep(0.01)
        return "rested"

    before = time.time()
    outcome = run_sync(nap, (), {})
    after = time.time()

    assert before <= outcome.started_at
    assert outcome.finished_at - outcome.started_at >= 0.009
    assert outcome.finished_at <= after


async def test_timestamps_of_a_failed_async_task_are_ordered() -> None:
    @task
    async def fail_later() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("late")

    before = time.time()
    outcome = await run_async(fail_later, (), {})

    assert before <= outcome.started_at < outcome.finished_at <= time.time()


def test_failure_builds_a_system_failure_started_and_finished_now() -> None:
    before = time.time()
    outcome = failure("UnknownTask", "no task is registered under 'nope'")

    assert not outcome.succeeded and outcome.result is None
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message, outcome.error.traceback) == (
        "UnknownTask",
        "no task is registered under 'nope'",
        "",
    )
    assert before <= outcome.started_at == outcome.finished_at <= time.time()
    assert failure("WorkerLost", "gone", "tb").error.traceback == "tb"  # type: ignore[union-attr]


def test_outcomes_have_slots_and_no_instance_dict() -> None:
    outcome = failure("X", "y")
    assert not hasattr(outcome, "__dict__")


def test_running_a_task_of_the_wrong_kind_is_a_programming_error() -> None:
    @task
    def plain() -> None:
        pass

    @task
    async def coroutine() -> None:
        pass

    with pytest.raises(TypeError, match="task 'coroutine' is async: run it with run_async"):
        run_sync(coroutine, (), {})
    with pytest.raises(TypeError, match="task 'plain' is not async"):
        asyncio.run(run_async(plain, (), {}))


def test_the_executor_accepts_any_task_function() -> None:
    @task(name="typed")
    def typed(x: int) -> int:
        return x

    generic: TaskFunction[Any, Any] = typed
    assert succeeded_value(run_sync(generic, (1,), {})) == 1


@pytest.mark.parametrize("hooked", [False, True])
async def test_an_async_task_that_catches_its_time_limits_cancellation_still_fails_with_time_limit_exceeded(
    hooked: bool,
) -> None:
    @task(name="stubborn_async", timeout=0.05)
    async def stubborn_async() -> str:
        for _ in range(3):
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass  # caught: it runs on
        return "ran on"

    def noop(ctx: object) -> None:
        pass

    if hooked:  # the executor's other path: the same run with hooks around it
        hooks.before_task(noop)
    try:
        outcome = await run_async_limited(stubborn_async, (), {}, hard=0.05)
    finally:
        hooks.remove(noop)
    assert not outcome.succeeded and outcome.error is not None
    assert outcome.error.type == "TimeLimitExceeded" and "caught the cancellation" in outcome.error.message


@pytest.mark.parametrize("hooked", [False, True])
@pytest.mark.parametrize("yields_after", [False, True], ids=["returns at once", "awaits after the limit"])
async def test_an_async_task_that_blocks_past_its_time_limit_fails_with_time_limit_exceeded(
    hooked: bool, yields_after: bool
) -> None:
    # The limit cannot fire while the task keeps the loop; its outcome must not be a success all the same
    @task(name="blocks_past_its_limit", timeout=0.05)
    async def blocks_past_its_limit() -> str:
        time.sleep(0.2)  # blocking code in a coroutine: nothing can stop it
        if yields_after:
            await asyncio.sleep(0)
        return "finished late"

    def noop(ctx: object) -> None:
        pass

    if hooked:
        hooks.before_task(noop)
    try:
        outcome = await run_async_limited(blocks_past_its_limit, (), {}, hard=0.05)
    finally:
        hooks.remove(noop)
    assert not outcome.succeeded and outcome.error is not None and outcome.result is None
    assert outcome.error.type == "TimeLimitExceeded"
    assert "exceeded its hard time limit of 0.05 s" in outcome.error.message


@pytest.mark.parametrize("hooked", [False, True])
async def test_an_async_task_that_another_task_kept_waiting_past_its_limit_is_not_blamed(hooked: bool) -> None:
    # Given a well-behaved task with a limit, waiting for another one that blocks the shared loop past that
    # limit and then wakes it (so it resumes before the loop gets to its deadline)
    ready = asyncio.Event()

    @task(name="waits_its_turn", timeout=0.1)
    async def waits_its_turn() -> str:
        await ready.wait()
        return "mine"

    @task(name="hogs_the_loop")
    async def hogs_the_loop() -> str:
        await asyncio.sleep(0)
        time.sleep(0.3)
        ready.set()
        return "hog"

    def noop(ctx: object) -> None:
        pass

    if hooked:
        hooks.before_task(noop)
    try:
        innocent, hog = await asyncio.gather(
            run_async_limited(waits_its_turn, (), {}, hard=0.1), run_async(hogs_the_loop, (), {})
        )
    finally:
        hooks.remove(noop)

    # Then it keeps its value: none of its own steps ran past its limit
    assert succeeded_value(innocent) == "mine" and succeeded_value(hog) == "hog"


async def test_an_async_task_within_its_time_limit_keeps_its_value() -> None:
    @task(name="quick_async_within_limit", timeout=5)
    async def quick() -> str:
        await asyncio.sleep(0)
        return "done"

    assert succeeded_value(await run_async_limited(quick, (), {}, hard=5)) == "done"


def test_a_huge_error_is_cut_to_its_bounds_keeping_the_messages_start_and_the_tracebacks_end() -> None:
    # A 5 MB message was stored twice (message and traceback), in the cache and in every event
    @task
    def shout(size: int) -> None:
        raise ValueError("start " + "x" * size + " end")

    outcome = run_sync(shout, (5_000_000,), {})

    error = outcome.error
    assert error is not None and error.type == "ValueError"
    assert len(error.message) <= MAX_ERROR_MESSAGE + 100 and error.message.startswith("start xxx")
    assert "characters left out" in error.message
    assert len(error.traceback) <= MAX_ERROR_TRACEBACK + 100
    assert "raise ValueError" in error.traceback and error.traceback.rstrip().endswith(" end")
    # Errors already within bounds are kept whole, and every failure goes through the same bounds
    assert failure("Slow", "short", "tb").error == TaskError(type="Slow", message="short", traceback="tb")
    assert len(failure("T" * 500, "m").error.type) == MAX_ERROR_TYPE  # type: ignore[union-attr]
