"""What the web handlers call: queue the work of an order and return at once."""

from __future__ import annotations

from fastworker.client import TaskHandle, WorkflowHandle, chain, group
from shop.tasks import charge_card, invoice_total, render_invoice, send_receipt


async def place_order(order_id: int, lines: list[tuple[str, int]], email: str) -> WorkflowHandle:
    """Total, charge, then email the receipt, one after the other; the result is the receipt's."""
    workflow = chain(invoice_total.s(lines), charge_card.s(order_id), send_receipt.s(email))
    return await workflow.delay()


async def reprint_invoice(order_id: int) -> TaskHandle[str]:
    """A customer is waiting at the desk: render on the urgent queue, ahead of the reports."""
    return await render_invoice.with_options(queue="urgent").delay(order_id)


async def month_end(order_ids: list[int]) -> WorkflowHandle:
    """Render every invoice of the month in parallel; the result lists their paths in order."""
    return await group(render_invoice.s(order_id) for order_id in order_ids).delay()
