"""Check the monorepo's three structural rules; exit 1 with one line per violation.

1. ``fastworker`` is a PEP 420 namespace: no ``fastworker/__init__.py`` in any distribution.
2. Imports follow the layers protocol <- client <- worker <- controlplane, and dashboard -> client:
   a distribution imports only itself and the distributions below it.
3. A distribution uses no private name of another one: no module path component and no imported
   name with a leading underscore, and no ``_attribute`` of a name imported from it. Internals
   that several distributions share live in the private modules listed in ``SHARED_INTERNALS``
   (their public names are the shared surface; they carry no compatibility promise to users).
   A package's tests may use the privates of their own package.

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

#: The private modules that other FastWorker distributions may import, and why each is shared.
SHARED_INTERNALS: dict[str, str] = {
    "fastworker.client._nng": "the raw nng calls pynng does not wrap, for the client's and the control plane's transports",
    "fastworker.client._transport": "request channels and subscriptions, for the client and the subworker's link",
    "fastworker.client._requester": "request/reply with retries and typed errors, for the client and the subworker",
    "fastworker.client._background": "keeping background tasks alive and ending them, for the client and the subworker",
    "fastworker.client._readyfile": "the --ready-file every daemon writes (control plane, subworker, dashboard)",
    "fastworker.client._progress": "where report_progress sends a task's progress: the runtimes bind it around each run",
    "fastworker.client._tracing": "OpenTelemetry send and process spans: the client opens one, each runtime the other",
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


def _private(name: str) -> bool:
    """A leading underscore, but not a dunder (``__version__`` is public)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _foreign_private_uses(tree: ast.AST, own: str) -> Iterator[tuple[int, str]]:
    """Private names of other fastworker distributions this module uses: (line, dotted name)."""
    bound: dict[str, str] = {}  # local name -> the foreign dotted name it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name, alias.asname or "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [(f"{node.module}.{alias.name}", alias.asname or alias.name) for alias in node.names]
        else:
            continue
        for dotted, local in targets:
            parts = dotted.split(".")
            if parts[0] != "fastworker" or len(parts) < 2 or parts[1] == own:
                continue
            if local:
                bound[local] = dotted
            if dotted in SHARED_INTERNALS:
                continue
            for depth in range(3, len(parts) + 1):
                if _private(parts[depth - 1]) and ".".join(parts[:depth]) not in SHARED_INTERNALS:
                    yield node.lineno, dotted
                    break
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _private(node.attr):
            imported = bound.get(node.value.id)
            if imported is not None:
                yield node.lineno, f"{imported}.{node.attr}"


def private_violations(root: Path) -> list[str]:
    """Every use of another distribution's private name outside ``SHARED_INTERNALS`` (src and tests)."""
    problems: list[str] = []
    for module in SHARED_INTERNALS:
        parts = module.split(".")
        source = root / "packages" / f"fastworker-{parts[1]}" / "src" / Path(*parts)
        if not (source.with_suffix(".py").is_file() or (source / "__init__.py").is_file()):
            problems.append(f"scripts/check_layout.py: SHARED_INTERNALS names {module}, which does not exist")
    for package_dir in sorted((root / "packages").glob("fastworker-*")):
        own = package_dir.name.removeprefix("fastworker-")
        for path in _python_files(package_dir):
            try:
                tree = ast.parse(path.read_text(), filename=str(path))
            except SyntaxError:
                continue  # reported by layer_violations
            for lineno, name in _foreign_private_uses(tree, own):
                problems.append(
                    f"{path.relative_to(root)}:{lineno}: fastworker-{own} uses the private name {name} "
                    "(make it public, or move it to a module in SHARED_INTERNALS)"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    problems = namespace_violations(root) + layer_violations(root) + private_violations(root)
    for line in problems:
        print(line)
    if not problems:
        print(
            "layout ok: namespace has no __init__.py, every import follows the layers, "
            "and no distribution uses another's private names"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
