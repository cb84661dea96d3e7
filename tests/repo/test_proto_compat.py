"""A wire-breaking or unlinted proto change fails ``buf lint`` / ``buf breaking`` as buf.yaml configures them (issue 17).

Each test edits a copy of proto/ (with buf.yaml beside it) and checks it against a baseline that
buf builds from the unedited copy, so the cases keep their meaning as the committed baseline moves
on from release to release; one test checks the real tree against the committed baseline. buf comes
from the ``buf-bin`` wheel (tox -e proto); a missing buf fails these tests, it never skips them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "proto" / "released" / "fastworker-protocol-v1.binpb"
ADMIN = "proto/fastworker/protocol/v1/admin.proto"
TASK = "proto/fastworker/protocol/v1/task.proto"
PAUSED = "  // True while dispatch of this level is paused (a level is paused in every queue).\n  bool paused = 4;\n"


def buf(workspace: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    """Run buf in a workspace (a folder holding buf.yaml and proto/): exit code and its findings."""
    executable = shutil.which("buf")
    assert executable is not None, "buf is not on PATH: install the buf-bin wheel (tox -e proto does)"
    done = subprocess.run(
        [executable, *args, "--error-format", "json"], cwd=workspace, capture_output=True, text=True, timeout=120
    )
    findings = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode in (0, 100), done.stderr  # 100: findings; anything else: buf itself failed
    return done.returncode, findings


def breaking(workspace: Path, baseline: Path) -> list[dict[str, Any]]:
    code, findings = buf(workspace, "breaking", "--against", str(baseline))
    assert (code == 0) == (not findings)
    return findings


def lint(workspace: Path) -> list[dict[str, Any]]:
    code, findings = buf(workspace, "lint")
    assert (code == 0) == (not findings)
    return findings


def rules(findings: list[dict[str, Any]]) -> set[str]:
    return {finding["type"] for finding in findings}


def _edit(workspace: Path, rel: str, old: str, new: str) -> None:
    path = workspace / rel
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {rel}"
    path.write_text(text.replace(old, new))


def _copy(target: Path) -> Path:
    target.mkdir()
    shutil.copy(ROOT / "buf.yaml", target / "buf.yaml")
    shutil.copytree(ROOT / "proto", target / "proto", ignore=shutil.ignore_patterns("released"))
    return target


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline of today's proto/, built as a release would build it."""
    workspace = _copy(tmp_path_factory.mktemp("release") / "tree")
    baseline = workspace.parent / "v1.binpb"
    code, _ = buf(workspace, "build", "--exclude-source-info", "-o", str(baseline))
    assert code == 0 and baseline.stat().st_size > 0
    return baseline


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return _copy(tmp_path / "tree")


def test_the_current_tree_is_lint_clean_and_breaks_nothing_of_the_committed_baseline() -> None:
    assert lint(ROOT) == []
    assert breaking(ROOT, BASELINE) == []


def test_a_renumbered_field_fails_naming_it(workspace: Path, released: Path) -> None:
    _edit(workspace, ADMIN, "uint32 depth = 2;", "uint32 depth = 20;")
    findings = breaking(workspace, released)
    assert "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED" in rules(findings)
    assert all(finding["path"] == ADMIN for finding in findings)
    assert any('field "2" with name "depth" on message "QueueInfo"' in finding["message"] for finding in findings)


def test_an_added_field_passes(workspace: Path, released: Path) -> None:
    _edit(
        workspace, ADMIN, PAUSED, PAUSED + "  // Tasks that waited longest, by id.\n  repeated string oldest_ids = 7;\n"
    )
    assert breaking(workspace, released) == []
    assert lint(workspace) == []


def test_a_removed_field_fails_unless_its_number_and_name_are_reserved(workspace: Path, released: Path) -> None:
    _edit(workspace, ADMIN, PAUSED, "")
    assert {"FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", "FIELD_NO_DELETE_UNLESS_NAME_RESERVED"} <= rules(
        breaking(workspace, released)
    )

    # JSON peers read the name: reserving the number alone is not enough
    _edit(workspace, ADMIN, "  double oldest_age = 3;\n", "  double oldest_age = 3;\n  reserved 4;\n")
    assert rules(breaking(workspace, released)) == {"FIELD_NO_DELETE_UNLESS_NAME_RESERVED"}

    _edit(workspace, ADMIN, "  reserved 4;\n", '  reserved 4;\n  reserved "paused";\n')
    assert breaking(workspace, released) == []


@pytest.mark.parametrize(
    ("path", "old", "new", "rule"),
    [
        (ADMIN, "uint32 depth = 2;", "string depth = 2;", "FIELD_WIRE_JSON_COMPATIBLE_TYPE"),
        (ADMIN, "uint32 pid = 3;", "int32 pid = 3;", "FIELD_SAME_TYPE"),
        (ADMIN, "uint32 depth = 2;", "optional uint32 depth = 2;", "FIELD_SAME_CARDINALITY"),
        (
            ADMIN,
            "repeated string task_names = 11;",
            "string task_names = 11;",
            "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY",
        ),
        (ADMIN, "uint32 depth = 2;", "uint32 waiting = 2;", "FIELD_SAME_JSON_NAME"),
        (TASK, "PRIORITY_LOW = 4;", "PRIORITY_LOW = 5;", "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED"),
        (TASK, "  reserved 16;\n", "", "RESERVED_MESSAGE_NO_DELETE"),
    ],
    ids=["type", "uint32-to-int32", "optional-added", "repeated-dropped", "renamed", "enum-renumbered", "unreserved"],
)
def test_a_change_peers_or_the_python_api_would_notice_fails(
    workspace: Path, released: Path, path: str, old: str, new: str, rule: str
) -> None:
    _edit(workspace, path, old, new)
    assert rule in rules(breaking(workspace, released))


def test_a_camel_case_field_fails_lint_and_breaks_nothing(workspace: Path, released: Path) -> None:
    _edit(
        workspace, ADMIN, PAUSED, PAUSED + "  // Age of the oldest task, in milliseconds.\n  uint64 oldestAgeMs = 7;\n"
    )
    findings = lint(workspace)
    assert rules(findings) == {"FIELD_LOWER_SNAKE_CASE"}
    assert "oldestAgeMs" in findings[0]["message"] and findings[0]["path"] == ADMIN
    assert breaking(workspace, released) == []


def test_the_zero_value_exception_covers_task_proto_only(workspace: Path) -> None:
    (workspace / "proto/fastworker/protocol/v1/extra.proto").write_text(
        'syntax = "proto3";\n\npackage fastworker.protocol.v1;\n\n// A shade.\nenum Shade {\n'
        "  // None.\n  SHADE_NONE = 0;\n}\n"
    )
    findings = lint(workspace)
    assert rules(findings) == {"ENUM_ZERO_VALUE_SUFFIX"}
    assert [finding["path"] for finding in findings] == ["proto/fastworker/protocol/v1/extra.proto"]


def test_an_inline_ignore_comment_is_refused(workspace: Path) -> None:
    """Exceptions live in buf.yaml, where a reviewer sees them all."""
    _edit(
        workspace,
        ADMIN,
        PAUSED,
        PAUSED + "  // Age in milliseconds.\n  // buf:lint:ignore FIELD_LOWER_SNAKE_CASE\n  uint64 oldestAgeMs = 7;\n",
    )
    assert rules(lint(workspace)) == {"FIELD_LOWER_SNAKE_CASE"}
