"""The ``--ready-file`` every FastWorker daemon writes once it serves, and removes when it stops (docs/reference.md).

Private, and shared by FastWorker's own distributions only (the control plane, the subworker, the
dashboard; see ``SHARED_INTERNALS`` in ``scripts/check_layout.py``): no compatibility promise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path


def write_ready_file(path: str | os.PathLike[str], fields: Mapping[str, object]) -> None:
    """Write ``{"pid": <this process>, **fields}`` as JSON to ``path``, atomically: readers never see half a file."""
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), **fields}))
    os.replace(temporary, target)


def remove_ready_file(path: str | os.PathLike[str]) -> None:
    """Remove the ready file on the way out (no-op if it is already gone)."""
    Path(path).unlink(missing_ok=True)
