"""What the web handlers call, with every task run eagerly."""

from __future__ import annotations

from unittest import mock

import pytest
from shop.orders import month_end, place_order, reprint_invoice

from fastworker.client import hooks

pytestmark = pytest.mark.usefixtures("fastworker_eager")


async def test_an_order_is_totalled_charged_and_receipted() -> None:
    handle = await place_order(42, [("tea", 320), ("cake", 415)], "ada@example.com")
    assert await handle.result() == "receipt ch_42_882 sent to ada@example.com"


async def test_month_end_renders_every_invoice_in_order() -> None:
    assert await (await month_end([1, 2, 3])).result() == ["invoices/1.pdf", "invoices/2.pdf", "invoices/3.pdf"]


async def test_a_reprint_jumps_to_the_urgent_queue() -> None:
    sent = hooks.on_submit(mock.Mock())
    try:
        assert await (await reprint_invoice(5)).result() == "invoices/5.pdf"
    finally:
        hooks.remove(sent)
    assert sent.call_args.args[0].options.queue == "urgent"
