"""The shop's background tasks."""

from __future__ import annotations

from celery import Task
from celery.utils.log import get_task_logger

from shop import services
from shop.celery_app import app

logger = get_task_logger(__name__)


@app.task(name="shop.invoice_total")
def invoice_total(lines: list[tuple[str, int]]) -> int:
    """An order's total in cents, VAT (20%) included."""
    net = sum(cents for _, cents in lines)
    return net + round(net * 0.2)


@app.task(bind=True, name="shop.charge_card", max_retries=3)
def charge_card(self: Task, total_cents: int, order_id: int) -> str:
    """Charge the order; a busy gateway is retried with a growing delay. Returns the charge id."""
    logger.info("charging order %s: %s cents (attempt %d)", order_id, total_cents, self.request.retries + 1)
    try:
        # The task id is the same on every attempt: the gateway charges a key only once.
        return services.charge(order_id, total_cents, idempotency_key=self.request.id)
    except services.GatewayBusy as exc:
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc


@app.task(
    name="shop.send_receipt",
    autoretry_for=(ConnectionError,),
    max_retries=4,
    retry_backoff=True,
    retry_backoff_max=60,
)
def send_receipt(charge_id: str, email: str) -> str:
    """Email the receipt of a charge; retried while the mail server is unreachable."""
    services.send_email(email, f"Your receipt {charge_id}")
    return f"receipt {charge_id} sent to {email}"


@app.task(name="shop.render_invoice")
def render_invoice(order_id: int) -> str:
    """Render an invoice PDF (routed to the reports queue). Returns its path."""
    path = services.render_pdf(order_id)
    logger.info("invoice of order %s rendered to %s", order_id, path)
    return path


@app.task(name="shop.daily_sales_report")
def daily_sales_report() -> str:
    """Yesterday's sales, every morning at six (UTC)."""
    logger.info("building the daily sales report")
    return services.render_pdf(0)
