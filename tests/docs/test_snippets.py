"""Every ``python`` code block of docs/*.md and of README.md's Quickstart runs here, so the docs cannot drift from the API.

The conventions (also in docs/README.md):

- Blocks of one document run in order, in one namespace, as in ``python -m asyncio``: top-level
  ``await`` and ``async with`` work.
- A block whose first line is ``# name.py`` (or ``# pkg/name.py``, ``# pyproject.toml``: any
  language) is a file, not code to run: it is written into the document's own folder (first on
  ``sys.path`` and on the control plane's PYTHONPATH), and every such ``.py`` file that defines
  ``@task`` functions is a task module of the document's control plane. Files named ``test_*.py``
  are run with pytest there, after the other blocks (the pytest plugin's own documentation).
- Each document gets a fresh control plane (free loopback ports, stopped by pid at the end);
  ``FASTWORKER_CONTROL_PLANE`` points at it, so ``Client()`` finds it as it would find the default
  one. HTML comments configure it: ``<!-- snippets: controlplane --local-concurrency 0 -->`` adds
  flags, ``<!-- snippets: worker -->`` starts a subworker with the task modules first, and
  ``<!-- snippets: dashboard -->`` serves the web dashboard on a free port, its ``HOST:PORT`` in
  ``FASTWORKER_DASHBOARD_ADDRESS``.
- A block marked ```` ```python no-run ```` is shown but not run: kept for fragments that cannot run
  on their own (each one says why next to it).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import handles, set_default_client, set_default_sync_client
from fastworker.client.task import default_registry
from fastworker.controlplane.testing import RunningControlPlane, RunningWorker, start_controlplane, start_worker

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
FILE_HEADER = re.compile(r"^# (?P<path>[\w/.-]+\.(?:py|toml|ini|cfg|txt))\s*$")
DIRECTIVE = re.compile(r"<!--\s*snippets:\s*(?P<what>\w+)(?P<args>[^>]*?)\s*-->")


@dataclass
class Snippet:
    """One ``python`` block: where it is, and whether it is a file to write or code to run."""

    source: str
    line: int
    path: str | None = None  # set for file blocks

    @property
    def module(self) -> str:
        assert self.path is not None
        return self.path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


@dataclass
class Document:
    """A markdown document's runnable content and the control plane it asks for."""

    name: str
    snippets: list[Snippet]
    controlplane_args: list[str] = field(default_factory=list)
    worker: bool = False
    dashboard: bool = False
    skipped: int = 0

    @property
    def files(self) -> list[Snippet]:
        return [s for s in self.snippets if s.path is not None]

    @property
    def task_modules(self) -> list[str]:
        return [s.module for s in self.files if s.path.endswith(".py") and "@task" in s.source]  # type: ignore[union-attr]

    @property
    def test_files(self) -> list[str]:
        return [s.path for s in self.files if Path(s.path).name.startswith("test_")]  # type: ignore[arg-type]


def parse(name: str, text: str) -> Document:
    """Split a markdown text into its python snippets and snippet directives."""
    document = Document(name, [])
    for match in DIRECTIVE.finditer(text):
        if match["what"] == "controlplane":
            document.controlplane_args += shlex.split(match["args"])
        elif match["what"] == "worker":
            document.worker = True
        elif match["what"] == "dashboard":
            document.dashboard = True
        else:
            raise ValueError(f"{name}: unknown snippets directive {match['what']!r}")
    for match in FENCE.finditer(text):
        info = match["info"].split()
        body = match["body"]
        line = text.count("\n", 0, match.start()) + 2
        header = FILE_HEADER.match(body.splitlines()[0]) if body.strip() else None
        if header is not None:
            document.snippets.append(Snippet(body, line, header["path"]))
            continue
        if not info or info[0] not in ("python", "py"):
            continue
        if "no-run" in info[1:]:
            document.skipped += 1
            continue
        document.snippets.append(Snippet(body, line))
    return document


