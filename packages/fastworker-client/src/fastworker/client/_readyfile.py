"""The ``--ready-file`` every FastWorker daemon writes once it serves, and removes when it stops (docs/reference.md).

Private, and shared by FastWorker's own distributions only (the control plane, the subworker, the
dashboard; see ``SHARED_INTERNALS`` in ``scripts/check_layout.py``): no compatibility promise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path


def ready_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a ready file could not be written at ``path`` (checked at start, before serving), or None."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        return f"{os.fspath(path)} is a folder"
    if not folder.is_dir():
        return f"cannot write {os.fspath(path)}: its folder {os.fspath(folder)} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write {os.fspath(path)}: its folder {os.fspath(folder)} is not writable"
    return None


def check_ready_file(path: str | os.PathLike[str] | None) -> None:
    """Refuse (``ValueError`` naming ``--ready-file``) a ready file that could not be written; None: no file.

    Raises:
        ValueError: see :func:`ready_file_problem`.
    """
    if path is not None and (problem := ready_file_problem(path)) is not None:
        raise ValueError(f"--ready-file: {problem}")


def write_ready_file(path: str | os.PathLike[str], fields: Mapping[str, object]) -> None:
    """Write ``{"pid": <this process>, **fields}`` as JSON to ``path``, atomically: readers never see half a file.

    Raises:
        OSError: it could not be written; the message names ``path`` (not the temporary file beside it).
    """
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    try:
        temporary.write_text(json.dumps({"pid": os.getpid(), **fields}))
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write the ready file {os.fspath(path)}: {exc.strerror or exc}") from None


def remove_ready_file(path: str | os.PathLike[str]) -> None:
    """Remove a stale ready file before serving: a killed predecessor's must not say this process serves."""
    Path(path).unlink(missing_ok=True)


def remove_own_ready_file(path: str | os.PathLike[str]) -> None:
    """Remove the ready file on the way out, if it is still this process's (no-op otherwise).

    A successor started on the same path while this one drained has written its own by then: it
    must stay, or whatever waits on it thinks the successor stopped.
    """
    target = Path(path)
    try:
        written = json.loads(target.read_text())
    except (OSError, ValueError):
        return  # gone already, or not one we wrote
    if isinstance(written, dict) and written.get("pid") == os.getpid():
        target.unlink(missing_ok=True)
