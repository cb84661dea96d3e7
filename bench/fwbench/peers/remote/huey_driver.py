"""Drives a Huey consumer through Redis; prints one JSON line. Runs inside the Huey venv.

Phases: warm-up (also waits for the consumer), throughput (enqueue ``--tasks`` add(i, i), then
wait for every result in order and check it), then ``--samples`` sequential round trips
(enqueue, blocking get) for p50/p99.
"""

import argparse
import json
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


def main(args):
    from huey_tasks import add, huey

    huey.flush()
    add(0, 0).get(blocking=True, timeout=30)  # the consumer is up
    for i in range(args.warmup):
        add(i, 1).get(blocking=True, timeout=10)
    out = {}
    t0 = time.perf_counter()
    handles = [add(i, i) for i in range(args.tasks)]
    t1 = time.perf_counter()
    correct = wrong = failed = 0
    for i, handle in enumerate(handles):
        try:
            value = handle.get(blocking=True, timeout=args.timeout)
        except Exception:
            failed += 1
            continue
        if value == 2 * i:
            correct += 1
        else:
            wrong += 1
    t2 = time.perf_counter()
    out.update(
        {
            "tasks": args.tasks,
            "correct": correct,
            "peer_wrong": wrong,
            "peer_failed": failed,
            "tps": args.tasks / (t2 - t0),
            "correct_tps": correct / (t2 - t0),
            "enqueue_tps": args.tasks / (t1 - t0),
        }
    )
    samples = []
    seq_wrong = 0
    t0 = time.perf_counter()
    for i in range(args.samples):
        started = time.perf_counter()
        value = add(i, 1).get(blocking=True, timeout=10)
        samples.append(time.perf_counter() - started)
        seq_wrong += value != i + 1
    elapsed = time.perf_counter() - t0
    ms = sorted(s * 1e3 for s in samples)
    out.update(
        {
            "samples": args.samples,
            "seq_wrong": seq_wrong,
            "sequential_tps": args.samples / elapsed,
            "p50_ms": percentile(ms, 50),
            "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99),
            "mean_ms": statistics.fmean(ms) if ms else float("nan"),
            "max_ms": ms[-1] if ms else float("nan"),
        }
    )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=120)
    sys.stdout.write(json.dumps(main(parser.parse_args())) + "\n")
