"""The installed distribution matches its source: version, namespace layout and declared dependencies."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import fastworker.controlplane
from fastworker.controlplane.version import __version__


def test_installed_metadata_reports_the_source_version() -> None:
    assert importlib.metadata.version("fastworker-controlplane") == __version__ == fastworker.controlplane.__version__


def test_fastworker_is_a_namespace_package_without_init() -> None:
    import fastworker

    assert getattr(fastworker, "__file__", None) is None
    assert not (Path(fastworker.controlplane.__file__).parent.parent / "__init__.py").exists()


def test_package_ships_py_typed() -> None:
    assert (Path(fastworker.controlplane.__file__).parent / "py.typed").is_file()


def test_the_pytest_plugin_is_registered_under_its_module_name() -> None:
    # The entry point's name is the module path, so that `-p fastworker.controlplane.pytest_plugin` or a
    # conftest's `pytest_plugins` naming it again is a no-op, not a second registration.
    (entry_point,) = [ep for ep in importlib.metadata.entry_points(group="pytest11") if "fastworker" in ep.value]
    assert entry_point.name == entry_point.value == "fastworker.controlplane.pytest_plugin"
    assert entry_point.dist is not None and entry_point.dist.name == "fastworker-controlplane"
