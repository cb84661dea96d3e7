"""@task wraps and registers functions with validated options; the registry refuses name clashes."""

from __future__ import annotations

import importlib
import inspect
import math
import pickle
import sys
import textwrap
from collections.abc import Coroutine, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, assert_type

import pytest

from fastworker.client.errors import DuplicateTaskName, FastworkerError
from fastworker.client.limits import Rate
from fastworker.client.models import Priority
from fastworker.client.task import (
    MIN_EVERY,
    TASK_OPTION_NAMES,
    AsyncTaskFunction,
    SyncTaskFunction,
    TaskFunction,
    TaskOptionArgs,
    TaskOptions,
    TaskRegistry,
    default_registry,
    task,
)
from fastworker.protocol.v1 import task_pb2


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


@pytest.fixture
def isolated_modules() -> Iterator[None]:
    """Forget every module a test imports."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_bare_decorator_registers_the_function_under_its_name_with_default_options() -> None:
    @task
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    assert isinstance(add, TaskFunction)
    assert add.name == "add"
    assert add.fn.__name__ == "add"
    assert add.options == TaskOptions()
    assert add.options.priority is Priority.NORMAL
    assert add.options.retries == 0
    assert add.options.retry_backoff == 1.0
    assert add.options.retry_backoff_max == 600.0
    assert (add.options.timeout, add.options.soft_timeout, add.options.every, add.options.cron) == (None,) * 4
    assert add.options.retry_on == ()
    assert add.is_async is False
    assert default_registry.get("add") is add


def test_calling_a_task_runs_the_original_function_in_process() -> None:
    @task
    def add(x: int, y: int) -> int:
        return x + y

    total = add(2, y=3)
    assert_type(total, int)
    assert total == 5


def test_a_task_keeps_the_functions_name_docstring_and_signature() -> None:
    @task
    def greet(who: str, punctuation: str = "!") -> str:
        """Say hello."""
        return f"hello {who}{punctuation}"

    assert greet.__name__ == "greet"
    assert greet.__doc__ == "Say hello."
    assert list(inspect.signature(greet).parameters) == ["who", "punctuation"]


def test_decorator_with_options_stores_them_and_parses_a_priority_name() -> None:
    @task(
        name="emails.send",
        priority="HIGH",
        retries=3,
        retry_backoff=2,
        retry_backoff_max=60.0,
        timeout=30,
        soft_timeout=25.0,
        retry_on=(ConnectionError, "TimeLimitExceeded"),
    )
    def send(user_id: int) -> str:
        return f"sent to {user_id}"

    assert send.name == "emails.send"
    assert default_registry.get("emails.send") is send
    assert "send" not in default_registry
    assert send.options == TaskOptions(
        priority=Priority.HIGH,
        retries=3,
        retry_backoff=2.0,
        retry_backoff_max=60.0,
        timeout=30.0,
        soft_timeout=25.0,
        retry_on=(ConnectionError, "TimeLimitExceeded"),
    )
    assert isinstance(send.options.retry_backoff, float)
    assert isinstance(send.options.timeout, float)
    assert send(7) == "sent to 7"


def test_decorator_with_empty_parentheses_behaves_like_the_bare_form() -> None:
    @task()
    def ping() -> str:
        return "pong"

    assert ping.name == "ping"
    assert ping.options == TaskOptions()


def test_a_single_retry_on_class_is_accepted_without_a_tuple() -> None:
    @task(retries=1, retry_on=TimeoutError)
    def fetch() -> None:
        pass

    assert fetch.options.retry_on == (TimeoutError,)
    assert fetch.options.retry_on_names == ("TimeoutError",)


def test_every_may_be_as_short_as_a_tenth_of_a_second_and_no_shorter() -> None:
    # every=0.001 was accepted: a thousand runs a second flooded the result cache and the log
    assert MIN_EVERY == 0.1
    assert TaskOptions(every=0.1).every == 0.1
    assert TaskOptions(every=0.5).every == 0.5  # what tests and demos use keeps working
    with pytest.raises(ValueError, match=r"every must be at least 0\.1 s"):
        TaskOptions(every=0.05)


def test_periodic_options_are_stored_and_mark_the_task_periodic() -> None:
    @task(every=60)
    def tick() -> None:
        pass

    @task(cron="*/5 * * * *")
    def sync_data(full: bool = False) -> None:
        pass

    assert tick.options.every == 60.0 and tick.options.is_periodic
    assert sync_data.options.cron == "*/5 * * * *" and sync_data.options.is_periodic
    assert not TaskOptions().is_periodic


def test_sync_functions_make_sync_tasks() -> None:
    @task
    def double(x: int) -> int:
        return 2 * x

    typed: TaskFunction[[int], int] = double
    assert_type(double(2), int)
    assert isinstance(double, SyncTaskFunction)
    assert double.is_async is False
    assert double.to_definition().is_async is False
    assert typed is double


async def test_async_functions_make_async_tasks_whose_call_returns_the_coroutine() -> None:
    @task(name="async_double", retries=1)
    async def double(x: int) -> int:
        return 2 * x

    typed: TaskFunction[[int], int] = double
    assert isinstance(double, AsyncTaskFunction)
    assert double.is_async is True
    assert double.to_definition().is_async is True
    coroutine: Coroutine[Any, Any, int] = double(21)
    value = await coroutine
    assert_type(value, int)
    assert value == 42 and typed is double
    assert inspect.iscoroutine(coroutine)


def test_to_definition_carries_every_option_in_wire_form() -> None:
    @task(
        name="reports.build",
        priority=Priority.CRITICAL,
        retries=5,
        retry_backoff=0.5,
        retry_backoff_max=30.0,
        timeout=120.0,
        soft_timeout=100.0,
        every=3600,
        retry_on=[ValueError, "WorkerLost"],
    )
    def build() -> None:
        pass

    assert build.to_definition() == task_pb2.TaskDefinition(
        name="reports.build",
        priority=task_pb2.PRIORITY_CRITICAL,
        retries=5,
        retry_backoff=0.5,
        retry_backoff_max=30.0,
        timeout=120.0,
        soft_timeout=100.0,
        is_async=False,
        every=3600.0,
        cron="",
        retry_on=["ValueError", "WorkerLost"],
    )


def test_to_definition_writes_absent_limits_and_schedules_as_zero_and_empty() -> None:
    @task(cron="0 * * * *", priority="low")
    async def hourly() -> None:
        pass

    definition = hourly.to_definition()
    assert definition.name == "hourly"
    assert definition.priority == task_pb2.PRIORITY_LOW
    assert (definition.timeout, definition.soft_timeout, definition.every) == (0.0, 0.0, 0.0)
    assert definition.cron == "0 * * * *"
    assert definition.is_async is True
    assert list(definition.retry_on) == []
    assert (definition.retries, definition.retry_backoff, definition.retry_backoff_max) == (0, 1.0, 600.0)


def test_to_definition_returns_a_fresh_message_each_time() -> None:
    @task
    def work() -> None:
        pass

    first = work.to_definition()
    first.name = "changed"
    assert work.to_definition().name == "work"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"retries": -1}, ValueError, "retries must be between 0 and"),
        ({"retries": 2**31}, ValueError, "retries must be between 0 and"),
        ({"retries": 1.5}, TypeError, "retries must be an int"),
        ({"retries": True}, TypeError, "retries must be an int"),
        ({"timeout": -1}, ValueError, "timeout must be more than 0 seconds, got -1"),
        ({"timeout": 0}, ValueError, "timeout must be more than 0 seconds, got 0"),
        ({"timeout": math.inf}, ValueError, "timeout must be a finite number of seconds"),
        ({"timeout": "30"}, TypeError, "timeout must be a number of seconds, not str"),
        ({"soft_timeout": -0.5}, ValueError, "soft_timeout must be more than 0 seconds"),
        ({"timeout": 10, "soft_timeout": 10}, ValueError, r"soft_timeout \(10 s\) must be less than timeout \(10 s\)"),
        ({"retry_backoff": -1}, ValueError, "retry_backoff must be 0 or more seconds"),
        ({"retry_backoff_max": math.nan}, ValueError, "retry_backoff_max must be a finite number"),
        ({"every": 0}, ValueError, "every must be more than 0 seconds"),
        ({"every": 0.001}, ValueError, r"every must be at least 0\.1 s \(.*\), got 0\.001"),
        ({"every": 0.099}, ValueError, r"every must be at least 0\.1 s .*, got 0\.099"),
        ({"every": 60, "cron": "* * * * *"}, ValueError, "every and cron are mutually exclusive"),
        ({"cron": "   "}, ValueError, "cron must be a non-empty cron expression"),
        ({"cron": "*/5 * * *"}, ValueError, r"cron must have 5 fields .* got 4 in '\*/5 \* \* \*'"),
        ({"cron": "@fortnightly"}, ValueError, "cron must have 5 fields"),
        ({"cron": "*/61 * * * *"}, ValueError, r"the minute step /61 is beyond the field's range \(at most 59\)"),
        ({"cron": "0 1-23/24 * * *"}, ValueError, "the hour step /24 is beyond"),
        ({"cron": "0 0 * */13 *"}, ValueError, "the month step /13 is beyond"),
        ({"cron": "61 * * * *"}, ValueError, r"61 is out of the minute field's range \(0-59\)"),
        ({"cron": "0 24 * * *"}, ValueError, r"24 is out of the hour field's range \(0-23\)"),
        ({"cron": "0 0 0 * *"}, ValueError, r"0 is out of the day-of-month field's range \(1-31\)"),
        ({"cron": "0 0 1 13 *"}, ValueError, r"13 is out of the month field's range \(1-12\)"),
        ({"cron": "0 0 * * 1-8"}, ValueError, r"8 is out of the day-of-week field's range \(0-7\)"),
        ({"priority": "urgent"}, ValueError, "unknown priority 'urgent'"),
        ({"retry_on": [42]}, TypeError, "retry_on entries must be exception classes or their names, got 42"),
        ({"retry_on": [int]}, TypeError, "retry_on entries must be exception classes"),
        ({"retry_on": ["not a name"]}, ValueError, "retry_on entries must be exception type names"),
        ({"retry_on": 3}, TypeError, "retry_on must be exception classes or their names, not int"),
        ({"name": ""}, ValueError, "name must be non-empty"),
        ({"name": " padded "}, ValueError, "without surrounding whitespace"),
        ({"name": 7}, TypeError, "name must be a str, not int"),
        ({"retires": 3}, TypeError, "unknown option retires"),
        ({"queues": "x", "rate": "1/s"}, TypeError, "unknown options queues, rate"),
    ],
)
def test_invalid_options_fail_at_decoration_naming_the_function(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    def misconfigured() -> None:
        pass

    with pytest.raises(error, match=message) as excinfo:
        task(**options)(misconfigured)
    assert "misconfigured" in str(excinfo.value)
    assert "misconfigured" not in default_registry


def test_the_decorator_options_are_the_task_options_fields_and_name() -> None:
    """``TaskOptionArgs`` is the one list of ``@task``'s keywords besides ``TaskOptions``: the two must agree."""
    assert (
        set(TaskOptionArgs.__optional_keys__) == TASK_OPTION_NAMES == {"name"} | {f.name for f in fields(TaskOptions)}
    )
    assert list(inspect.signature(task).parameters) == ["fn", "options"]


