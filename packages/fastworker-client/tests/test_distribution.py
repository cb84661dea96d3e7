"""The installed distribution matches its source: version, namespace layout and declared dependencies."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import fastworker.client
from fastworker.client.version import __version__


def test_installed_metadata_reports_the_source_version() -> None:
    assert importlib.metadata.version("fastworker-client") == __version__ == fastworker.client.__version__


def test_fastworker_is_a_namespace_package_without_init() -> None:
    import fastworker

    assert getattr(fastworker, "__file__", None) is None
    assert not (Path(fastworker.client.__file__).parent.parent / "__init__.py").exists()


def test_package_ships_py_typed() -> None:
    assert (Path(fastworker.client.__file__).parent / "py.typed").is_file()


def test_fastapi_is_an_optional_extra() -> None:
    metadata = importlib.metadata.metadata("fastworker-client")
    assert "fastapi" in (metadata.get_all("Provides-Extra") or [])
    required = [r for r in (metadata.get_all("Requires-Dist") or []) if "extra ==" not in r]
    assert not any(r.startswith("fastapi") for r in required)
