"""Runs waiting for a pool slot: oldest first, cancellable before and right after the hand-over, failed at close."""

from __future__ import annotations

import asyncio

import pytest

from fastworker.worker.slotwait import SlotWaiters


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_slots_go_to_the_oldest_waiting_run_and_none_waits_when_all_are_served() -> None:
    released: list[str] = []
    waiters: SlotWaiters[str] = SlotWaiters(released.append)
    first = asyncio.ensure_future(waiters.wait("a"))
    second = asyncio.ensure_future(waiters.wait("b"))
    await settle()
    assert "a" in waiters and "b" in waiters

    assert waiters.hand("slot-1") and waiters.hand("slot-2")
    assert await first == "slot-1" and await second == "slot-2"
    assert not waiters.hand("slot-3")  # nobody waits: the pool keeps it idle
    assert "a" not in waiters and released == []


async def test_a_run_cancelled_while_waiting_gets_none_and_its_turn_passes_on() -> None:
    waiters: SlotWaiters[str] = SlotWaiters(lambda slot: None)
    cancelled = asyncio.ensure_future(waiters.wait("a"))
    later = asyncio.ensure_future(waiters.wait("b"))
    await settle()

    assert waiters.cancel("a") is True
    assert await cancelled is None
    assert waiters.hand("slot") and await later == "slot"
    assert waiters.cancel("a") is None  # not waiting any more


async def test_a_cancel_after_the_hand_over_is_remembered_for_the_run_to_give_the_slot_back() -> None:
    waiters: SlotWaiters[str] = SlotWaiters(lambda slot: None)
    run = asyncio.ensure_future(waiters.wait("a"))
    await settle()
    waiters.hand("slot")  # handed over; the run has not resumed yet
    assert waiters.cancel("a") is True

    assert await run == "slot"
    assert waiters.cancelled_after_hand_over("a") is True
    assert waiters.cancelled_after_hand_over("a") is False  # asking cleared it


async def test_a_caller_cancelled_after_the_hand_over_gives_the_slot_back() -> None:
    released: list[str] = []
    waiters: SlotWaiters[str] = SlotWaiters(released.append)
    run = asyncio.ensure_future(waiters.wait("a"))
    await settle()
    waiters.hand("slot")
    run.cancel()  # before it resumed

    with pytest.raises(asyncio.CancelledError):
        await run
    assert released == ["slot"] and "a" not in waiters
    assert waiters.cancel("a") is None


async def test_closing_fails_every_waiting_run() -> None:
    waiters: SlotWaiters[str] = SlotWaiters(lambda slot: None)
    runs = [asyncio.ensure_future(waiters.wait(task)) for task in ("a", "b")]
    await settle()

    waiters.fail_all(RuntimeError("the pool is closed"))

    for run in runs:
        with pytest.raises(RuntimeError, match="closed"):
            await run
    assert not waiters.hand("slot")
