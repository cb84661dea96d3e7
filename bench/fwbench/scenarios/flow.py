"""What flow control costs names without limits (issue 16): ``delay_many`` while another name is held at its gate.

A limited name puts a gate in front of the queue, and every queue operation of every name then
looks at the gates. Each run measures ``delay_many`` of ``add`` three times on one control plane:
without a gate; while 1,000 ``limited`` tasks, given a rate limit of 1/s at run time, wait at
their gate; and without a gate again (backlog purged, limit cleared). It reports the gated
throughput against the mean of the other two, which bracket it, so that neither warm-up nor a
growing result cache favours one side. The report also compares the gated figure with the
``delay_many`` scenario of the same run when that ran.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastworker.client import Client, TaskLimits
from fastworker.controlplane.testing import RunningControlPlane
from fwbench.core import Metric, Options, scenario, submit_batches, throughput_run
from fwbench.scenarios.local import THROUGHPUT_DISPLAY, _cp
from fwbench.scenarios.workers import workers_only

#: The task of bench/tasks.py given a rate limit for the gated run (its definition has none).
LIMITED = "limited"
#: Its rate limit then: one start a second, a bucket of one.
RATE = "1/s"
#: Its tasks queued behind the gate before the gated run.
BACKLOG = 1_000

FLOW_DISPLAY = (
    *THROUGHPUT_DISPLAY,
    Metric("plain_e2e_tps", "same control plane, no gate, tasks/s"),
    Metric("ratio", "with the gate / without", ".3f"),
    Metric("gate_waiting_after", "still held at the gate after the run"),
)


async def _limits(client: Client) -> TaskLimits | None:
    return next((limits for limits in await client.limits() if limits.name == LIMITED), None)


async def _queue_backlog(client: Client, problems: list[str]) -> None:
    """Queue the backlog and wait (bounded) until the gate holds it: only the bucket's one token starts."""
    await client.delay_many([(LIMITED, (i,)) for i in range(BACKLOG)])
    deadline = time.monotonic() + 10
    while True:
        limits = await _limits(client)
        if limits is not None and limits.waiting >= BACKLOG - 2:
            return
        if time.monotonic() > deadline:
            problems.append(f"the backlog never waited at the gate (limits: {limits})")
            return
        await asyncio.sleep(0.01)


async def gated_throughput(cp: RunningControlPlane, opts: Options, workers: int) -> dict[str, Any]:
    """Plain, gated, plain again: the gated run's metrics, the plain mean and their ratio."""
    problems: list[str] = []
    before = await throughput_run(cp, opts, submit_batches, workers=workers)
    async with Client(cp.discovery) as client:
        if await _limits(client) is not None:
            problems.append(f"{LIMITED} has limits before the scenario gave it one: every run was gated")
        limits = await client.set_limits(LIMITED, rate_limit=RATE)
        if limits.rate_limit != RATE:
            problems.append(f"set_limits gave {LIMITED} {limits}")
        await _queue_backlog(client, problems)
    gated = await throughput_run(cp, opts, submit_batches, workers=workers)
    async with Client(cp.discovery) as client:
        limits = await _limits(client)
        waiting_after = limits.waiting if limits is not None else 0
        if waiting_after < BACKLOG - 2 - gated["total_s"] - 1:  # one start a second at most
            problems.append(f"the gate let {BACKLOG - waiting_after} of {BACKLOG} through during the run")
        purged = await client.purge("normal")
        if purged < waiting_after - 1:  # one more may have started meanwhile
            problems.append(f"purged {purged} tasks, {waiting_after} were held at the gate")
        await client.set_limits(LIMITED, clear=True)  # back to its definition's (none): the gate goes
        if await _limits(client) is not None:
            problems.append(f"{LIMITED} still has a gate after its limit was removed")
    after = await throughput_run(cp, opts, submit_batches, workers=workers)

    runs = (before, gated, after)
    plain_tps = (before["e2e_tps"] + after["e2e_tps"]) / 2
    result = dict(gated)
    result.update(
        {
            "valid": all(run["valid"] for run in runs) and not problems,
            "wrong": sum(run["wrong"] for run in runs),
            "lost": sum(run["lost"] for run in runs),
            "plain_e2e_tps": plain_tps,
            "plain_before_e2e_tps": before["e2e_tps"],
            "plain_after_e2e_tps": after["e2e_tps"],
            "plain_cp_cpu_us_per_task": _mean(before["cp_cpu_us_per_task"], after["cp_cpu_us_per_task"]),
            "ratio": gated["e2e_tps"] / plain_tps,
            "gate_waiting_after": waiting_after,
            "backlog": BACKLOG,
            "problems": problems
            + [
                f"{name}: {p}"
                for name, run in zip(("plain", "gated", "plain again"), runs, strict=True)
                for p in run["problems"]
            ],
        }
    )
    return result


def _mean(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a + b) / 2


@scenario(
    "flow_delay_many",
    f"as delay_many while {BACKLOG:,} tasks of a 1/s rate-limited name wait at their gate; "
    "against the same control plane without the gate (before and after); local slots",
    display=FLOW_DISPLAY,
)
async def flow_delay_many_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    return await gated_throughput(_cp(cp), opts, workers=0)


@scenario(
    "flow_workers2_delay_many",
    "as flow_delay_many, through 2 subworkers (local execution off)",
    display=FLOW_DISPLAY,
    controlplane_args=workers_only,
    default=False,
)
async def flow_workers2_delay_many_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    return await gated_throughput(_cp(cp), opts, workers=2)
