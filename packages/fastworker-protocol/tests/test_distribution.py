"""The installed distribution matches its source: version, namespace layout and declared dependencies."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import fastworker.protocol
from fastworker.protocol.version import __version__


def test_installed_metadata_reports_the_source_version() -> None:
    assert importlib.metadata.version("fastworker-protocol") == __version__ == fastworker.protocol.__version__


def test_fastworker_is_a_namespace_package_without_init() -> None:
    import fastworker

    assert getattr(fastworker, "__file__", None) is None
    assert not (Path(fastworker.protocol.__file__).parent.parent / "__init__.py").exists()


def test_package_ships_py_typed() -> None:
    assert (Path(fastworker.protocol.__file__).parent / "py.typed").is_file()
