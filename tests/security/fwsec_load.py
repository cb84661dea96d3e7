"""A steady load for the fault-injection tests: one client process submitting ``fwsec.record`` tasks.

Usage::

    python fwsec_load.py DISCOVERY OUTDIR --count N [--rate PER_SECOND] [--prefix P] [--seed S]
                         [--max-seconds S] [--batch-every K] [--batch-size B]

Task ids are ``PREFIX-NNNNN`` (chosen here, so a task the control plane accepted is traceable
whatever happens to this process). Before a submission is sent its ids are appended to
``OUTDIR/sending.log``; once the control plane accepted them, ``ID TIME`` lines go to
``OUTDIR/accepted.log`` (unbuffered appends: a kill -9 loses nothing already written). A refused
or unanswered submission is re-sent under the same ids (idempotent by task id) until accepted
or 60 s passed (then ``failed.log``). Each task sleeps a random 0..``--max-seconds`` and records
its completion in ``OUTDIR/done``. Exits 0 after printing a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path

from fastworker.client import Client, FastworkerError

GIVE_UP_AFTER = 60.0


class Log:
    """An append-only line log written with one unbuffered write per entry."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, lines: list[str]) -> None:
        os.write(self._fd, "".join(line + "\n" for line in lines).encode())


async def submit(client: Client, calls: list[tuple[str, tuple[object, ...]]], ids: list[str]) -> None:
    """Submit the calls under the given ids, one by one or as one batch."""
    if len(ids) == 1:
        await client.send(calls[0][0], calls[0][1], task_id=ids[0])
        return
    # delay_many has no task_id option: the batch goes through send() calls gathered together,
    # which the client coalesces into batch envelopes on the wire.
    await asyncio.gather(*(client.send(name, args, task_id=i) for (name, args), i in zip(calls, ids, strict=True)))


async def run(args: argparse.Namespace) -> dict[str, object]:
    out = Path(args.outdir)
    done = out / "done"
    done.mkdir(parents=True, exist_ok=True)
    sending, accepted, failed = Log(out / "sending.log"), Log(out / "accepted.log"), Log(out / "failed.log")
    rng = random.Random(args.seed)
    durations = [0.0, 0.0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    durations = [d for d in durations if d <= args.max_seconds] or [0.0]
    counts = {"accepted": 0, "resent": 0, "failed": 0}
    started = time.monotonic()
    async with Client(args.discovery, connect_timeout=30, request_timeout=5) as client:
        index = step = 0
        while index < args.count:
            step += 1
            size = args.batch_size if args.batch_every and step % args.batch_every == 0 else 1
            size = min(size, args.count - index)
            ids = [f"{args.prefix}-{n:05d}" for n in range(index, index + size)]
            calls = [("fwsec.record", (task_id, str(done), rng.choice(durations))) for task_id in ids]
            index += size
            sending.write(ids)
            deadline = time.monotonic() + GIVE_UP_AFTER
            while True:
                try:
                    await submit(client, calls, ids)
                except FastworkerError as exc:
                    if time.monotonic() > deadline:
                        failed.write([f"{task_id} {type(exc).__name__}: {exc}" for task_id in ids])
                        counts["failed"] += len(ids)
                        break
                    counts["resent"] += len(ids)
                    await asyncio.sleep(0.1)
                    continue
                now = time.time()
                accepted.write([f"{task_id} {now:.6f}" for task_id in ids])
                counts["accepted"] += len(ids)
                break
            if args.rate:
                pause = started + index / args.rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
    return {**counts, "seconds": round(time.monotonic() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("discovery")
    parser.add_argument("outdir")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="tasks per second (0: as fast as it can)")
    parser.add_argument("--prefix", default="t")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--max-seconds", type=float, default=0.2)
    parser.add_argument("--batch-every", type=int, default=0, help="every K-th submission is a batch of --batch-size")
    parser.add_argument("--batch-size", type=int, default=20)
    print(json.dumps(asyncio.run(run(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
