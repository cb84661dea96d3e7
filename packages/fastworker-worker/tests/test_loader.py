"""load_task_modules imports task modules and returns exactly their tasks, or fails with a clear TaskLoadError."""

from __future__ import annotations

import importlib
import logging
import pickle
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fastworker.client.errors import DuplicateTaskName, FastworkerError
from fastworker.client.task import TaskRegistry, default_registry
from fastworker.worker.errors import TaskLoadError
from fastworker.worker.loader import load_task_modules, log_load_error

WriteModule = Callable[[str, str], Path]


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


@pytest.fixture(autouse=True)
def isolated_modules() -> Iterator[None]:
    """Forget every module a test imports."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteModule:
    """Write a module (``pkg/mod.py`` or ``pkg/__init__.py`` style path) under a folder on sys.path."""
    monkeypatch.syspath_prepend(tmp_path)

    def write(relative_path: str, source: str) -> Path:
        path = tmp_path / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return path

    return write


def test_loading_a_module_returns_a_new_registry_with_its_tasks(write_module: WriteModule) -> None:
    write_module(
        "fwl_math.py",
        """
        from fastworker.client.task import task

        @task
        def fwl_add(x: int, y: int) -> int:
            return x + y

        @task(name="fwl.mul", priority="high")
        async def fwl_mul(x: int, y: int) -> int:
            return x * y

        def helper() -> None:
            pass
        """,
    )

    registry = load_task_modules(["fwl_math"])

    assert isinstance(registry, TaskRegistry)
    assert registry is not default_registry
    assert registry.names() == ["fwl.mul", "fwl_add"]
    add = registry.get("fwl_add")
    assert add is not None and add is default_registry.get("fwl_add")
    assert add(2, 3) == 5
    assert registry.get("fwl.mul") is not None and registry.get("fwl.mul").is_async  # type: ignore[union-attr]


def test_tasks_of_modules_that_were_not_loaded_are_left_out(write_module: WriteModule) -> None:
    write_module("fwl_wanted.py", "from fastworker.client.task import task\n\n@task\ndef fwl_wanted() -> None: ...\n")
    write_module("fwl_other.py", "from fastworker.client.task import task\n\n@task\ndef fwl_other() -> None: ...\n")
    importlib.import_module("fwl_other")

    registry = load_task_modules(["fwl_wanted"])

    assert registry.names() == ["fwl_wanted"]
    assert "fwl_other" in default_registry


def test_tasks_of_submodules_are_attributed_to_the_package_that_loaded_them(write_module: WriteModule) -> None:
    write_module("fwl_pkg/__init__.py", "from fwl_pkg import emails, reports\n")
    write_module(
        "fwl_pkg/emails.py",
        "from fastworker.client.task import task\n\n@task(name='fwl.emails.send')\ndef send() -> None: ...\n",
    )
    write_module(
        "fwl_pkg/reports.py",
        "from fastworker.client.task import task\n\n@task(name='fwl.reports.build')\ndef build() -> None: ...\n",
    )

    assert load_task_modules(["fwl_pkg"]).names() == ["fwl.emails.send", "fwl.reports.build"]


def test_a_task_imported_into_a_loaded_module_belongs_to_it(write_module: WriteModule) -> None:
    write_module("fwl_shared.py", "from fastworker.client.task import task\n\n@task\ndef fwl_cleanup() -> None: ...\n")
    write_module("fwl_app.py", "from fwl_shared import fwl_cleanup\n")

    assert load_task_modules(["fwl_app"]).names() == ["fwl_cleanup"]


def test_several_modules_load_together_and_a_repeated_name_is_loaded_once(write_module: WriteModule) -> None:
    write_module("fwl_one.py", "from fastworker.client.task import task\n\n@task\ndef fwl_one() -> None: ...\n")
    write_module("fwl_two.py", "from fastworker.client.task import task\n\n@task\ndef fwl_two() -> None: ...\n")

    registry = load_task_modules(["fwl_one", "fwl_two", "fwl_one"])

    assert registry.names() == ["fwl_one", "fwl_two"]


def test_loading_no_modules_returns_an_empty_registry() -> None:
    assert len(load_task_modules([])) == 0


def test_a_missing_module_fails_naming_it_and_the_import_error(write_module: WriteModule) -> None:
    with pytest.raises(TaskLoadError) as excinfo:
        load_task_modules(["fwl_does_not_exist"])

    error = excinfo.value
    assert isinstance(error, FastworkerError)
    assert error.module == "fwl_does_not_exist"
    assert str(error) == "cannot import task module 'fwl_does_not_exist': No module named 'fwl_does_not_exist'"
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_a_module_whose_own_import_fails_names_the_module_and_the_missing_dependency(
    write_module: WriteModule,
) -> None:
    write_module("fwl_broken_dep.py", "import fwl_not_installed_anywhere\n")

    with pytest.raises(TaskLoadError, match="cannot import task module 'fwl_broken_dep': No module named") as excinfo:
        load_task_modules(["fwl_broken_dep"])
    assert "fwl_not_installed_anywhere" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, ImportError)


def test_a_module_that_raises_while_importing_fails_with_the_error_type_and_text(write_module: WriteModule) -> None:
    write_module("fwl_raises.py", "raise RuntimeError('no database configured')\n")

    with pytest.raises(
        TaskLoadError, match="importing task module 'fwl_raises' failed: RuntimeError: no database configured"
    ) as excinfo:
        load_task_modules(["fwl_raises"])
    assert isinstance(excinfo.value.__cause__, RuntimeError)


def test_a_module_with_a_syntax_error_fails_with_a_task_load_error(write_module: WriteModule) -> None:
    write_module("fwl_syntax.py", "def broken(:\n")

    with pytest.raises(TaskLoadError, match="importing task module 'fwl_syntax' failed: SyntaxError") as excinfo:
        load_task_modules(["fwl_syntax"])
    assert isinstance(excinfo.value.__cause__, SyntaxError)


def test_a_module_that_defines_no_tasks_fails_saying_so(write_module: WriteModule) -> None:
    write_module("fwl_empty.py", "def not_a_task() -> None: ...\n")

    with pytest.raises(TaskLoadError, match="task module 'fwl_empty' defines no tasks") as excinfo:
        load_task_modules(["fwl_empty"])
    assert excinfo.value.module == "fwl_empty"
    assert excinfo.value.__cause__ is None


def test_two_modules_defining_one_task_name_fail_naming_both_functions(write_module: WriteModule) -> None:
    write_module("fwl_first.py", "from fastworker.client.task import task\n\n@task\ndef fwl_clash() -> None: ...\n")
    write_module(
        "fwl_second.py",
        "from fastworker.client.task import task\n\n@task(name='fwl_clash')\ndef other() -> None: ...\n",
    )

    with pytest.raises(TaskLoadError) as excinfo:
        load_task_modules(["fwl_first", "fwl_second"])

    error = excinfo.value
    assert error.module == "fwl_second"
    assert str(error).startswith("cannot load task module 'fwl_second': task name 'fwl_clash' is already registered")
    assert "fwl_first.fwl_clash" in str(error) and "fwl_second.other" in str(error)
    assert isinstance(error.__cause__, DuplicateTaskName)


def test_a_file_path_is_refused_with_a_hint_at_the_dotted_name() -> None:
    with pytest.raises(TaskLoadError, match=r"'app/tasks.py' is not a dotted module name \(give .*'app.tasks'"):
        load_task_modules(["app/tasks.py"])
    with pytest.raises(TaskLoadError, match="'' is not a dotted module name"):
        load_task_modules([""])
    with pytest.raises(TaskLoadError, match="'app..tasks' is not a dotted module name"):
        load_task_modules(["app..tasks"])


def test_a_single_string_instead_of_a_list_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"not a str \(did you mean \['mytasks'\]\?\)"):
        load_task_modules("mytasks")


def test_a_task_load_error_survives_pickling() -> None:
    error = TaskLoadError("task module 'x' defines no tasks", "x")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.module) == (str(error), "x")


def test_a_load_failure_is_a_log_record_with_the_import_s_traceback_unless_the_module_is_missing(
    write_module: WriteModule, caplog: pytest.LogCaptureFixture
) -> None:
    # A record (not a print), so that --log-format json holds for the daemons' commonest start-up failure
    write_module("fwl_raises_later.py", "def helper():\n    raise RuntimeError('no database configured')\nhelper()\n")
    caplog.set_level(logging.ERROR, logger="fastworker.worker.loader")
    for module in ("fwl_raises_later", "fwl_not_there"):
        with pytest.raises(TaskLoadError) as excinfo:
            load_task_modules([module])
        log_load_error(excinfo.value)
    raised, missing = caplog.records
    assert (raised.levelname, missing.levelname) == ("ERROR", "ERROR")
    assert "RuntimeError: no database configured" in raised.getMessage()
    assert raised.exc_info is not None and "in helper" in "".join(traceback.format_exception(*raised.exc_info))
    assert "fwl_not_there" in missing.getMessage() and missing.exc_info is None