def test_a_periodic_task_whose_function_requires_arguments_is_refused() -> None:
    def report(day: str, *extra: str, verbose: bool = False, **more: str) -> None:
        pass

    with pytest.raises(ValueError, match="a periodic task runs without arguments, but the function requires day"):
        task(every=60)(report)


def test_decorating_something_that_is_not_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"@task decorates a function, not int"):
        task(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"give the name as @task\(name=\.\.\.\)"):
        task("emails.send")  # type: ignore[call-overload]


def test_a_callable_without_a_name_needs_an_explicit_one() -> None:
    class Counter:
        def __call__(self) -> int:
            return 1

    with pytest.raises(TypeError, match="has no __name__"):
        task(Counter())
    named = task(name="callable_object")(Counter())
    assert named() == 1


def test_decorating_a_task_twice_is_refused() -> None:
    @task
    def once() -> None:
        pass

    with pytest.raises(TypeError, match="already a task"):
        task(name="twice")(once)


def test_a_different_function_under_a_registered_name_raises_naming_both_functions() -> None:
    @task(name="shared")
    def first() -> None:
        pass

    def second() -> None:
        pass

    with pytest.raises(DuplicateTaskName) as excinfo:
        task(name="shared")(second)

    error = excinfo.value
    assert isinstance(error, FastworkerError)
    assert error.name == "shared"
    assert error.existing == f"{__name__}.{first.fn.__qualname__}"
    assert error.new == f"{__name__}.{second.__qualname__}"
    assert error.existing in str(error) and error.new in str(error)
    assert "@task(name=...)" in str(error)
    assert default_registry.get("shared") is first


