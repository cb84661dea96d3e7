"""Unit tests: tasks run in this process when submitted (``fastworker_eager``), no sockets, no processes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from invoicing.billing import bill
from invoicing.tasks import invoice_total

from fastworker.client import TaskFailed, TaskState


async def test_bill_computes_the_total_and_queues_the_email(fastworker_eager):
    handle = await bill("ada@example.com", [("tea", Decimal("3.20")), ("cake", Decimal("4.15"))])
    assert await handle.result() == "invoice of 8.82 sent to ada@example.com"
    assert [info.name for info in fastworker_eager.history] == ["invoicing.total", "invoicing.send"]


async def test_a_customer_without_an_address_fails_after_its_retries(fastworker_eager):
    handle = await bill("no address", [("tea", Decimal("1.00"))])
    with pytest.raises(TaskFailed, match="cannot send an invoice"):
        await handle.result()
    info = await handle.status()
    assert info.state is TaskState.FAILURE and info.attempts == 3  # 1 + retries=2


def test_a_task_function_is_still_a_plain_function():
    assert invoice_total([("a", Decimal("10"))], vat_rate=Decimal("0")) == Decimal("10.00")
