"""The local-slot workloads (a)-(c) again with the control plane's journal on (``--journal``, issue 10).

Each run journals into a fresh file in a temporary directory (removed when the bench exits), so
every acknowledged submission and every result is fdatasynced (group commit) before its reply.
Compare with ``delay``, ``delay_many`` and ``submit_latency`` of the same run: the issue asks for
at least half of the journal-off throughput with batched submission. ``journal_delay_many`` runs by
default; ``journal_delay`` and ``journal_submit_latency`` on request (``--scenarios``).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastworker.controlplane.testing import RunningControlPlane
from fwbench.core import (
    Options,
    Target,
    latency_run,
    scenario,
    submit_batches,
    submit_individually,
    throughput_run,
)
from fwbench.scenarios.local import LATENCY_DISPLAY, THROUGHPUT_DISPLAY, _cp

_DIRECTORY = Path(tempfile.mkdtemp(prefix="fastworker-bench-journal-"))
atexit.register(shutil.rmtree, _DIRECTORY, True)
_runs = 0


def with_journal(opts: Options) -> list[str]:
    """A fresh journal file for every run."""
    global _runs
    _runs += 1
    return ["--journal", str(_DIRECTORY / f"run-{_runs}.journal")]


@scenario(
    "journal_delay",
    "as delay, with --journal (every acknowledged submission and result fdatasynced first)",
    display=THROUGHPUT_DISPLAY,
    targets=[Target("e2e_tps", ">=", 2_500, "≥ 2,500 (half of delay's)")],
    controlplane_args=with_journal,
    default=False,
)
async def journal_delay_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    return await throughput_run(_cp(cp), opts, submit_individually)


@scenario(
    "journal_delay_many",
    "as delay_many, with --journal",
    display=THROUGHPUT_DISPLAY,
    targets=[Target("e2e_tps", ">=", 10_000, "≥ 10,000 (half of delay_many's)")],
    controlplane_args=with_journal,
)
async def journal_delay_many_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    return await throughput_run(_cp(cp), opts, submit_batches)


@scenario(
    "journal_submit_latency",
    "as submit_latency, with --journal (each round trip waits for its result's fdatasync)",
    display=LATENCY_DISPLAY,
    controlplane_args=with_journal,
    default=False,
)
async def journal_submit_latency_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    return await latency_run(_cp(cp), opts)
