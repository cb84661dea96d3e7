"""The invoicing tasks a worker runs."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from fastworker.client import task


@task(name="invoicing.total")
def invoice_total(lines: list[tuple[str, Decimal]], vat_rate: Decimal = Decimal("0.20")) -> Decimal:
    """The invoice total including VAT, rounded to cents."""
    net = sum((amount for _, amount in lines), Decimal("0"))
    return (net * (1 + vat_rate)).quantize(Decimal("0.01"))


@task(name="invoicing.send", priority="high", retries=2, retry_backoff=0.1)
async def send_invoice(customer: str, total: Decimal) -> str:
    """Pretend to email the invoice; refuses a customer without an address."""
    await asyncio.sleep(0.01)
    if "@" not in customer:
        raise ValueError(f"cannot send an invoice to {customer!r}")
    return f"invoice of {total} sent to {customer}"
