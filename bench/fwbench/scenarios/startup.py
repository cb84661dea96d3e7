"""What an application pays to import the client: ``import fastworker.client`` in a fresh interpreter.

Each sample starts a new Python (the one running the bench) and times, inside it, the import
alone with ``time.perf_counter``: interpreter start-up is not counted. Bytecode is cached (in a
temporary ``-X pycache_prefix``, warmed by one untimed run of each statement, whatever
``PYTHONDONTWRITEBYTECODE`` says) as it is for an installed package: compiling the sources on
every start would be most of the figure otherwise. Three figures, each the median of the
samples: the bare package import (what ``from fastworker.client import task`` in a module of task
definitions costs), the import of ``Client`` (what code that submits needs: the transport, the wire
protocol, asyncio), and ``SyncClient``. The samples alternate so that a busy moment of the machine
hits all three alike.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from fwbench.core import Metric, Options, scenario

#: Statement timed in a fresh interpreter -> the metric it feeds.
IMPORTS = {
    "import_ms": "import fastworker.client",
    "client_import_ms": "from fastworker.client import Client",
    "sync_client_import_ms": "from fastworker.client import SyncClient",
}
SAMPLES, QUICK_SAMPLES = 21, 3

_PROBE = """
import time
started = time.perf_counter()
{statement}
print(time.perf_counter() - started)
"""


def _time_once(statement: str, pycache: str) -> float:
    """Milliseconds that ``statement`` took in a fresh interpreter (bytecode cached under ``pycache``)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-X", f"pycache_prefix={pycache}", "-c", _PROBE.format(statement=statement)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    return float(done.stdout.strip()) * 1000


@scenario(
    "import_time",
    "milliseconds to import the client in a fresh interpreter (start-up excluded; median of the samples)",
    display=(
        Metric("import_ms", "import fastworker.client, ms", ".1f"),
        Metric("client_import_ms", "from fastworker.client import Client, ms", ".1f"),
        Metric("sync_client_import_ms", "from fastworker.client import SyncClient, ms", ".1f"),
    ),
    needs_controlplane=False,
)
async def import_time(cp: object, opts: Options) -> dict[str, Any]:
    samples: dict[str, list[float]] = {metric: [] for metric in IMPORTS}
    with tempfile.TemporaryDirectory(prefix="fastworker-bench-pycache-") as pycache:
        for statement in IMPORTS.values():
            await asyncio.to_thread(_time_once, statement, pycache)  # writes the bytecode
        for _ in range(QUICK_SAMPLES if opts.quick else SAMPLES):
            for metric, statement in IMPORTS.items():
                samples[metric].append(await asyncio.to_thread(_time_once, statement, pycache))
    result: dict[str, Any] = {metric: statistics.median(values) for metric, values in samples.items()}
    result.update(valid=True, wrong=0, lost=0, samples=len(samples["import_ms"]))
    return result