def test_a_duplicate_task_name_error_survives_pickling() -> None:
    error = DuplicateTaskName("shared", "a.first", "b.second")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.name, copy.existing, copy.new, str(copy)) == ("shared", "a.first", "b.second", str(error))


@pytest.mark.usefixtures("isolated_modules")
def test_reloading_a_module_re_registers_its_tasks_silently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fw_reloaded_tasks.py").write_text(
        textwrap.dedent(
            """
            from fastworker.client.task import task

            @task
            def reloaded_add(x: int, y: int) -> int:
                return x + y
            """
        )
    )
    monkeypatch.syspath_prepend(tmp_path)
    importlib.invalidate_caches()
    module = importlib.import_module("fw_reloaded_tasks")
    original = default_registry.get("reloaded_add")

    importlib.reload(module)

    replacement = default_registry.get("reloaded_add")
    assert original is not None and replacement is not None
    assert replacement is not original
    assert replacement is module.reloaded_add
    assert replacement(1, 2) == 3


def test_registering_the_same_task_object_again_is_a_no_op() -> None:
    @task
    def idempotent() -> None:
        pass

    assert default_registry.register(idempotent) is idempotent
    assert default_registry.get("idempotent") is idempotent


def test_one_function_may_be_registered_under_two_names() -> None:
    def shared() -> str:
        return "ok"

    one = task(name="alias.one")(shared)
    two = task(name="alias.two")(shared)
    assert default_registry.get("alias.one") is one and default_registry.get("alias.two") is two


