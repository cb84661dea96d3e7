"""The --ready-file every daemon writes once it serves and removes when it stops (``fastworker.client._readyfile``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fastworker.client._readyfile import (
    ready_file_problem,
    remove_own_ready_file,
    remove_ready_file,
    write_ready_file,
)


def test_a_stopping_process_removes_its_own_ready_file_but_not_its_successors(tmp_path: Path) -> None:
    # A control plane draining while its successor started on the same --ready-file removed the
    # successor's file on its way out: whatever waited on it thought the new one had stopped.
    ready = tmp_path / "ready.json"
    write_ready_file(ready, {"worker_id": "w1"})
    assert json.loads(ready.read_text()) == {"pid": os.getpid(), "worker_id": "w1"}
    ready.write_text(json.dumps({"pid": os.getpid() + 1, "worker_id": "w1"}))  # the successor's
    remove_own_ready_file(ready)
    assert ready.exists()
    ready.write_text("not json")
    remove_own_ready_file(ready)
    assert ready.exists()
    remove_ready_file(ready)  # at start: whoever wrote it, it says nothing true any more
    assert not ready.exists()
    remove_own_ready_file(ready)  # gone: nothing to do
    write_ready_file(ready, {})
    remove_own_ready_file(ready)
    assert not ready.exists()


def test_a_ready_file_that_cannot_be_written_is_named_with_its_folder(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "ready.json"
    assert ready_file_problem(missing) == f"cannot write {missing}: its folder {missing.parent} does not exist"
    assert ready_file_problem(tmp_path) == f"{tmp_path} is a folder"
    assert ready_file_problem(tmp_path / "ready.json") is None
    with pytest.raises(OSError, match=f"cannot write the ready file {missing}"):
        write_ready_file(missing, {})
