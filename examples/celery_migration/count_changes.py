"""Count the lines the port changes: every file of celery_version/ against the same path in fastworker_version/.

Usage: ``python examples/celery_migration/count_changes.py`` prints each changed file and the
totals; ``--check`` also fails unless README.md states the totals as printed.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEFORE, AFTER = HERE / "celery_version", HERE / "fastworker_version"
SKIP = {"__pycache__", ".pytest_cache"}


@dataclass
class Change:
    """One file's added and removed lines."""

    path: str
    added: int
    removed: int


def files(root: Path) -> dict[str, list[str]]:
    """The text files under root, by relative path, as lists of lines."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not SKIP & set(path.relative_to(root).parts):
            found[path.relative_to(root).as_posix()] = path.read_text().splitlines()
    return found


def changes() -> list[Change]:
    """Every file that differs between the two versions (added and deleted files included)."""
    before, after = files(BEFORE), files(AFTER)
    found = []
    for path in sorted(before.keys() | after.keys()):
        diff = list(difflib.unified_diff(before.get(path, []), after.get(path, []), n=0, lineterm=""))[2:]
        added = sum(1 for line in diff if line.startswith("+"))
        removed = sum(1 for line in diff if line.startswith("-"))
        if added or removed:
            found.append(Change(path, added, removed))
    return found


def summary(found: list[Change], where: str = "") -> str:
    """``N files changed, +A/-R lines`` over the changes whose path starts with where."""
    chosen = [change for change in found if change.path.startswith(where)]
    added, removed = sum(c.added for c in chosen), sum(c.removed for c in chosen)
    return f"{len(chosen)} files changed, +{added}/\u2212{removed} lines"


def main(argv: list[str]) -> int:
    found = changes()
    for change in found:
        print(f"{change.path:28} +{change.added:<3} \u2212{change.removed}")
    lines = {
        "the port": summary(found),
        "the app (shop/, Procfile, pyproject.toml)": summary([c for c in found if not c.path.startswith("tests/")]),
        "its tests (tests/)": summary(found, "tests/"),
    }
    for label, text in lines.items():
        print(f"{label}: {text}")
    if "--check" in argv:
        readme = (HERE / "README.md").read_text()
        missing = [f"{label}: {text}" for label, text in lines.items() if f"{label}: {text}" not in readme]
        if missing:
            print(f"README.md does not say: {missing}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