def test_a_registry_looks_up_iterates_and_lists_its_tasks() -> None:
    registry = TaskRegistry()

    @task(name="zeta")
    def zeta() -> None:
        pass

    @task(name="alpha", priority="high")
    async def alpha() -> None:
        pass

    assert registry.register(zeta) is zeta
    registry.register(alpha)

    assert len(registry) == 2
    assert registry.get("alpha") is alpha
    assert registry.get("missing") is None
    assert "zeta" in registry and zeta in registry
    assert "missing" not in registry and 42 not in registry
    assert list(registry) == [zeta, alpha]
    assert registry.names() == ["alpha", "zeta"]
    assert [d.name for d in registry.definitions()] == ["alpha", "zeta"]
    assert registry.definitions()[0] == alpha.to_definition()
    assert "alpha" in repr(registry)


def test_a_task_object_is_in_a_registry_only_while_it_is_the_one_registered_under_its_name() -> None:
    registry = TaskRegistry()

    @task(name="stale")
    def stale() -> None:
        pass

    registry.register(stale)
    replacement = SyncTaskFunction(stale.fn, "stale", TaskOptions())
    registry.register(replacement)
    assert replacement in registry
    assert stale not in registry


def test_unregister_removes_a_task_and_returns_it() -> None:
    registry = TaskRegistry()

    @task
    def temporary() -> None:
        pass

    registry.register(temporary)
    assert registry.unregister("temporary") is temporary
    assert "temporary" not in registry and len(registry) == 0
    assert registry.unregister("temporary") is None


