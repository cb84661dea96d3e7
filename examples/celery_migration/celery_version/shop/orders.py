"""What the web handlers call: queue the work of an order and return at once."""

from __future__ import annotations

from celery import chain, group
from celery.result import AsyncResult, GroupResult

from shop.tasks import charge_card, invoice_total, render_invoice, send_receipt


def place_order(order_id: int, lines: list[tuple[str, int]], email: str) -> AsyncResult:
    """Total, charge, then email the receipt, one after the other; the result is the receipt's."""
    workflow = chain(invoice_total.s(lines), charge_card.s(order_id), send_receipt.s(email))
    return workflow.apply_async()


def reprint_invoice(order_id: int) -> AsyncResult:
    """A customer is waiting at the desk: render on the urgent queue, ahead of the reports."""
    return render_invoice.apply_async((order_id,), queue="urgent")


def month_end(order_ids: list[int]) -> GroupResult:
    """Render every invoice of the month in parallel; the result lists their paths in order."""
    return group(render_invoice.s(order_id) for order_id in order_ids).apply_async()
