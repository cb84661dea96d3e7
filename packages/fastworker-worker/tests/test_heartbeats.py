"""How often a worker heartbeats: every interval, unless its work requests keep its lease fresh."""

from __future__ import annotations

import asyncio
import time

from fastworker.client.task import TaskRegistry
from fastworker.protocol.v1 import worker_pb2
from fastworker.worker.runtime import QUIET_BEATS, Worker, WorkerSettings


class CountingLink:
    """The part of ControlPlaneLink the heartbeat loop uses: its latest answered request was sent ``age`` s ago.

    A worker polling with a hold of one interval has ``age`` between one and two intervals.
    """

    def __init__(self, age: float) -> None:
        self.age = age
        self.beats = 0

    @property
    def last_contact(self) -> float:
        return time.monotonic() - self.age

    async def heartbeat(self, beat: worker_pb2.Heartbeat) -> None:
        self.beats += 1


async def beats_in(link: CountingLink, *, interval: float, timeout: float, checks: int, polling: bool = True) -> int:
    """Heartbeats sent over ``checks`` intervals; ``polling``: a work request is out all along."""
    worker = Worker(WorkerSettings(task_modules=()), TaskRegistry())
    worker.heartbeat_interval, worker.heartbeat_timeout = interval, timeout
    worker._link = link  # type: ignore[assignment]
    worker._registered.set()
    worker._pulling = polling
    loop = asyncio.create_task(worker._heartbeat_loop())
    await asyncio.sleep(interval * (checks + 0.5))
    loop.cancel()
    return link.beats


async def test_while_work_requests_keep_the_lease_fresh_one_check_in_quiet_beats_sends_a_heartbeat() -> None:
    beats = await beats_in(CountingLink(age=0.05), interval=0.05, timeout=5.0, checks=2 * QUIET_BEATS)
    assert 2 <= beats <= 4  # 10 checks: the 1st, the 6th (and the 11th, if timer jitter brings it in)


async def test_the_first_check_after_registering_sends_a_heartbeat_so_its_figures_show_at_once() -> None:
    # Its RSS and counts ride on heartbeats only: `fastworker workers` showed 0 bytes for 5 intervals.
    beats = await beats_in(CountingLink(age=0.05), interval=0.1, timeout=5.0, checks=1)
    assert beats == 1


async def test_a_stale_lease_gets_a_heartbeat_at_every_check() -> None:
    beats = await beats_in(CountingLink(age=3600), interval=0.05, timeout=5.0, checks=10)
    assert beats >= 8


async def test_a_short_heartbeat_timeout_gets_a_heartbeat_at_every_check_even_with_fresh_requests() -> None:
    # interval 0.05, timeout 0.15: the fence falls 0.075 s after the send, before the next check could
    # come for a request sent an interval ago
    beats = await beats_in(CountingLink(age=0.05), interval=0.05, timeout=0.15, checks=10)
    assert beats >= 8


async def test_a_worker_with_no_work_request_out_heartbeats_at_every_check() -> None:
    # All its room used (running and prefetched): stop and drain orders reach it only on a heartbeat's
    # answer, so none is skipped however fresh its lease.
    beats = await beats_in(CountingLink(age=0.05), interval=0.05, timeout=5.0, checks=10, polling=False)
    assert beats >= 8
