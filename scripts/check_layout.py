"""Check the monorepo's two structural rules; exit 1 with one line per violation.

1. ``fastworker`` is a PEP 420 namespace: no ``fastworker/__init__.py`` in any distribution.
2. Imports follow the layers protocol <- client <- worker <- controlplane, and dashboard -> client:
   a distribution imports only itself and the distributions below it.

Usage: python scripts/check_layout.py [REPO_ROOT]
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

#: For each distribution, the fastworker subpackages it may import (itself included).
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {
    "protocol": frozenset({"protocol"}),
    "client": frozenset({"protocol", "client"}),
    "worker": frozenset({"protocol", "client", "worker"}),
    "controlplane": frozenset({"protocol", "client", "worker", "controlplane"}),
    "dashboard": frozenset({"protocol", "client", "dashboard"}),
}


def _python_files(folder: Path) -> Iterator[Path]:
    yield from (p for p in sorted(folder.rglob("*.py")) if ".tox" not in p.parts and "build" not in p.parts)


def namespace_violations(root: Path) -> list[str]:
    """Every ``fastworker/__init__.py`` (in src or anywhere in a package tree), which would shadow the namespace."""
    found = sorted((root / "packages").glob("*/**/fastworker/__init__.py"))
    return [f"{p.relative_to(root)}: breaks the PEP 420 namespace 'fastworker' (delete it)" for p in found]


def _imported_fastworker_packages(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "fastworker":
                names = [f"fastworker.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "fastworker" and len(parts) > 1:
                yield node.lineno, parts[1]


def layer_violations(root: Path) -> list[str]:
    """Every import of a fastworker subpackage that its distribution may not depend on (src and tests)."""
    problems: list[str] = []
    for package_dir in sorted((root / "packages").glob("fastworker-*")):
        own = package_dir.name.removeprefix("fastworker-")
        allowed = ALLOWED_IMPORTS.get(own)
        if allowed is None:
            problems.append(f"{package_dir.relative_to(root)}: unknown distribution; add it to ALLOWED_IMPORTS")
            continue
        for path in _python_files(package_dir):
            try:
                tree = ast.parse(path.read_text(), filename=str(path))
            except SyntaxError as exc:
                problems.append(f"{path.relative_to(root)}: cannot parse: {exc}")
                continue
            for lineno, target in _imported_fastworker_packages(tree):
                if target not in allowed:
                    problems.append(
                        f"{path.relative_to(root)}:{lineno}: fastworker-{own} must not import fastworker.{target} "
                        f"(allowed: {', '.join(sorted(allowed))})"
                    )
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    problems = namespace_violations(root) + layer_violations(root)
    for line in problems:
        print(line)
    if not problems:
        print("layout ok: namespace has no __init__.py and every import follows the layers")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
