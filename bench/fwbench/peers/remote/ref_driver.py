"""Drives the reference implementation's control plane with its own client; prints one JSON line.

Runs inside the reference venv (Python 3.12, PyPI fastworker 0.3.0). Its client opens a new
Req0 socket per request and its control plane answers concurrent requests on one shared Rep0
socket, so concurrent replies get crossed: only results whose value is right count as correct.

Phases: discovery (its client waits 2 s), warm-up, ``--tasks`` sequential ``submit_task`` round
trips (one at a time); then two concurrent attempts, each request with a ``--timeout`` and no
retry, counting correct, wrong (another task's result) and failed results: ``--callers``
coroutines each sending one request at a time for ``--seconds`` (a closed loop), and a burst of
``--concurrent`` requests all at once (asyncio.gather).
"""

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time


def percentile(values, q):
    if not values:
        return float("nan")
    pos = (len(values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)


async def closed_loop(client, args):
    """``--callers`` coroutines, each sending one request at a time until ``--seconds`` passed."""
    from fastworker.tasks.models import TaskStatus

    counts = {"correct": 0, "wrong": 0, "failed": 0}
    deadline = time.perf_counter() + args.seconds

    async def caller(index):
        i = 0
        while time.perf_counter() < deadline:
            x = 2_000_000 + index * 100_000 + i
            i += 1
            try:
                result = await client.submit_task("add", (x, 1))
            except Exception:
                counts["failed"] += 1
                continue
            if result.status != TaskStatus.SUCCESS:
                counts["failed"] += 1
            elif result.result == x + 1:
                counts["correct"] += 1
            else:
                counts["wrong"] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(args.callers)))
    elapsed = time.perf_counter() - t0
    return {
        "callers": args.callers,
        "callers_correct": counts["correct"],
        "callers_wrong": counts["wrong"],
        "callers_failed": counts["failed"],
        "callers_s": elapsed,
        "callers_correct_tps": counts["correct"] / elapsed,
    }


async def burst(client, args):
    """``--concurrent`` requests at once (asyncio.gather)."""
    from fastworker.tasks.models import TaskStatus

    base = 1_000_000
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(client.submit_task("add", (i, base)) for i in range(args.concurrent)), return_exceptions=True
    )
    elapsed = time.perf_counter() - t0
    correct = wrong = failed = 0
    for i, result in enumerate(results):
        if isinstance(result, BaseException) or result.status != TaskStatus.SUCCESS:
            failed += 1
        elif result.result == i + base:
            correct += 1
        else:
            wrong += 1
    return {
        "concurrent_tasks": args.concurrent,
        "concurrent_correct": correct,
        "concurrent_wrong": wrong,
        "concurrent_failed": failed,
        "concurrent_s": elapsed,
        "concurrent_correct_tps": correct / elapsed,
    }


async def main(args):
    from fastworker.clients.client import Client
    from fastworker.tasks.models import TaskStatus

    # The client reads retries=0 as "unset" and falls back to the environment, so set both.
    os.environ["FASTWORKER_RETRIES"] = "0"
    client = Client(discovery_address=args.discovery, timeout=args.timeout, retries=0)
    client.retries = 0
    await client.start()
    out = {"discovered": len(client.workers)}
    try:
        if not client.workers:
            out["error"] = "the client discovered no control plane"
            return out
        for i in range(args.warmup):
            await client.submit_task("add", (i, 1))
        samples, correct, wrong, failed = [], 0, 0, 0
        t0 = time.perf_counter()
        for i in range(args.tasks):
            started = time.perf_counter()
            result = await client.submit_task("add", (i, 1))
            samples.append(time.perf_counter() - started)
            if result.status == TaskStatus.SUCCESS and result.result == i + 1:
                correct += 1
            elif result.status == TaskStatus.SUCCESS:
                wrong += 1
            else:
                failed += 1
        elapsed = time.perf_counter() - t0
        ms = sorted(s * 1e3 for s in samples)
        out.update(
            {
                "seq_tasks": args.tasks,
                "seq_correct": correct,
                "seq_wrong": wrong,
                "seq_failed": failed,
                "sequential_tps": args.tasks / elapsed,
                "sequential_correct_tps": correct / elapsed,
                "p50_ms": percentile(ms, 50),
                "p90_ms": percentile(ms, 90),
                "p99_ms": percentile(ms, 99),
                "mean_ms": statistics.fmean(ms) if ms else float("nan"),
                "max_ms": ms[-1] if ms else float("nan"),
            }
        )
        if args.callers:
            out.update(await closed_loop(client, args))
        if args.concurrent:
            out.update(await burst(client, args))
    finally:
        client.stop()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--discovery", required=True)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=int, default=5)
    logging.disable(logging.CRITICAL)
    result = asyncio.run(main(parser.parse_args()))
    sys.stdout.write(json.dumps(result) + "\n")
