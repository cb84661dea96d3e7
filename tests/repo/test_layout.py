"""The namespace, layer and private-name checks pass on this repo and fail when any rule is broken."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_layout.py"


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "packages", tmp_path / "packages", ignore=shutil.ignore_patterns(".tox", "__pycache__", "*.egg-info")
    )
    return tmp_path


def test_this_repository_passes_the_layout_check() -> None:
    result = _run(ROOT)
    assert result.returncode == 0, result.stdout
    assert "layout ok" in result.stdout


@pytest.mark.parametrize("package", ["protocol", "client", "dashboard"])
def test_a_namespace_init_in_any_package_fails_the_check(repo_copy: Path, package: str) -> None:
    (repo_copy / "packages" / f"fastworker-{package}" / "src" / "fastworker" / "__init__.py").write_text("")
    result = _run(repo_copy)
    assert result.returncode == 1
    assert f"fastworker-{package}/src/fastworker/__init__.py: breaks the PEP 420 namespace" in result.stdout


@pytest.mark.parametrize(
    ("package", "statement", "target"),
    [
        ("protocol", "import fastworker.client", "client"),
        ("client", "from fastworker.worker import executor", "worker"),
        ("client", "from fastworker import controlplane", "controlplane"),
        ("worker", "from fastworker.controlplane.queue import Queue", "controlplane"),
        ("dashboard", "import fastworker.controlplane.server as s", "controlplane"),
        ("dashboard", "from fastworker.worker import loader", "worker"),
    ],
)
def test_an_import_against_the_layers_fails_the_check(
    repo_copy: Path, package: str, statement: str, target: str
) -> None:
    bad = repo_copy / "packages" / f"fastworker-{package}" / "src" / "fastworker" / package / "bad_import.py"
    bad.write_text(f'"""Imports against the layer order."""\n\n{statement}\n')
    result = _run(repo_copy)
    assert result.returncode == 1
    assert f"fastworker-{package} must not import fastworker.{target}" in result.stdout


@pytest.mark.parametrize(
    ("package", "statement"),
    [
        ("client", "from fastworker.protocol import framing"),
        ("worker", "import fastworker.client"),
        ("controlplane", "from fastworker.worker import x"),
        ("dashboard", "from fastworker.client import Client"),
    ],
)
def test_imports_down_the_layers_are_allowed(repo_copy: Path, package: str, statement: str) -> None:
    ok = repo_copy / "packages" / f"fastworker-{package}" / "src" / "fastworker" / package / "ok_import.py"
    ok.write_text(f'"""Imports along the layer order."""\n\n{statement}\n')
    assert _run(repo_copy).returncode == 0


def test_a_bad_import_in_a_package_test_also_fails(repo_copy: Path) -> None:
    (repo_copy / "packages" / "fastworker-client" / "tests" / "test_bad.py").write_text("import fastworker.worker\n")
    assert _run(repo_copy).returncode == 1


# ------------------------------------------------------------------------------------------ private names


@pytest.mark.parametrize(
    ("package", "statement", "name"),
    [
        ("worker", "from fastworker.client._async import Client", "fastworker.client._async.Client"),
        ("controlplane", "from fastworker.client import _async", "fastworker.client._async"),
        ("controlplane", "import fastworker.worker._hidden", "fastworker.worker._hidden"),
        ("dashboard", "from fastworker.client.errors import _helper", "fastworker.client.errors._helper"),
        ("dashboard", "from fastworker.client._nng import _take_body", "fastworker.client._nng._take_body"),
        ("worker", "from fastworker.client import handles\n\nhandles._push(None)", "fastworker.client.handles._push"),
        ("controlplane", "from fastworker import worker\n\nworker._x", "fastworker.worker._x"),
    ],
)
def test_using_another_distributions_private_name_fails_the_check(
    repo_copy: Path, package: str, statement: str, name: str
) -> None:
    bad = repo_copy / "packages" / f"fastworker-{package}" / "src" / "fastworker" / package / "bad_private.py"
    bad.write_text(f'"""Uses a private name of another distribution."""\n\n{statement}\n')
    result = _run(repo_copy)
    assert result.returncode == 1
    assert f"fastworker-{package} uses the private name {name}" in result.stdout


def test_a_package_test_using_another_distributions_private_name_also_fails(repo_copy: Path) -> None:
    bad = repo_copy / "packages" / "fastworker-controlplane" / "tests" / "test_bad_private.py"
    bad.write_text("from fastworker.worker.executor import _text\n")
    result = _run(repo_copy)
    assert result.returncode == 1
    assert "fastworker-controlplane uses the private name fastworker.worker.executor._text" in result.stdout


@pytest.mark.parametrize(
    ("folder", "package", "statement"),
    [
        ("src", "client", "from fastworker.client._async import Client"),
        ("src", "worker", "from fastworker.client._transport import RequestChannel"),
        ("src", "controlplane", "from fastworker.client import _nng"),
        ("src", "dashboard", "from fastworker.client import __version__"),
        ("tests", "controlplane", "from fastworker.controlplane.journal import _frame"),
        ("tests", "worker", "from fastworker.client._readyfile import write_ready_file"),
    ],
)
def test_own_privates_shared_internals_and_dunders_are_allowed(
    repo_copy: Path, folder: str, package: str, statement: str
) -> None:
    distribution = repo_copy / "packages" / f"fastworker-{package}"
    ok = (distribution / "src" / "fastworker" / package if folder == "src" else distribution / "tests") / "ok_names.py"
    ok.write_text(f'"""Uses only names it may."""\n\n{statement}\n')
    result = _run(repo_copy)
    assert result.returncode == 0, result.stdout


def test_a_shared_internal_that_no_longer_exists_fails_the_check(repo_copy: Path) -> None:
    (repo_copy / "packages" / "fastworker-client" / "src" / "fastworker" / "client" / "_readyfile.py").unlink()
    result = _run(repo_copy)
    assert result.returncode == 1
    assert "SHARED_INTERNALS names fastworker.client._readyfile, which does not exist" in result.stdout