def readme_quickstart() -> str:
    """README.md's "Quickstart" section (up to the next second-level heading)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Quickstart")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


DOCUMENTS = [parse(f"docs/{path.name}", path.read_text()) for path in DOCS] + [
    parse("README.md#quickstart", readme_quickstart())
]


def test_every_guide_has_runnable_snippets_and_no_run_blocks_stay_rare() -> None:
    names = {doc.name for doc in DOCUMENTS}
    for guide in (
        "tasks",
        "clients",
        "fastapi",
        "testing",
        "subworkers",
        "priorities",
        "retries-and-time-limits",
        "scheduling",
        "dashboard",
        "security",
        "operations",
        "performance",
    ):
        assert f"docs/{guide}.md" in names, guide
    for doc in DOCUMENTS:
        runnable = [s for s in doc.snippets if s.path is None]
        if doc.name != "docs/README.md":
            assert runnable, f"{doc.name} has no runnable python snippet"
        assert doc.skipped <= 2, f"{doc.name}: {doc.skipped} no-run blocks; keep them rare"


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder for one document's files, first on sys.path; task registrations and modules are undone after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for key in [key for key in os.environ if key.startswith("FASTWORKER_")]:
        monkeypatch.delenv(key)
    registered = {tf.name: tf for tf in default_registry}
    modules_before = set(sys.modules)
    previous_default = set_default_client(None)
    previous_sync_default = set_default_sync_client(None)
    try:
        yield tmp_path
    finally:
        set_default_client(previous_default)
        set_default_sync_client(previous_sync_default)
        # `add.delay_sync(...)` made a SyncClient from this document's FASTWORKER_CONTROL_PLANE:
        # the next document has a control plane of its own.
        handles._close_environment_sync_client()
        for name in set(sys.modules) - modules_before:
            module = sys.modules[name]
            if str(getattr(module, "__file__", "") or "").startswith(str(tmp_path)):
                del sys.modules[name]
        for tf in list(default_registry):
            if registered.get(tf.name) is not tf:
                default_registry.unregister(tf.name)
        for name, tf in registered.items():
            if name not in default_registry:
                default_registry.register(tf)


def _pytest(folder: Path, test_file: str) -> None:
    """Run one documented test file with pytest in the document's folder (its own config applies)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "fastworker.controlplane.pytest_plugin", "-p", "no:cacheprovider"]
        + [test_file],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, f"pytest {test_file} failed:\n{result.stdout}\n{result.stderr}"


async def _run(snippet: Snippet, namespace: dict[str, Any], filename: str) -> None:
    code = compile("\n" * (snippet.line - 1) + snippet.source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:  # top-level await: async code, run on the loop
        await eval(code, namespace)  # the documentation's own code
    else:  # sync code runs where users run it: on a thread with no event loop (a SyncClient refuses one)
        await asyncio.to_thread(eval, code, namespace)


@pytest.mark.parametrize("document", DOCUMENTS, ids=[doc.name for doc in DOCUMENTS])
async def test_snippets_run(document: Document, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runnable = [s for s in document.snippets if s.path is None]
    if not runnable:
        return  # an index page: nothing to run (checked above for the guides)
    for snippet in document.files:
        target = isolated / snippet.path  # type: ignore[operator]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(snippet.source)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(isolated), os.environ.get("PYTHONPATH")]))}
    started: list[RunningControlPlane | RunningWorker] = []
    try:
        control_plane = start_controlplane(
            task_modules=document.task_modules,
            extra_args=document.controlplane_args,
            env=env,
            workdir=isolated,
            dashboard=document.dashboard,
        )
        started.append(control_plane)
        if document.dashboard:
            assert control_plane.dashboard, "the dashboard was not served (is fastworker-dashboard installed?)"
            monkeypatch.setenv("FASTWORKER_DASHBOARD_ADDRESS", control_plane.dashboard.removeprefix("http://"))
        if document.worker:
            started.append(
                start_worker(
                    control_plane.discovery,
                    task_modules=document.task_modules,
                    worker_id="docs-worker",
                    env=env,
                    workdir=isolated,
                )
            )
        monkeypatch.setenv("FASTWORKER_CONTROL_PLANE", control_plane.discovery)
        namespace: dict[str, Any] = {"__name__": "__main__"}
        filename = str(ROOT / document.name.split("#")[0])
        for snippet in runnable:
            await _run(snippet, namespace, filename)
        for test_file in document.test_files:
            _pytest(isolated, test_file)
    finally:
        for daemon in reversed(started):
            daemon.stop()
        for daemon in started:
            print(f"---- {daemon.argv[2]} pid {daemon.pid} ----\n{daemon.log()}")  # shown when the test failed