def test_task_options_validate_when_built_directly() -> None:
    with pytest.raises(TypeError, match="priority must be a Priority"):
        TaskOptions(priority="high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_on must be a tuple"):
        TaskOptions(retry_on=[ValueError])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cron must be a str"):
        TaskOptions(cron=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every and cron are mutually exclusive"):
        TaskOptions(every=1.0, cron="* * * * *")
    options = TaskOptions(timeout=10, retry_backoff=0)
    assert options.timeout == 10.0 and options.retry_backoff == 0.0


def test_task_options_are_frozen() -> None:
    options = TaskOptions()
    with pytest.raises(AttributeError):
        options.retries = 3  # type: ignore[misc]


def test_a_tasks_repr_shows_its_name_and_function() -> None:
    @task(name="shown")
    def hidden() -> None:
        pass

    assert repr(hidden) == f"<SyncTaskFunction 'shown' {__name__}.{hidden.fn.__qualname__}>"
    assert hidden.qualified_name == f"{__name__}.{hidden.fn.__qualname__}"


def test_allow_overlap_is_carried_into_the_definition() -> None:
    from fastworker.client.task import TaskRegistry, default_registry
    from fastworker.client.task import task as make_task

    @make_task(name="test_task.overlapping_tick", every=5, allow_overlap=True)
    def overlapping_tick() -> None:
        return None

    try:
        definition = overlapping_tick.to_definition()
        assert definition.allow_overlap is True
        assert definition.every == 5.0
        assert overlapping_tick.options.allow_overlap is True
        assert isinstance(default_registry, TaskRegistry)
    finally:
        default_registry.unregister("test_task.overlapping_tick")


def test_a_cron_schedule_takes_a_time_zone_checked_at_import() -> None:
    registry = TaskRegistry()

    def nightly() -> None: ...

    registered = registry.register(
        SyncTaskFunction(nightly, "nightly", TaskOptions(cron="0 3 * * *", timezone="Europe/Paris"))
    )
    assert registered.to_definition().timezone == "Europe/Paris"
    assert SyncTaskFunction(nightly, "n2", TaskOptions(cron="0 3 * * *")).to_definition().timezone == ""
    with pytest.raises(ValueError, match="unknown timezone 'Europe/Pariss'"):
        TaskOptions(cron="0 3 * * *", timezone="Europe/Pariss")
    # A name too long for a file name (as a hostile worker's definition may carry): refused, not an OSError
    with pytest.raises(ValueError, match=r"unknown timezone 'x+'\.\.\. \(5000 characters\)"):
        TaskOptions(cron="0 3 * * *", timezone="x" * 5000)
    with pytest.raises(ValueError, match="timezone applies to a cron schedule"):
        TaskOptions(every=60, timezone="Europe/Paris")


@pytest.mark.parametrize(
    "cron", ["59 23 31 12 7", "0 9 * * mon-fri", "0 0 L * *", "0 0 * * 5#3", "0-59/15 0-23 1-31 1-12 0-7"]
)
def test_a_cron_expression_at_the_ends_of_its_ranges_or_with_names_passes_the_import_check(cron: str) -> None:
    assert TaskOptions(cron=cron).cron == cron


@pytest.mark.parametrize(
    ("written", "text"),
    [("1000000/s", "1000000/s"), ("0.00009/s", "0.00009/s"), ("0.0000001/h", "0.0000001/h"), ("1.50/m", "1.5/m")],
)
def test_a_rate_limit_is_kept_in_plain_digits_so_that_the_control_plane_parses_it_again(
    written: str, text: str
) -> None:
    # "1e+06/s" (what "{:g}" wrote) is no rate: the control plane refused it, or ignored the limit
    rate = Rate.parse(written)
    assert rate.text == text and Rate.parse(rate.text) == rate
    assert TaskOptions(rate_limit=written).rate_limit == text
