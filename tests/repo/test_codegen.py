"""Drift between proto/ and the committed generated code cannot go unnoticed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "codegen.py"
PACKAGE_SRC = ROOT / "packages" / "fastworker-protocol" / "src"
ENVELOPE = Path("fastworker/protocol/v1/envelope.proto")


def _check(proto_dir: Path, package_src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--proto-dir", str(proto_dir), "--package-src", str(package_src)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copies(tmp_path: Path) -> tuple[Path, Path]:
    proto = tmp_path / "proto"
    src = tmp_path / "src"
    shutil.copytree(ROOT / "proto", proto)
    shutil.copytree(PACKAGE_SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    return proto, src


def test_committed_generated_code_matches_the_proto_sources() -> None:
    result = _check(ROOT / "proto", PACKAGE_SRC)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_proto_edited_without_regenerating_fails_the_check(copies: tuple[Path, Path]) -> None:
    proto, src = copies
    path = proto / ENVELOPE
    path.write_text(
        path.read_text().replace("message Ack {}", "message Ack {\n  // Added without codegen.\n  bool ok = 1;\n}")
    )
    result = _check(proto, src)
    assert result.returncode == 1
    assert "run `tox -e codegen`" in result.stdout
    assert "envelope_pb2.py" in result.stdout


def test_a_comment_only_proto_edit_also_fails_the_check(copies: tuple[Path, Path]) -> None:
    proto, src = copies
    path = proto / ENVELOPE
    path.write_text(path.read_text() + "\n// trailing comment\n")
    result = _check(proto, src)
    assert result.returncode == 1
    assert "_proto_digest.py" in result.stdout


def test_a_hand_edited_generated_file_fails_the_check(copies: tuple[Path, Path]) -> None:
    proto, src = copies
    stub = src / "fastworker/protocol/v1/task_pb2.pyi"
    stub.write_text(stub.read_text() + "\n# hand edit\n")
    assert _check(proto, src).returncode == 1


def test_a_new_proto_without_generated_code_fails_the_check(copies: tuple[Path, Path]) -> None:
    proto, src = copies
    (proto / "fastworker/protocol/v1/extra.proto").write_text(
        'syntax = "proto3";\npackage fastworker.protocol.v1;\n// A new message.\nmessage Extra {}\n'
    )
    result = _check(proto, src)
    assert result.returncode == 1
    assert "missing generated file: extra_pb2.py" in result.stdout
