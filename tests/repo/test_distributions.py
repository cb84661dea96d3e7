"""Every distribution builds an sdist and a wheel that pass ``twine check --strict``, ship the LICENSE and
say what they are; FastWorker's own distributions require each other within one 0.x minor, and a
dependency several of them share is asked for with one range everywhere.
"""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "client", "worker", "controlplane", "dashboard")


def pyproject(package: str) -> dict[str, object]:
    return tomllib.loads((ROOT / "packages" / f"fastworker-{package}" / "pyproject.toml").read_text())


def version_of(package: str) -> Version:
    text = (ROOT / "packages" / f"fastworker-{package}" / "src" / "fastworker" / package / "version.py").read_text()
    return Version(text.split('__version__ = "', 1)[1].split('"', 1)[0])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    for package in PACKAGES:
        done = subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out)],
            cwd=ROOT / "packages" / f"fastworker-{package}",
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_twine_check_strict_passes_for_every_sdist_and_wheel(built: Path) -> None:
    artifacts = sorted(str(p) for p in built.iterdir())
    assert len(artifacts) == 2 * len(PACKAGES), artifacts
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *artifacts], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_sdist_and_wheel_ships_the_license(built: Path) -> None:
    license_text = (ROOT / "LICENSE").read_text()
    for package in PACKAGES:
        assert (ROOT / "packages" / f"fastworker-{package}" / "LICENSE").read_text() == license_text, package
        (wheel,) = built.glob(f"fastworker_{package}-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
            assert len(names) == 1, archive.namelist()
            assert archive.read(names[0]).decode() == license_text
        (sdist,) = built.glob(f"fastworker_{package}-*.tar.gz")
        with tarfile.open(sdist) as archive:
            assert any(n.endswith("/LICENSE") and n.count("/") == 1 for n in archive.getnames()), archive.getnames()


def test_the_metadata_says_what_each_distribution_is(built: Path) -> None:
    for package in PACKAGES:
        (wheel,) = built.glob(f"fastworker_{package}-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            metadata = email.message_from_bytes(archive.read(name))
        classifiers = set(metadata.get_all("Classifier") or [])
        assert metadata["License-Expression"] == "MIT", package
        assert metadata["Requires-Python"] == ">=3.11", package
        assert {f"Programming Language :: Python :: 3.{minor}" for minor in (11, 12, 13)} <= classifiers, package
        assert "Typing :: Typed" in classifiers and any(c.startswith("Development Status ::") for c in classifiers)
        assert metadata["Description-Content-Type"] == "text/markdown", package
    controlplane = email.message_from_string(_metadata(built, "controlplane"))
    assert "Framework :: Pytest" in (controlplane.get_all("Classifier") or [])  # it ships a pytest plugin


def _metadata(built: Path, package: str) -> str:
    (wheel,) = built.glob(f"fastworker_{package}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name).decode()


def _requirements(package: str) -> list[Requirement]:
    project = pyproject(package)["project"]
    assert isinstance(project, dict)
    texts = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        texts += extra
    return [Requirement(text) for text in texts]


def test_siblings_are_required_within_one_0x_minor() -> None:
    for package in PACKAGES:
        for requirement in _requirements(package):
            if not requirement.name.startswith("fastworker-"):
                continue
            sibling = requirement.name.removeprefix("fastworker-")
            current = version_of(sibling)
            next_minor = Version(f"{current.major}.{current.minor + 1}.0")
            assert current in requirement.specifier, f"{package}: {requirement} refuses {sibling} {current}"
            assert next_minor not in requirement.specifier, (
                f"{package}: {requirement} would take {sibling} {next_minor}, a 0.x minor that may break it"
            )


def test_a_dependency_shared_by_several_distributions_has_one_range() -> None:
    ranges: dict[str, set[str]] = defaultdict(set)
    for package in PACKAGES:
        for requirement in _requirements(package):
            if not requirement.name.startswith("fastworker-"):
                ranges[requirement.name.lower()].add(str(requirement.specifier))
    differing = {name: sorted(specs) for name, specs in ranges.items() if len(specs) > 1}
    assert not differing, f"one range per shared dependency: {differing}"
