"""Integration tests: a real control plane and subworker for ``invoicing.tasks`` (started once per session)."""

from __future__ import annotations

from decimal import Decimal

from invoicing.billing import bill
from invoicing.tasks import invoice_total

from fastworker.client import TaskState


async def test_bill_runs_on_the_worker(fastworker_worker, fastworker_client):
    handle = await bill("ada@example.com", [("tea", Decimal("3.20")), ("cake", Decimal("4.15"))])
    assert await handle.result(timeout=30) == "invoice of 8.82 sent to ada@example.com"
    info = await handle.status()
    assert info.state is TaskState.SUCCESS and info.worker == fastworker_worker.worker_id


async def test_submitting_by_name_works_without_the_task_module(fastworker_worker, fastworker_client):
    total = await fastworker_client.submit("invoicing.total", [("x", Decimal("1.00"))], vat_rate=0, timeout=30)
    assert total == Decimal("1.00")


def test_the_sync_client_sees_the_same_control_plane(fastworker_worker, fastworker_sync_client):
    assert fastworker_sync_client.submit("invoicing.total", [("x", Decimal("5"))], timeout=30) == Decimal("6.00")
    assert [w["worker_id"] for w in fastworker_sync_client.workers()] == [fastworker_worker.worker_id]
    assert invoice_total.name in {t["name"] for t in fastworker_sync_client.tasks()}
