"""Application code that submits tasks: what the tests below exercise, eagerly or against real processes."""

from __future__ import annotations

from decimal import Decimal

from fastworker.client import TaskHandle
from invoicing.tasks import invoice_total, send_invoice


async def bill(customer: str, lines: list[tuple[str, Decimal]]) -> TaskHandle[str]:
    """Compute the total (waiting for it), then queue the email; returns the email task's handle."""
    total = await invoice_total.with_options(timeout=30).submit(lines)
    return await send_invoice.delay(customer, total)
