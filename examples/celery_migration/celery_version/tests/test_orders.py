"""What the web handlers call, with every task run eagerly."""

from __future__ import annotations

from unittest import mock

from shop.orders import month_end, place_order, reprint_invoice
from shop.tasks import render_invoice


def test_an_order_is_totalled_charged_and_receipted() -> None:
    result = place_order(42, [("tea", 320), ("cake", 415)], "ada@example.com")
    assert result.get() == "receipt ch_42_882 sent to ada@example.com"


def test_month_end_renders_every_invoice_in_order() -> None:
    assert month_end([1, 2, 3]).get() == ["invoices/1.pdf", "invoices/2.pdf", "invoices/3.pdf"]


def test_a_reprint_jumps_to_the_urgent_queue() -> None:
    with mock.patch.object(render_invoice, "apply_async", wraps=render_invoice.apply_async) as sent:
        assert reprint_invoice(5).get() == "invoices/5.pdf"
    assert sent.call_args.kwargs["queue"] == "urgent"
