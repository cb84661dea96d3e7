"""One client process of the multi-process test: submits ``count`` squares concurrently and checks them.

Usage: ``python fwtests_submitter.py DISCOVERY_ADDRESS FIRST COUNT``. Submits ``fwtests.square(n)``
for n in ``[FIRST, FIRST + COUNT)`` from one asyncio Client (an ``asyncio.gather`` of ``delay``
calls), waits for every result, and prints one JSON object with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import sys

from fastworker.client import Client, TaskState


async def submit_and_check(address: str, first: int, count: int) -> dict[str, int]:
    arguments = range(first, first + count)
    async with Client(address) as client:
        ids = await asyncio.gather(*(client.delay("fwtests.square", n) for n in arguments))
        infos = await client.wait_many(ids, timeout=60)
    correct = wrong = lost = 0
    for n, task_id, info in zip(arguments, ids, infos, strict=True):
        if info.id != task_id or info.state is not TaskState.SUCCESS:
            lost += 1
        elif info.result == n * n:
            correct += 1
        else:
            wrong += 1
    return {"submitted": len(ids), "distinct_ids": len(set(ids)), "correct": correct, "wrong": wrong, "lost": lost}


def main() -> None:
    address, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(submit_and_check(address, first, count))))


if __name__ == "__main__":
    main()
