"""The shop's background tasks."""

from __future__ import annotations

import logging

from fastworker.client import Retry, current_task, task
from shop import audit, services  # noqa: F401  (audit registers the hooks wherever the tasks load)

logger = logging.getLogger(__name__)


@task(name="shop.invoice_total")
def invoice_total(lines: list[tuple[str, int]]) -> int:
    """An order's total in cents, VAT (20%) included."""
    net = sum(cents for _, cents in lines)
    return net + round(net * 0.2)


@task(name="shop.charge_card", retries=3, retry_on=(Retry,))  # only Retry retries, as only self.retry() in Celery
def charge_card(total_cents: int, order_id: int) -> str:
    """Charge the order; a busy gateway is retried with a growing delay. Returns the charge id."""
    ctx = current_task()
    logger.info("charging order %s: %s cents (attempt %d)", order_id, total_cents, ctx.attempt)
    try:
        # The task id is the same on every attempt: the gateway charges a key only once.
        return services.charge(order_id, total_cents, idempotency_key=ctx.id)
    except services.GatewayBusy as exc:
        raise Retry(delay=2 ** (ctx.attempt - 1)) from exc


@task(
    name="shop.send_receipt",
    retry_on=(ConnectionError,),
    retries=4,
    retry_backoff=1.0,
    retry_backoff_max=60,
)
def send_receipt(charge_id: str, email: str) -> str:
    """Email the receipt of a charge; retried while the mail server is unreachable."""
    services.send_email(email, f"Your receipt {charge_id}")
    return f"receipt {charge_id} sent to {email}"


@task(name="shop.render_invoice", queue="reports", result_ttl=600)
def render_invoice(order_id: int) -> str:
    """Render an invoice PDF (routed to the reports queue). Returns its path."""
    path = services.render_pdf(order_id)
    logger.info("invoice of order %s rendered to %s", order_id, path)
    return path


@task(name="shop.daily_sales_report", queue="reports", result_ttl=600, cron="0 6 * * *")
def daily_sales_report() -> str:
    """Yesterday's sales, every morning at six (UTC)."""
    logger.info("building the daily sales report")
    return services.render_pdf(0)
