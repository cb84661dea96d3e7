"""What a workflow costs over plain submissions (issue 16): a wide group and a long chain, local slots.

``workflow_group`` runs one group of ``--batch-size`` (1,000) ``add(i, i)`` and compares it with
one ``delay_many`` batch of the same tasks on the same control plane: plain, group (waited for
with ``handle.result()``, as users do), group again (waited for with ``client.results`` over its
step ids: the control plane's own cost without the handle's way of waiting), plain again. The
plain runs bracket the group runs so that warm-up and a growing result cache favour neither.

``workflow_chain`` runs 10-step chains (``add.s(0, 1)`` then nine ``add.s(1)``: result 10) one
after another and compares the time per step with a sequential ``submit`` round trip measured
in the same run: a chain step costs a release in the control plane instead of a client round
trip.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastworker.client import Client, FastworkerError, chain, group, signature
from fastworker.controlplane.testing import RunningControlPlane
from fwbench.core import Metric, Options, latency_summary, per_task_us, scenario, short
from fwbench.procs import process_cpu_seconds
from fwbench.scenarios.local import _cp

#: Steps of the chain scenario.
CHAIN_STEPS = 10


def _chains(opts: Options) -> int:
    """Chains per run: a twentieth of the latency samples (100 by default), at least 10."""
    return max(10, opts.samples // 20)


async def _timed(
    cp: RunningControlPlane, run: Callable[[], Awaitable[tuple[list[Any], list[str]]]]
) -> tuple[float, float | None, list[Any], list[str]]:
    """Run one phase: (seconds, control-plane CPU seconds or None, its values, its problems)."""
    cpu0 = process_cpu_seconds(cp.pid)
    t0 = time.perf_counter()
    values, problems = await run()
    elapsed = time.perf_counter() - t0
    cpu1 = process_cpu_seconds(cp.pid)
    return elapsed, (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None, values, problems


GROUP_DISPLAY = (
    Metric("group_result_ms", "group: submit → result, ms", ",.1f"),
    Metric("group_us_per_step", "group to its result, µs/step", ",.1f"),
    Metric("group_final_us_per_step", "group to every step final, µs/step", ",.1f"),
    Metric("plain_us_per_task", "delay_many + results, µs/task", ",.1f"),
    Metric("overhead_us_per_step", "group − plain, µs/step", ",.1f"),
    Metric("group_cp_cpu_us_per_step", "group, control plane CPU µs/step", ",.1f"),
    Metric("plain_cp_cpu_us_per_task", "plain, control plane CPU µs/task", ",.1f"),
)


@scenario(
    "workflow_group",
    "one group of --batch-size add(i, i) (1,000) to its result, against one delay_many batch + results "
    "of the same tasks on the same control plane; local slots",
    display=GROUP_DISPLAY,
)
async def workflow_group_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    control_plane = _cp(cp)
    n = max(1, opts.batch_size)
    expected = [2 * i for i in range(n)]
    timeout = opts.wait_timeout
    async with Client(control_plane.discovery) as client:

        async def plain() -> tuple[list[Any], list[str]]:
            ids = await client.delay_many([("add", (i, i), {}) for i in range(n)])
            return await client.results(ids, timeout=timeout), []

        async def grouped() -> tuple[list[Any], list[str]]:
            handle = await group([signature("add", (i, i)) for i in range(n)]).delay()
            return await handle.result(timeout=timeout), []

        async def grouped_steps() -> tuple[list[Any], list[str]]:
            handle = await group([signature("add", (i, i)) for i in range(n)]).delay()
            return await client.results(list(handle.task_ids), timeout=timeout), []

        # Warm-up: one small run of each path, so connections and code paths are ready.
        await client.results(await client.delay_many([("add", (i, i), {}) for i in range(10)]), timeout=timeout)
        await (await group([signature("add", (i, i)) for i in range(10)]).delay()).result(timeout=timeout)

        phases: dict[str, tuple[float, float | None]] = {}
        problems: list[str] = []
        wrong = lost = 0
        for name, run in (("plain", plain), ("group", grouped), ("group_steps", grouped_steps), ("plain2", plain)):
            try:
                seconds, cpu, values, found = await _timed(control_plane, run)
            except FastworkerError as exc:
                lost += n
                problems.append(f"{name}: {short(exc)}")
                continue
            phases[name] = (seconds, cpu)
            problems += found
            bad = sum(1 for got, want in zip(values, expected, strict=False) if got != want) + abs(len(values) - n)
            if bad:
                wrong += bad
                problems.append(f"{name}: {bad} of {n} results wrong")

    def us(name: str) -> float | None:
        return phases[name][0] / n * 1e6 if name in phases else None

    def cpu_us(name: str) -> float | None:
        cpu = phases[name][1] if name in phases else None
        return per_task_us(0.0, cpu, n)

    plain_us = _mean(us("plain"), us("plain2"))
    group_us = us("group")
    return {
        "valid": wrong == 0 and lost == 0 and len(phases) == 4,
        "wrong": wrong,
        "lost": lost,
        "tasks": n,
        "group_result_ms": phases["group"][0] * 1e3 if "group" in phases else None,
        "group_us_per_step": group_us,
        "group_final_us_per_step": us("group_steps"),
        "plain_us_per_task": plain_us,
        "overhead_us_per_step": group_us - plain_us if group_us is not None and plain_us is not None else None,
        "group_cp_cpu_us_per_step": _mean(cpu_us("group"), cpu_us("group_steps")),
        "plain_cp_cpu_us_per_task": _mean(cpu_us("plain"), cpu_us("plain2")),
        "problems": problems,
    }


CHAIN_DISPLAY = (
    Metric("chain_p50_ms", f"{CHAIN_STEPS}-step chain: submit → result, p50 ms", ".2f"),
    Metric("chain_p99_ms", "chain p99, ms", ".2f"),
    Metric("step_p50_ms", "per step, p50 ms", ".3f"),
    Metric("submit_p50_ms", "one submit round trip, p50 ms", ".3f"),
    Metric("step_vs_submit", "per step / submit round trip", ".2f"),
    Metric("cp_cpu_us_per_step", "control plane CPU, µs/step", ",.1f"),
)


@scenario(
    "workflow_chain",
    f"{CHAIN_STEPS}-step chains of add, one after another, submit → result; against sequential submit "
    "round trips in the same run; local slots",
    display=CHAIN_DISPLAY,
)
async def workflow_chain_scenario(cp: RunningControlPlane | None, opts: Options) -> dict[str, Any]:
    control_plane = _cp(cp)
    chains = _chains(opts)
    workflow = chain(signature("add", (0, 1)), *(signature("add", (1,)) for _ in range(CHAIN_STEPS - 1)))
    problems: list[str] = []
    wrong = lost = 0
    chain_times: list[float] = []
    submit_times: list[float] = []
    async with Client(control_plane.discovery) as client:
        for i in range(max(1, opts.warmup // 10)):
            await (await workflow.delay()).result(timeout=10)
            await client.submit("add", i, 1, timeout=10)
        cpu0 = process_cpu_seconds(control_plane.pid)
        for i in range(chains):
            started = time.perf_counter()
            try:
                value = await (await workflow.delay()).result(timeout=opts.wait_timeout)
            except FastworkerError as exc:
                lost += 1
                if len(problems) < 10:
                    problems.append(f"chain {i}: {short(exc)}")
                continue
            chain_times.append(time.perf_counter() - started)
            if value != CHAIN_STEPS:
                wrong += 1
                if len(problems) < 10:
                    problems.append(f"chain {i}: got {value!r}, expected {CHAIN_STEPS}")
        cpu1 = process_cpu_seconds(control_plane.pid)
        for i in range(chains * CHAIN_STEPS):  # as many round trips as chain steps
            started = time.perf_counter()
            try:
                value = await client.submit("add", i, 1, timeout=10)
            except FastworkerError as exc:
                lost += 1
                if len(problems) < 10:
                    problems.append(f"submit {i}: {short(exc)}")
                continue
            submit_times.append(time.perf_counter() - started)
            if value != i + 1:
                wrong += 1
    chain_summary = latency_summary(chain_times)
    submit_summary = latency_summary(submit_times)
    step_p50 = chain_summary["p50_ms"] / CHAIN_STEPS
    return {
        "valid": wrong == 0 and lost == 0,
        "wrong": wrong,
        "lost": lost,
        "chains": chains,
        "steps": CHAIN_STEPS,
        "chain_p50_ms": chain_summary["p50_ms"],
        "chain_p99_ms": chain_summary["p99_ms"],
        "chain_mean_ms": chain_summary["mean_ms"],
        "step_p50_ms": step_p50,
        "submit_p50_ms": submit_summary["p50_ms"],
        "submit_p99_ms": submit_summary["p99_ms"],
        "step_vs_submit": step_p50 / submit_summary["p50_ms"] if submit_times else None,
        "cp_cpu_us_per_step": per_task_us(cpu0, cpu1, chains * CHAIN_STEPS),
        "problems": problems,
    }


def _mean(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return (a + b) / 2
