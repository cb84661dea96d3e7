"""LoopWakeup: sets from any thread become callbacks on the loop, coalesced, and nothing queued is missed."""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from fastworker.controlplane.wakeup import LoopWakeup


async def test_sets_from_threads_reach_the_loop_and_every_queued_item_is_seen() -> None:
    loop = asyncio.get_running_loop()
    queued: deque[int] = deque()
    seen: list[int] = []
    calls: list[int] = []
    loop_thread = threading.get_ident()
    threads_seen: set[int] = set()
    done = asyncio.Event()
    total = 4 * 5_000

    def drain() -> None:
        threads_seen.add(threading.get_ident())
        calls.append(len(queued))
        while queued:
            seen.append(queued.popleft())
        if len(seen) == total:
            done.set()

    wakeup = LoopWakeup(loop, drain)

    def produce(base: int) -> None:
        for i in range(5_000):
            queued.append(base + i)  # queued before set(): the callback that follows must see it
            wakeup.set()

    threads = [threading.Thread(target=produce, args=(k * 5_000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    await asyncio.wait_for(done.wait(), timeout=30)
    for thread in threads:
        thread.join()
    wakeup.close()
    assert sorted(seen) == list(range(total))
    assert threads_seen == {loop_thread}
    assert len(calls) < total  # coalesced: far fewer callbacks than sets


async def test_a_set_before_the_callback_runs_is_one_call() -> None:
    calls: list[None] = []
    wakeup = LoopWakeup(asyncio.get_running_loop(), lambda: calls.append(None))
    for _ in range(10):
        wakeup.set()
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert len(calls) == 1
    wakeup.set()  # after the callback ran: a new call
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert len(calls) == 2
    wakeup.close()


async def test_set_after_close_does_nothing() -> None:
    calls: list[None] = []
    wakeup = LoopWakeup(asyncio.get_running_loop(), lambda: calls.append(None))
    wakeup.close()
    wakeup.close()  # twice is harmless
    thread = threading.Thread(target=wakeup.set)
    thread.start()
    thread.join()
    await asyncio.sleep(0.05)
    assert calls == []
