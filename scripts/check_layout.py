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
from dataclasses import dataclass, field
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
    "fastworker.worker._stopsignals": "the signals both daemons answer (stop on TERM, INT, HUP; USR1/USR2 ignored)",
    "fastworker.worker._pid1": "the minimal init a daemon started as a container's PID 1 leaves behind (reaps orphans)",
    "fastworker.client._readyfile": "the --ready-file every daemon writes (control plane, subworker, dashboard)",
    "fastworker.client._progress": "where report_progress sends a task's progress: the runtimes bind it around each run",
    "fastworker.client._tracing": "OpenTelemetry send and process spans: the client opens one, each runtime the other",
    "fastworker.client._httplisten": "the hardened HTTP listener for /healthz (both daemons) and /metrics (the control plane)",
    "fastworker.client._hosts": "the Host rule of loopback HTTP listeners (DNS rebinding), for the dashboard and the daemons' listener",
    "fastworker.worker._stallwatch": "the watcher that names the code holding an event loop, for both daemons",
    "fastworker.client._eagersync": "the blocking face of an EagerClient, for Django's eager mode and EagerClient.sync",
    "fastworker.client._terminal": "text from tasks with its control characters escaped, for the CLI, fastworker-top and the web pages",
    "fastworker.worker._heap": "how both daemons run the garbage collector (startup's heap frozen, rarer young collections)",
}


def _python_files(folder: Path) -> Iterator[Path]:
    yield from (p for p in sorted(folder.rglob("*.py")) if ".tox" not in p.parts and "build" not in p.parts)


def namespace_violations(root: Path) -> list[str]:
    """Every ``fastworker/__init__.py`` (in src or anywhere in a package tree), which would shadow the namespace."""
    found = sorted((root / "packages").glob("*/**/fastworker/__init__.py"))
    return [f"{p.relative_to(root)}: breaks the PEP 420 namespace 'fastworker' (delete it)" for p in found]


@dataclass
class _Module:
    """What the checks need from one file, read in a single walk of its syntax tree."""

    imports: list[tuple[int, str, str]] = field(default_factory=list)  # (line, dotted name, local name or "")
    private_attributes: list[tuple[int, str, str]] = field(default_factory=list)  # (line, name, _attr)


def _scan(tree: ast.AST) -> _Module:
    found = _Module()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.imports += [(node.lineno, alias.name, alias.asname or "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.imports += [
                (node.lineno, f"{node.module}.{alias.name}", alias.asname or alias.name) for alias in node.names
            ]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _private(node.attr):
            found.private_attributes.append((node.lineno, node.value.id, node.attr))
    return found


def _modules(root: Path, problems: list[str]) -> Iterator[tuple[str, Path, _Module]]:
    """Every Python file of every distribution (src and tests), parsed once: (distribution, path, scan)."""
    for package_dir in sorted((root / "packages").glob("fastworker-*")):
        own = package_dir.name.removeprefix("fastworker-")
        if own not in ALLOWED_IMPORTS:
            problems.append(f"{package_dir.relative_to(root)}: unknown distribution; add it to ALLOWED_IMPORTS")
            continue
        for path in _python_files(package_dir):
            try:
                tree = ast.parse(path.read_text(), filename=str(path))
            except SyntaxError as exc:
                problems.append(f"{path.relative_to(root)}: cannot parse: {exc}")
                continue
            yield own, path, _scan(tree)


def _imported_fastworker_packages(module: _Module) -> Iterator[tuple[int, str]]:
    for lineno, dotted, _ in module.imports:
        parts = dotted.split(".")
        if parts[0] == "fastworker" and len(parts) > 1:
            yield lineno, parts[1]


def _layer_violations(root: Path, own: str, path: Path, module: _Module) -> Iterator[str]:
    """Imports of a fastworker subpackage that the file's distribution may not depend on."""
    allowed = ALLOWED_IMPORTS[own]
    for lineno, target in _imported_fastworker_packages(module):
        if target not in allowed:
            yield (
                f"{path.relative_to(root)}:{lineno}: fastworker-{own} must not import fastworker.{target} "
                f"(allowed: {', '.join(sorted(allowed))})"
            )


def _private(name: str) -> bool:
    """A leading underscore, but not a dunder (``__version__`` is public)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _foreign_private_uses(module: _Module, own: str) -> Iterator[tuple[int, str]]:
    """Private names of other fastworker distributions this module uses: (line, dotted name).

    ``import a.b`` binds no local name this check follows (``a`` is not foreign); ``import a.b as c``
    and ``from a import b`` bind ``c`` and ``b``.
    """
    bound: dict[str, str] = {}  # local name -> the foreign dotted name it stands for
    for lineno, dotted, local in module.imports:
        parts = dotted.split(".")
        if parts[0] != "fastworker" or len(parts) < 2 or parts[1] == own:
            continue
        if local:
            bound[local] = dotted
        if dotted in SHARED_INTERNALS:
            continue
        for depth in range(3, len(parts) + 1):
            if _private(parts[depth - 1]) and ".".join(parts[:depth]) not in SHARED_INTERNALS:
                yield lineno, dotted
                break
    for lineno, name, attr in module.private_attributes:
        imported = bound.get(name)
        if imported is not None:
            yield lineno, f"{imported}.{attr}"


def _shared_internals_exist(root: Path) -> Iterator[str]:
    for module in SHARED_INTERNALS:
        parts = module.split(".")
        source = root / "packages" / f"fastworker-{parts[1]}" / "src" / Path(*parts)
        if not (source.with_suffix(".py").is_file() or (source / "__init__.py").is_file()):
            yield f"scripts/check_layout.py: SHARED_INTERNALS names {module}, which does not exist"


def import_violations(root: Path) -> list[str]:
    """Imports against the layers, then uses of another distribution's private names (src and tests)."""
    problems: list[str] = []
    layers: list[str] = []
    privates: list[str] = list(_shared_internals_exist(root))
    for own, path, module in _modules(root, problems):
        layers += _layer_violations(root, own, path, module)
        privates += (
            f"{path.relative_to(root)}:{lineno}: fastworker-{own} uses the private name {name} "
            "(make it public, or move it to a module in SHARED_INTERNALS)"
            for lineno, name in _foreign_private_uses(module, own)
        )
    return problems + layers + privates


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    problems = namespace_violations(root) + import_violations(root)
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
