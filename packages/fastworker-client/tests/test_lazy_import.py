"""``import fastworker.client`` loads what defines tasks; what submits them loads on first use.

Each check runs in a fresh interpreter: this process has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fastworker.client

#: Loaded only once something submits (or uses the canvas, SyncClient's thread, progress).
DEFERRED = (
    "asyncio",
    "pynng",
    "ssl",
    "argparse",
    "fastworker.client._async",
    "fastworker.client._sync",
    "fastworker.client._transport",
    "fastworker.client._progress",
    "fastworker.client.workflows",
)


def loaded_after(statement: str) -> set[str]:
    """The modules in ``sys.modules`` after running ``statement`` in a fresh interpreter."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(done.stdout))


def test_importing_the_package_or_the_task_decorator_loads_none_of_the_submit_path() -> None:
    for statement in ("import fastworker.client", "from fastworker.client import task, TaskInfo, TaskFailed"):
        loaded = loaded_after(statement)
        assert "fastworker.client.task" in loaded
        assert not loaded & set(DEFERRED), (statement, sorted(loaded & set(DEFERRED)))


def test_importing_client_loads_the_transport_but_not_the_canvas_or_the_sync_thread() -> None:
    loaded = loaded_after("from fastworker.client import Client")
    assert {"asyncio", "pynng", "fastworker.client._async", "fastworker.client._transport"} <= loaded
    assert not loaded & {"fastworker.client.workflows", "fastworker.client._sync", "argparse"}


@pytest.mark.parametrize("name", ["Client", "SyncClient", "report_progress", "chain", "Signature", "WorkflowInfo"])
def test_every_lazy_name_resolves_to_its_defining_object_and_is_listed(name: str) -> None:
    value = getattr(fastworker.client, name)
    assert value.__name__ == name
    assert name in dir(fastworker.client) and name in fastworker.client.__all__


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="Clinet"):
        fastworker.client.Clinet  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError, match="Clinet"):
        exec("from fastworker.client import Clinet", {})


def test_a_signature_made_before_the_canvas_was_imported_is_a_full_signature() -> None:
    code = (
        "from fastworker.client import task\n"
        "@task(name='lazy.add')\n"
        "def add(a, b): return a + b\n"
        "step = add.s(1, 2)\n"
        "from fastworker.client.workflows import Signature\n"
        "assert isinstance(step, Signature) and step.name == 'lazy.add' and step.args == (1, 2), step\n"
        "assert add.si(3, 4).immutable and add.with_options(priority='high').s(5).options.priority is not None\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
