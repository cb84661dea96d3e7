"""The same shop on real processes: a control plane serving ``default`` and a worker serving ``reports,urgent``."""

from __future__ import annotations

from shop.orders import month_end, place_order, reprint_invoice
from shop.tasks import render_invoice

from fastworker.client import Client, SyncClient, TaskState, use_sync_client
from fastworker.controlplane.testing import RunningWorker


async def test_an_order_runs_on_the_control_plane(fastworker_worker: RunningWorker, fastworker_client: Client) -> None:
    handle = await place_order(43, [("tea", 320), ("cake", 415)], "ada@example.com")
    assert await handle.result(timeout=30) == "receipt ch_43_882 sent to ada@example.com"
    steps = (await handle.status()).steps
    assert [(step.queue, step.worker) for step in steps] == [("default", "controlplane")] * 3


async def test_reports_run_only_on_the_reports_worker(
    fastworker_worker: RunningWorker, fastworker_client: Client
) -> None:
    paths = await (await month_end([11, 12])).result(timeout=30)
    assert paths == ["invoices/11.pdf", "invoices/12.pdf"]
    urgent = await reprint_invoice(13)
    info = await urgent.wait(timeout=30)
    assert (info.state, info.queue, info.worker) == (TaskState.SUCCESS, "urgent", fastworker_worker.worker_id)


def test_a_script_reprints_with_the_sync_client(
    fastworker_worker: RunningWorker, fastworker_sync_client: SyncClient
) -> None:
    with use_sync_client(fastworker_sync_client):
        handle = render_invoice.with_options(queue="urgent").delay_sync(14)
        assert handle.result(timeout=30) == "invoices/14.pdf"
        assert handle.status().worker == fastworker_worker.worker_id
