"""LoopWakeup: sets from any thread become callbacks on the loop, coalesced, nothing queued is missed, and busy threads let the loop run."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

from fastworker.controlplane.wakeup import LoopWakeup

BOUND = 10.0


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


async def test_a_thread_lets_a_loop_that_has_not_served_its_wakeup_run_first() -> None:
    # Given a wake-up asked for while the loop is busy (this coroutine blocks it)
    calls: list[float] = []
    wakeup = LoopWakeup(asyncio.get_running_loop(), lambda: calls.append(time.monotonic()))
    returned: list[tuple[float, int]] = []

    def slot() -> None:
        wakeup.set()
        wakeup.let_loop_run(after=0.0, timeout=BOUND)  # pending for longer than 0 s: wait for the loop
        returned.append((time.monotonic(), len(calls)))

    thread = threading.Thread(target=slot)
    thread.start()
    time.sleep(0.2)  # the loop is busy: the thread waits for it
    assert returned == []

    # When the loop is free again
    await asyncio.to_thread(thread.join, BOUND)

    # Then the thread went on only once the callback had run
    assert not thread.is_alive()
    assert calls and returned and returned[0][1] == 1 and returned[0][0] >= calls[0]
    wakeup.close()


async def test_a_thread_does_not_wait_without_a_pending_wakeup_or_past_its_timeout() -> None:
    wakeup = LoopWakeup(asyncio.get_running_loop(), lambda: None)
    # Nothing asked for: no wait at all, whatever the timeout
    thread = threading.Thread(target=wakeup.let_loop_run, args=(0.0, 3600.0))
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive()

    # Asked for, and the loop never gets to it while the thread waits: the timeout ends the wait
    def slot() -> None:
        wakeup.set()
        wakeup.let_loop_run(0.0, 0.05)

    thread = threading.Thread(target=slot)
    thread.start()
    thread.join(BOUND)  # blocks the loop: it cannot serve the wake-up meanwhile
    assert not thread.is_alive()
    wakeup.close()
