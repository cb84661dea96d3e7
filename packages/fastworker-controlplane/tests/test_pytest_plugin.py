"""The pytest plugin, as a user's project sees it: run pytest in a small project of its own (a subprocess).

Only eager mode here (no sockets); examples/testing_project exercises the fixtures that start a
real control plane and worker (run by tests/examples/test_testing_project.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PYPROJECT = """\
[tool.pytest.ini_options]
pythonpath = ["."]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
filterwarnings = ["error"]
{extra}
"""

TASKS = """\
from fastworker.client import task


@task(name="plugin_demo.add")
def add(x: int, y: int) -> int:
    return x + y


@task(name="plugin_demo.fail")
def fail() -> None:
    raise ValueError("nope")
"""

TESTS = """\
import pytest

from fastworker.client import TaskFailed, TaskState, current_client, set_default_sync_client
from plugin_demo_tasks import add, fail


async def test_typed_calls_run_eagerly(fastworker_eager):
    handle = await add.delay(2, 3)
    assert await handle.result() == 5
    assert current_client() is fastworker_eager
    assert [info.name for info in fastworker_eager.history] == ["plugin_demo.add"]


async def test_failures_raise_task_failed(fastworker_eager):
    with pytest.raises(TaskFailed, match="ValueError: nope"):
        await fail.submit()
    assert fastworker_eager.history[-1].state is TaskState.FAILURE


def test_sync_code_runs_eagerly_too(fastworker_eager):
    # A Flask view or a script calls delay_sync: in the test it runs here, never on a real control plane.
    assert add.delay_sync(4, 5).result() == 9
    assert add.submit_sync(1, 1) == 2
    assert [info.name for info in fastworker_eager.history] == ["plugin_demo.add"] * 2


def test_the_eager_client_is_only_the_default_during_the_test():
    with pytest.raises(Exception, match="no client"):
        current_client()
    assert set_default_sync_client(None) is None
"""


def _project(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(extra=extra))
    (tmp_path / "plugin_demo_tasks.py").write_text(TASKS)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_demo.py").write_text(TESTS)
    return tmp_path


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # `-p` by module name: a no-op where the entry point already loaded it (an installed control plane).
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "fastworker.controlplane.pytest_plugin", "-q", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=100,
    )


def test_eager_fixture_runs_the_configured_task_modules_in_process(tmp_path: Path) -> None:
    project = _project(tmp_path, 'fastworker_task_modules = ["plugin_demo_tasks"]')
    result = _pytest(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_eager_fixture_without_configured_modules_runs_every_imported_task(tmp_path: Path) -> None:
    result = _pytest(_project(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_the_controlplane_fixture_says_how_to_name_the_task_modules(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "tests" / "test_live.py").write_text("def test_live(fastworker_controlplane):\n    pass\n")
    result = _pytest(project, "tests/test_live.py")
    assert result.returncode == 1
    assert "FastWorker fixtures need your task modules" in result.stdout
    assert "fastworker_task_modules" in result.stdout


def test_the_fixtures_are_listed_and_nothing_else_changes(tmp_path: Path) -> None:
    project = _project(tmp_path)
    listing = _pytest(project, "--fixtures", "tests")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    for name in (
        "fastworker_controlplane",
        "fastworker_worker",
        "fastworker_client",
        "fastworker_sync_client",
        "fastworker_eager",
        "fastworker_task_modules",
    ):
        assert name in listing.stdout, name
    (project / "tests" / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    plain = _pytest(project, "tests/test_plain.py", "-p", "no:cacheprovider")
    assert plain.returncode == 0 and "1 passed" in plain.stdout, plain.stdout + plain.stderr
