"""A real subworker's ``--health-address``: /healthz from its start until it stops, and a port in use.

Uses the ``start_cp_for_workers`` and ``start_worker`` fixtures of ``test_workers.py`` (conftest).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest

from fastworker.controlplane.testing import HarnessError


def probed_worker(start_cp_for_workers, start_worker, worker_id: str):  # type: ignore[no-untyped-def]
    """A control plane and a worker serving --health-address on a free port: (control plane, worker, base URL)."""
    control_plane = start_cp_for_workers()
    worker = start_worker(control_plane, worker_id, "--health-address", "127.0.0.1:0", concurrency=1)
    found = re.search(r"health on (http://127\.0\.0\.1:\d+)/healthz", worker.log())
    assert found, worker.log()
    return control_plane, worker, found.group(1)


async def test_a_worker_serves_healthz_while_it_runs_and_releases_the_port_when_it_stops(
    start_cp_for_workers, start_worker, http_get
):
    _, worker, base = probed_worker(start_cp_for_workers, start_worker, "probed")
    url = base + "/healthz"
    assert await asyncio.to_thread(http_get, url) == (200, b"ok\n")
    assert await asyncio.to_thread(http_get, base + "/readyz") == (200, b"ok\n")  # registered

    worker.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.process.wait, 30) == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(http_get, url)


async def test_a_worker_whose_control_plane_is_gone_reads_not_ready_once_its_lease_lapsed(
    start_cp_for_workers, start_worker, http_get
):
    control_plane, _, base = probed_worker(start_cp_for_workers, start_worker, "orphan")
    ready = base + "/readyz"
    assert await asyncio.to_thread(http_get, ready) == (200, b"ok\n")

    os.kill(control_plane.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15  # its fence: 3.5 s after the last answer with the default 5-s timeout
    while (answer := await asyncio.to_thread(http_get, ready))[0] == 200:
        assert time.monotonic() < deadline, "still ready 15 s after its control plane died"
        await asyncio.sleep(0.2)
    assert answer[0] == 503 and b"no answer from the control plane" in answer[1], answer
    assert await asyncio.to_thread(http_get, base + "/healthz") == (200, b"ok\n")  # alive all the same


async def test_a_worker_reads_not_ready_as_soon_as_its_control_plane_announces_its_shutdown(
    start_cp_for_workers, start_worker, http_get, make_client
):
    control_plane, _, base = probed_worker(start_cp_for_workers, start_worker, "announced")
    ready = base + "/readyz"
    client = make_client(control_plane)
    await client.delay("fwtests_worker.sleep_for", 6.0)  # keeps the control plane draining
    await asyncio.sleep(0.5)

    control_plane.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    while (answer := await asyncio.to_thread(http_get, ready))[0] == 200:
        assert time.monotonic() - started < 3.0, "still ready 3 s after its control plane announced its shutdown"
        await asyncio.sleep(0.1)
    assert answer[0] == 503 and b"announced its shutdown" in answer[1], answer


async def test_a_health_address_in_use_stops_the_worker_at_start_naming_it(start_cp_for_workers, start_worker):
    control_plane = start_cp_for_workers()
    first = start_worker(control_plane, "first", "--health-address", "127.0.0.1:0", concurrency=1)
    found = re.search(r"health on http://(127\.0\.0\.1:\d+)/healthz", first.log())
    assert found, first.log()
    taken = found.group(1)
    with pytest.raises(HarnessError) as refused:
        start_worker(control_plane, "second", "--health-address", taken, concurrency=1, ready_timeout=30)
    assert "daemon exited with 1" in str(refused.value)
    assert f"cannot serve --health-address {taken}" in str(refused.value)


async def test_an_async_task_that_blocks_the_worker_loop_is_named_in_the_worker_log(
    start_cp_for_workers, start_worker, make_client
):
    control_plane = start_cp_for_workers()
    worker = start_worker(control_plane, "blocked", concurrency=1)
    client = make_client(control_plane)
    assert await client.submit("fwtests_worker.block_loop", 3.0, timeout=60) == "blocked"
    resumed = r"the worker's event loop runs again, after \d+\.\d s blocked"
    async with asyncio.timeout(10):  # logged at the watcher's next check, soon after the result
        while not re.search(resumed, worker.log()):
            await asyncio.sleep(0.05)
    log = worker.log()
    assert re.search(r"the worker's event loop has not run for \d+\.\d s", log), log
    assert "fwtests_worker_tasks.py" in log and "in block_loop" in log
